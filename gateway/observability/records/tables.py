"""Inference tables: records as Parquet files on a folder or in S3, hive-partitioned, for
DuckDB, pandas, Spark or any engine that reads Parquet (``GATEWAY_RECORDS_SINK=parquet+file:///dir``
or ``parquet+s3://bucket/prefix``), or the same files committed to Delta Lake tables
(``delta+file:///dir``, ``delta+s3://bucket/prefix``: ``delta.py``).

Layout under the root (a contract: the feedback and evaluation code, and the docs' queries,
read it)::

    predictions/model=<name>/version=<v>/date=<YYYY-MM-DD>/part-<utc time>-<replica>-<seq>.parquet
    labels/date=<YYYY-MM-DD>/part-<utc time>-<replica>-<seq>.parquet

one row a request (``rows.py`` has the columns), or a label. ``<utc time>`` is when the file
was begun (``20261125T201500Z``), ``<replica>`` GATEWAY_REPLICA_ID (characters other than
letters, digits, ``.`` and ``_`` as ``_``), ``<seq>`` the writing process's id and a counter
(``4242.000017``): unique across the processes of a replica and the replicas of a fleet.

A reader never sees a file half-written. The writer (the recorder's one thread) keeps a file
open per partition under a hidden name (``.part-....parquet.tmp``: engines skip names that
begin with ``.``), adds a row group when enough rows wait, and *rolls* it when it reaches
``GATEWAY_RECORDS_TABLE_ROLL_MB`` or has been open ``GATEWAY_RECORDS_TABLE_ROLL_SECONDS``:
closes it (Parquet's footer written) and then, on a folder, renames it into place; to S3, it
uploads it in one piece, which S3 shows only once complete (a PUT, or a multipart upload past
8 MiB, completed), with the artifact store's credentials (``AWS_*``,
``MLFLOW_S3_ENDPOINT_URL``, as MLflow's client and registry_sync take them), and deletes the
local copy. An upload that fails keeps the file for the next roll's try, within the queue's
byte bound (GATEWAY_RECORDS_QUEUE_MB): past it the oldest kept file is deleted and its rows
counted as dropped (``sink_error``); the failure makes the recorder back off, so the records
offered meanwhile queue up to the bound and are then dropped and counted (``queue_full``), as
with any sink that fails. At shutdown every open file is rolled.

Labels: ``Recorder.offer_labels(labels)`` (``record.LabelRecord``: request id, model, version,
the label as any JSON value, when it was received) queues them with the records; they are
written here the same way. The feedback code calls it off the request path.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import pyarrow as pa
import pyarrow.parquet as pq

from gateway.observability.records.record import InferenceRecord, LabelRecord, SinkFailed
from gateway.observability.records.rows import (
    LABEL_SCHEMA,
    PREDICTION_FIELDS,
    Partition,
    Partitions,
    TypedColumns,
    day_of,
    label_partition,
    label_values,
    prediction_values,
    typed_columns,
)

log = logging.getLogger("gateway.records")

# A row group is added once this many rows (or bytes of bodies) wait for one partition: fewer,
# larger row groups read faster, and what waits is bounded.
ROW_GROUP_ROWS = 10_000
ROW_GROUP_BYTES = 4 * 1024 * 1024
# Rows waiting for a row group are made into an Arrow batch this many at a time: as Python
# tuples they are objects the cyclic GC tracks (thousands of them alive made the young
# collections run, each walking them), and a batch made of a few dozen rows paid the
# ``pa.array`` calls' fixed cost, a column each, for every write.
BATCH_ROWS = 1_000
_COMPRESSION = "zstd"


class TableSinkFailed(Exception):
    """A file that did not land (an upload that failed); ``lost`` rows were given up for good."""

    def __init__(self, message: str, *, lost: int = 0) -> None:
        super().__init__(message)
        self.lost = lost


class Destination(Protocol):
    """Where a finished file goes: ``publish`` makes it visible under ``name`` (a path under
    the root, with ``/``) or raises; the local file is the destination's afterwards."""

    shown: str
    kind: str  # the sink's label in gateway_records_written_total: parquet or delta

    def spool(self, partition: Partition) -> Path:
        """The folder where a file of ``partition`` is written before it is published."""
        ...

    def publish(self, local: Path, name: str) -> None: ...

    def close(self) -> None: ...


class FolderDestination:
    """A local (or mounted) folder: files are written beside their final name, hidden, and
    renamed into place (atomic on one filesystem)."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.shown = str(root)
        self.kind = "parquet"

    def spool(self, partition: Partition) -> Path:
        folder = self.root.joinpath(*partition.segments)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def publish(self, local: Path, name: str) -> None:
        os.replace(local, self.root / name)

    def close(self) -> None:
        pass


class S3Destination:
    """``s3://bucket/prefix``: files are written in a local spool folder and uploaded whole
    (boto3's ``upload_file``: one PUT, or a multipart upload completed only once every part
    is in), then deleted here."""

    def __init__(self, bucket: str, prefix: str, *, timeout: float = 10.0) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.shown = f"s3://{bucket}/{self.prefix}"
        self.kind = "parquet"
        # One try each: the recorder's backoff is the retry, and a dead endpoint must fail fast.
        config = Config(connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 1})
        self._client = boto3.client("s3", endpoint_url=os.environ.get("MLFLOW_S3_ENDPOINT_URL") or None, config=config)
        self._spool = Path(tempfile.mkdtemp(prefix="gateway-tables-"))

    def spool(self, partition: Partition) -> Path:
        return self._spool

    def publish(self, local: Path, name: str) -> None:
        key = f"{self.prefix}/{name}" if self.prefix else name
        self._client.upload_file(str(local), self.bucket, key)
        local.unlink(missing_ok=True)

    def close(self) -> None:
        shutil.rmtree(self._spool, ignore_errors=True)
        self._client.close()


TABLE_URLS = "parquet+file:///dir, parquet+s3://bucket/prefix, delta+file:///dir or delta+s3://bucket/prefix"


def destination_for(url: str, *, replica: str = "") -> Destination:
    """``parquet+`` or ``delta+`` and ``file:///dir`` or ``s3://bucket/prefix``; raises
    ValueError saying why not."""
    parts = urlsplit(url)
    form, _, where = parts.scheme.lower().partition("+")
    if form not in ("parquet", "delta") or where not in ("file", "s3"):
        raise ValueError(f"must be {TABLE_URLS}")
    if where == "file" and (parts.netloc not in ("", "localhost") or not parts.path.startswith("/")):
        raise ValueError(f"must be {form}+file:///absolute/directory")
    if where == "s3" and not parts.netloc:
        raise ValueError(f"names no bucket ({form}+s3://bucket/prefix)")
    if form == "delta":
        try:
            from gateway.observability.records.delta import DeltaDestination
        except ImportError as exc:  # deltalake is the tables-delta extra's
            raise ValueError(
                f"needs the deltalake package: pip install 'registry-gateway[tables-delta]' ({exc})"
            ) from exc
        root = f"file://{unquote(parts.path)}" if where == "file" else f"s3://{parts.netloc}{parts.path}"
        return DeltaDestination(root, app_id=f"registry-gateway:{replica}:{uuid.uuid4().hex}")
    if where == "file":
        return FolderDestination(Path(unquote(parts.path)))
    return S3Destination(parts.netloc, unquote(parts.path))


@dataclass
class _OpenFile:
    """A partition's file being written: its rows not yet in a row group, and its size so far."""

    partition: Partition
    schema: pa.Schema
    local: Path
    name: str  # its path under the root once published
    opened: float  # time.monotonic()
    writer: pq.ParquetWriter | None = None
    # Rows not yet in a row group: the latest as tuples (in the schema's order), up to
    # BATCH_ROWS, the others already made into Arrow batches. Rows wait for a row group for
    # seconds; as Python objects they were what every young collection of the cyclic GC had to
    # walk (the writer's were most of what survived one), as Arrow buffers nothing.
    waiting: list[tuple[Any, ...]] = field(default_factory=list)
    batches: list[pa.RecordBatch] = field(default_factory=list)
    waiting_rows: int = 0  # in batches and waiting
    waiting_bytes: int = 0
    rows: int = 0  # rows in it, row groups and waiting
    size: int = 0  # bytes of its row groups so far


@dataclass
class _Kept:
    """A closed file whose upload failed, kept for another try."""

    local: Path
    name: str
    rows: int
    size: int


@dataclass(slots=True)
class Entry:
    """A row (its values in the schema's order) and where it goes. One a record: not frozen,
    whose ``__init__`` sets each field through ``object.__setattr__``."""

    partition: Partition
    row: tuple[Any, ...]
    size: int  # its bodies' bytes: what it weighs in a row group
    schema: pa.Schema


class TableSink:
    """Rows into Parquet files, a file per partition at a time (see the module's doc). Called
    by the recorder's one writer thread only."""

    tables = True

    def __init__(
        self,
        destination: Destination,
        *,
        replica: str,
        redact: Iterable[str],
        roll_bytes: int,
        roll_seconds: float,
        keep_bytes: int,
    ) -> None:
        self.destination = destination
        self.kind = destination.kind
        self.replica = replica
        self._tag = re.sub(r"[^A-Za-z0-9._]", "_", replica)
        self._redact = frozenset(redact)
        self._roll_bytes = roll_bytes
        self._roll_seconds = roll_seconds
        self._keep_bytes = keep_bytes
        self._open: dict[Partition, _OpenFile] = {}
        self._kept: list[_Kept] = []
        self._seq = 0
        self._schemas: dict[int, tuple[Any, pa.Schema, TypedColumns]] = {}
        self._partitions = Partitions()

    # --- what the recorder calls ---

    def entry(self, item: InferenceRecord | LabelRecord, *, source: str, redact: frozenset[str]) -> Entry:
        """The row of a record or a label (in the writer thread)."""
        if isinstance(item, LabelRecord):
            row = label_values(item, replica=self.replica)
            return Entry(label_partition(day_of(item.received_at)), row, len(row[3]), LABEL_SCHEMA)
        schema, columns = self._schema(item.signature)
        names = self._redact | redact if redact else self._redact
        row = prediction_values(item, redact=names, columns=columns, replica=self.replica)
        partition = self._partitions.prediction(item.model, str(item.version), item.time)
        return Entry(partition, row, len(item.request) + len(item.response) + 256, schema)

    def write(self, entries: list[Entry]) -> None:
        """Add the rows to their partitions' files; roll those due. Raises SinkFailed when a
        roll's file did not land (every row of ``entries`` is in a file by then, so all count as
        written; ``lost``: rows of earlier files given up for good)."""
        try:
            self._write(entries)
        except TableSinkFailed as exc:
            raise SinkFailed(str(exc), written=len(entries), lost=exc.lost) from exc

    def tick(self) -> None:
        """Roll the files that are due (by size or age), and retry kept uploads; SinkFailed as
        :meth:`write`."""
        try:
            self._tick()
        except TableSinkFailed as exc:
            raise SinkFailed(str(exc), lost=exc.lost) from exc

    def _write(self, entries: list[Entry]) -> None:
        for entry in entries:
            current = self._open.get(entry.partition)
            if current is not None and current.schema is not entry.schema and current.schema != entry.schema:
                # a re-created version, say
                self._roll(current)
                current = None
            if current is None:
                current = self._open[entry.partition] = self._begin(entry.partition, entry.schema)
            current.waiting.append(entry.row)
            current.waiting_rows += 1
            current.waiting_bytes += entry.size
            current.rows += 1
            if current.waiting_rows >= ROW_GROUP_ROWS or current.waiting_bytes >= ROW_GROUP_BYTES:
                self._add_row_group(current)
        for current in list(self._open.values()):
            if len(current.waiting) >= BATCH_ROWS:
                self._batched(current)
        self._tick()

    def _tick(self) -> None:
        now = time.monotonic()
        due = [
            f
            for f in self._open.values()
            if now - f.opened >= self._roll_seconds or f.size + f.waiting_bytes >= self._roll_bytes
        ]
        failure: TableSinkFailed | None = None
        for current in due:
            try:
                self._roll(current)
            except TableSinkFailed as exc:
                failure = _merged(failure, exc)
        if self._kept and not due:
            try:
                self._retry_kept()
            except TableSinkFailed as exc:
                failure = _merged(failure, exc)
        if failure is not None:
            raise failure

    def close(self) -> None:
        """Roll every open file (a last try for kept ones), then let go of the destination."""
        try:
            for current in list(self._open.values()):
                try:
                    self._roll(current)
                except TableSinkFailed as exc:
                    log.warning("inference tables: at shutdown, %s", exc)
            if self._kept:
                try:
                    self._retry_kept()
                except TableSinkFailed as exc:
                    log.warning("inference tables: at shutdown, %s", exc)
        finally:
            self.destination.close()

    @property
    def open_partitions(self) -> int:
        return len(self._open)

    # --- files ---

    def _schema(self, signature: Any) -> tuple[pa.Schema, TypedColumns]:
        cached = self._schemas.get(id(signature))
        if cached is not None and cached[0] is signature:
            return cached[1], cached[2]
        columns = typed_columns(signature)
        schema = pa.schema([*PREDICTION_FIELDS, *columns.fields()])
        if len(self._schemas) > 1000:
            self._schemas.clear()
        self._schemas[id(signature)] = (signature, schema, columns)
        return schema, columns

    def _begin(self, partition: Partition, schema: pa.Schema) -> _OpenFile:
        self._seq += 1
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        base = f"part-{stamp}-{self._tag}-{os.getpid()}.{self._seq:06d}.parquet"
        folder = self.destination.spool(partition)
        local = folder / f".{base}.tmp"
        name = "/".join((*partition.segments, base))
        return _OpenFile(partition, schema, local, name, time.monotonic())

    def _batched(self, current: _OpenFile) -> None:
        """The rows waiting as tuples into an Arrow batch; rows Arrow refuses outright (not a
        typed column: those go null) are given up, not kept to fail every later write."""
        if not current.waiting:
            return
        try:
            current.batches.append(_batch(current.waiting, current.schema))
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError, ValueError) as exc:
            lost = len(current.waiting)
            current.rows -= lost
            current.waiting_rows -= lost
            raise TableSinkFailed(f"{lost} rows Arrow could not take ({exc})", lost=lost) from exc
        finally:
            current.waiting.clear()

    def _add_row_group(self, current: _OpenFile) -> None:
        self._batched(current)
        if not current.batches:
            return
        table = pa.Table.from_batches(current.batches, schema=current.schema)
        try:
            if current.writer is None:
                current.writer = pq.ParquetWriter(current.local, current.schema, compression=_COMPRESSION)
            current.writer.write_table(table)
        except OSError as exc:
            self._discard(current)
            raise TableSinkFailed(f"{self.destination.shown}: {exc}", lost=current.rows) from exc
        current.batches.clear()
        current.waiting_rows = 0
        current.waiting_bytes = 0
        current.size = current.local.stat().st_size

    def _roll(self, current: _OpenFile) -> None:
        """Close the file and publish it; on failure keep it (S3) within the bound."""
        self._open.pop(current.partition, None)
        self._add_row_group(current)
        if current.writer is None:
            return
        try:
            current.writer.close()
        except OSError as exc:
            self._discard(current)
            raise TableSinkFailed(f"{self.destination.shown}: {exc}", lost=current.rows) from exc
        size = current.local.stat().st_size
        try:
            self.destination.publish(current.local, current.name)
        except Exception as exc:
            lost = self._keep(_Kept(current.local, current.name, current.rows, size))
            raise TableSinkFailed(
                f"{self.destination.shown}: {current.name} not written ({type(exc).__name__}: {exc})", lost=lost
            ) from exc

    def _keep(self, kept: _Kept) -> int:
        """Keep a file for another try; drop the oldest past the bound. Rows given up."""
        self._kept.append(kept)
        lost = 0
        while self._kept and sum(k.size for k in self._kept) > self._keep_bytes:
            oldest = self._kept.pop(0)
            oldest.local.unlink(missing_ok=True)
            lost += oldest.rows
        return lost

    def _retry_kept(self) -> None:
        while self._kept:
            kept = self._kept[0]
            try:
                self.destination.publish(kept.local, kept.name)
            except Exception as exc:
                raise TableSinkFailed(f"{self.destination.shown}: {kept.name} not written again ({exc})") from exc
            self._kept.pop(0)

    def _discard(self, current: _OpenFile) -> None:
        self._open.pop(current.partition, None)
        if current.writer is not None:
            try:
                current.writer.close()
            except Exception:
                pass
        current.local.unlink(missing_ok=True)


def _batch(rows: list[tuple[Any, ...]], schema: pa.Schema) -> pa.RecordBatch:
    """Rows as an Arrow batch, made a column at a time (one ``pa.array`` of a column's values,
    not a lookup by name per row and column). A typed column whose values pass rows.py's plain
    checks and not Arrow's (an integer past float32's exact range, say) goes null for the
    batch (up to BATCH_ROWS rows); its JSON text keeps the values."""
    typed_from = len(PREDICTION_FIELDS) if schema is not LABEL_SCHEMA else len(schema)
    arrays = []
    for position, values in enumerate(zip(*rows, strict=True)):
        kind = schema.field(position).type
        try:
            arrays.append(pa.array(values, type=kind))
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError, ValueError):
            if position < typed_from:
                raise
            arrays.append(pa.nulls(len(values), kind))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _merged(first: TableSinkFailed | None, second: TableSinkFailed) -> TableSinkFailed:
    if first is None:
        return second
    return TableSinkFailed(str(first), lost=first.lost + second.lost)
