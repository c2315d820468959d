"""Inference tables as Delta Lake tables (``GATEWAY_RECORDS_SINK=delta+file:///dir`` or
``delta+s3://bucket/prefix``), through the ``deltalake`` package (delta-rs: no JVM; the
``tables-delta`` extra).

The rows, the partitions and the files are the Parquet sink's (``tables.py``: a file per
partition, rolled by size and age): this is only where a rolled file goes. Two tables under the
root, ``predictions`` (partitioned by ``model``, ``version``, ``date``) and ``labels`` (by
``date``); each rolled file is appended as one commit, so a reader of the table sees a file's
rows all at once or not at all, whatever it reads with. ``date`` is a column of its own (a
Delta partition is a column); ``model`` and ``version`` are the rows' own. A signature's typed
columns are added to ``predictions`` as they come (``schema_mode="merge"``).

Exactly once: each commit carries an application transaction (Delta's ``txn`` action: an id
of this sink's own and a number that goes up with each file it publishes), so the table tells
whether a commit whose answer was lost (an error after it landed) is there: its number is the
table's latest for this id, where it would otherwise be the one before (this sink's commits
are one at a time). A failed publish is resolved so before anything else goes to that table,
and the file, published again, is not appended twice.

Writers: any number, one table. Appends never conflict in Delta's optimistic protocol; what
must be atomic is the creation of each commit file, which delta-rs makes so with a
put-if-absent on S3 (conditional writes, which AWS S3 has had since 2024; delta-rs 1.x dropped
its DynamoDB lock for them) and a no-replace rename on a filesystem. So every replica of a fleet
appends to the same tables. ``AWS_S3_ALLOW_UNSAFE_RENAME=true`` is for a store without
conditional writes and one writer only: never set it for a fleet (two writers could each
write the same version, and one commit would be lost).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.parquet as pq
from deltalake.exceptions import CommitFailedError

from gateway.observability.records.rows import Partition

# Another writer's schema change (the table made, a signature's columns added) refuses a commit
# that changes the schema too; appends alone never conflict. Tried again at once, this often.
CONFLICT_RETRIES = 5

# Each table's partition columns (the Parquet sink's hive folders).
PARTITIONS = {"predictions": ["model", "version", "date"], "labels": ["date"]}


class DeltaDestination:
    """Rolled files appended to the Delta tables under ``uri`` (``file:///dir`` or
    ``s3://bucket/prefix``), a commit each."""

    kind = "delta"

    def __init__(self, uri: str, *, app_id: str) -> None:
        self.root = uri.rstrip("/")
        self.shown = self.root
        self._app_id = app_id  # unique to this process: its sequence numbers are its own
        self._options = storage_options(self.root)
        self._spool = Path(tempfile.mkdtemp(prefix="gateway-delta-"))
        self._numbers: dict[str, int] = {}  # file -> its transaction number, from its first try
        self._next = 0
        self._unsure: dict[str, tuple[str, int]] = {}  # table -> the file whose commit failed
        self._landed: set[str] = set()  # files whose failed commit was there after all
        if self.root.startswith("file://"):
            Path(unquote(urlparse(self.root).path)).mkdir(parents=True, exist_ok=True)

    def spool(self, partition: Partition) -> Path:
        return self._spool

    def publish(self, local: Path, name: str) -> None:
        table, *folders, _ = name.split("/")
        uri = f"{self.root}/{table}"
        self._resolve(table, uri)
        if name in self._landed:  # its earlier try's commit is in the table
            self._landed.discard(name)
            local.unlink(missing_ok=True)
            return
        number = self._numbers.get(name)
        if number is None:
            number = self._numbers[name] = self._next = self._next + 1
        data = pq.read_table(local)
        day = dict(folder.split("=", 1) for folder in folders)["date"]
        data = data.append_column(
            pa.field("date", pa.date32()), pa.array([dt.date.fromisoformat(day)] * data.num_rows, pa.date32())
        )
        for attempt in range(CONFLICT_RETRIES + 1):
            try:
                self._write(uri, data, partition_by=PARTITIONS[table], number=number)
                break
            except CommitFailedError:  # refused, nothing written: another writer changed the schema
                if attempt == CONFLICT_RETRIES:
                    raise
            except Exception:
                self._unsure[table] = (name, number)
                raise
        del self._numbers[name]
        local.unlink(missing_ok=True)

    def _write(self, uri: str, data: pa.Table, *, partition_by: list[str], number: int) -> None:
        """One commit: the rows appended, with this sink's transaction ``number``."""
        from deltalake import CommitProperties, Transaction, write_deltalake

        write_deltalake(
            uri,
            data,
            mode="append",
            partition_by=partition_by,
            schema_mode="merge",
            storage_options=self._options,
            commit_properties=CommitProperties(app_transactions=[Transaction(self._app_id, number)]),
        )

    def _resolve(self, table: str, uri: str) -> None:
        """Whether the table's last failed commit of this sink landed (raises while the table
        cannot be read: nothing else goes there until it is known)."""
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        unsure = self._unsure.get(table)
        if unsure is None:
            return
        try:
            latest = DeltaTable(uri, storage_options=self._options).transaction_version(self._app_id)
        except TableNotFoundError:
            latest = None
        name, number = unsure
        if latest == number:
            self._landed.add(name)
            self._numbers.pop(name, None)
        del self._unsure[table]

    def close(self) -> None:
        shutil.rmtree(self._spool, ignore_errors=True)


def storage_options(root: str) -> dict[str, str]:
    """delta-rs's options for ``root``: on S3, the artifact store's endpoint
    (``MLFLOW_S3_ENDPOINT_URL``) and region; credentials it reads from ``AWS_*`` itself."""
    if not root.startswith("s3://"):
        return {}
    options = {"AWS_REGION": os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or "us-east-1"}
    endpoint = os.environ.get("MLFLOW_S3_ENDPOINT_URL")
    if endpoint:
        options["AWS_ENDPOINT_URL"] = endpoint
        if endpoint.startswith("http://"):
            options["AWS_ALLOW_HTTP"] = "true"
    return options
