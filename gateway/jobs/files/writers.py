"""Writing a job's output: one part per chunk, under the output folder or S3 prefix, each
made visible whole and at most once per chunk index.

Layout: ``part-000042.<format>`` for chunk 42 (wider past 999,999), so reading the parts in
index order gives the input's rows in input order. A part is written aside first (a hidden
``.part-000042.parquet.<random>.tmp`` beside its name, which readers such as pyarrow, Spark and
DuckDB skip) and then renamed into place with ``os.replace``, atomic on one filesystem; to S3
it is written to a local spool file and uploaded in one piece (boto3's ``upload_file``: a PUT,
or past 8 MiB a multipart upload that S3 shows only once completed), as the inference tables
do. Committing an index again replaces its part, so a chunk redone after a replica died mid-way
never doubles its rows. A replica killed between writing aside and renaming leaves a hidden
``.tmp`` file behind, never a half part.

Formats: Parquet (zstd), CSV (a header line; list and struct values as JSON text), JSON lines
(one object a row, by orjson; a value JSON has no type for, bytes or a decimal, as its text).
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from gateway.jobs.files.errors import InvalidLocation, JobFileError, OutputUnavailable, OutputUnwritable
from gateway.jobs.files.locations import FORMATS, checked_format
from gateway.jobs.files.storage import S3Object, locate, s3_client, s3_failure, uri_of, within

# Local failures that will not go away by waiting: anything else (a full disk, an I/O error)
# is worth the runner's retry.
_PERMANENT = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.EEXIST})
_PART = re.compile(r"part-(\d{6,})\.(parquet|csv|jsonl)\Z")


@dataclass(frozen=True)
class OutputLocation:
    """A job's output folder (``file:///abs/dir`` or an absolute path) or S3 prefix
    (``s3://bucket/prefix``), and the format its parts are written in."""

    uri: str
    format: str

    @classmethod
    def parse(cls, uri: str, format: str, *, roots: Sequence[str] | None = None) -> OutputLocation:
        """The location, its URI normalised; InvalidLocation for a URI or format that cannot be
        one, or a location outside ``roots`` (folders and S3 prefixes; None: anywhere)."""
        if checked_format(format) is None:
            raise InvalidLocation(str(format), f"not a format of job files (one of {', '.join(FORMATS)})")
        where = locate(uri.rstrip("/") if uri.rstrip("/") else uri)
        if isinstance(where, S3Object) and not where.key.strip("/"):
            where = S3Object(where.bucket, "")
        if not within(where, roots):
            raise InvalidLocation(uri, "outside the folders and S3 prefixes jobs may use")
        return cls(uri_of(where).rstrip("/"), format)

    # --- where ---

    def part_name(self, index: int) -> str:
        if index < 0:
            raise ValueError(f"a chunk index is 0 or more, not {index}")
        return f"part-{index:06d}.{self.format}"

    def part_uri(self, index: int) -> str:
        return f"{self.uri}/{self.part_name(index)}"

    def _key(self, name: str) -> str:
        where = locate(self.uri)
        assert isinstance(where, S3Object)
        return f"{where.key.strip('/')}/{name}" if where.key.strip("/") else name

    # --- what the runner calls ---

    def check_writable(self) -> None:
        """Write and delete a hidden probe, so that a job whose output cannot be written is
        refused at submission, not after its first chunk. Raises OutputUnwritable."""
        where = locate(self.uri)
        probe = f".write-check-{uuid.uuid4().hex}"
        try:
            if isinstance(where, Path):
                where.mkdir(parents=True, exist_ok=True)
                (where / probe).write_bytes(b"")
                (where / probe).unlink()
            else:
                client = s3_client()
                client.put_object(Bucket=where.bucket, Key=self._key(probe), Body=b"")
                client.delete_object(Bucket=where.bucket, Key=self._key(probe))
        except Exception as exc:
            raise self._unwritable(exc) from exc

    def commit(self, index: int, table: pa.Table) -> str:
        """Write chunk ``index``'s rows as its part, visible whole, replacing any part of the
        same index; its URI. Raises OutputUnwritable (``transient`` or not)."""
        name = self.part_name(index)
        write = self._writer()
        where = locate(self.uri)
        try:
            if isinstance(where, Path):
                where.mkdir(parents=True, exist_ok=True)
                _replace_whole(where / name, lambda file: write(table, file))
            else:
                _upload_whole(where.bucket, self._key(name), lambda file: write(table, file))
        except JobFileError:
            raise
        except Exception as exc:
            raise self._unwritable(exc) from exc
        return self.part_uri(index)

    def committed(self) -> list[str]:
        """The URIs of the parts visible now, in index order."""
        where = locate(self.uri)
        try:
            if isinstance(where, Path):
                names = [p.name for p in where.iterdir()] if where.is_dir() else []
            else:
                prefix = self._key("")
                pages = (
                    s3_client()
                    .get_paginator("list_objects_v2")
                    .paginate(Bucket=where.bucket, Prefix=prefix, Delimiter="/")
                )
                names = [item["Key"][len(prefix) :] for page in pages for item in page.get("Contents", [])]
        except Exception as exc:
            raise self._unwritable(exc) from exc
        parts = sorted((int(m.group(1)), n) for n in names if (m := _PART.match(n)) and m.group(2) == self.format)
        return [f"{self.uri}/{name}" for _, name in parts]

    # --- how ---

    def _writer(self) -> Callable[[pa.Table, IO[bytes]], None]:
        return {"parquet": _write_parquet, "csv": _write_csv, "jsonl": _write_jsonl}[self.format]

    def _unwritable(self, exc: Exception) -> OutputUnwritable:
        if isinstance(exc, OSError):
            permanent = exc.errno in _PERMANENT or isinstance(exc, FileNotFoundError | PermissionError)
            return self._failure(f"{type(exc).__name__}: {exc.strerror or exc}", transient=not permanent)
        if isinstance(exc, pa.ArrowException):  # the rows cannot be this format: no retry helps
            return self._failure(f"the rows cannot be written as {self.format}: {exc}", transient=False)
        detail, transient = s3_failure(exc)
        return self._failure(detail, transient=bool(transient))

    def _failure(self, detail: str, *, transient: bool) -> OutputUnwritable:
        return OutputUnavailable(self.uri, detail) if transient else OutputUnwritable(self.uri, detail, transient=False)


def _replace_whole(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    aside = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with aside.open("wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())  # the rename must not publish a part whose bytes are not down
        os.replace(aside, path)
    finally:
        aside.unlink(missing_ok=True)


def _upload_whole(bucket: str, key: str, write: Callable[[IO[bytes]], None]) -> None:
    with tempfile.NamedTemporaryFile(prefix="gateway-job-part-", suffix=".tmp") as spool:
        write(spool)
        spool.flush()
        s3_client().upload_file(spool.name, bucket, key)


def _write_parquet(table: pa.Table, file: IO[bytes]) -> None:
    pq.write_table(table, file, compression="zstd")


def _write_csv(table: pa.Table, file: IO[bytes]) -> None:
    columns = [_as_json_text(column) if _nested(column.type) else column for column in table.columns]
    pacsv.write_csv(pa.table(columns, names=table.column_names), file)


def _nested(kind: pa.DataType) -> bool:
    return bool(pa.types.is_nested(kind) or pa.types.is_dictionary(kind) and pa.types.is_nested(kind.value_type))


def _as_json_text(column: pa.ChunkedArray) -> pa.Array:
    return pa.array(
        [None if value is None else orjson.dumps(value, default=str).decode() for value in column.to_pylist()],
        type=pa.string(),
    )


def _write_jsonl(table: pa.Table, file: IO[bytes]) -> None:
    for batch in table.to_batches(max_chunksize=10_000):  # bounded Python objects at a time
        file.write(b"".join(orjson.dumps(row, default=_json_default) + b"\n" for row in batch.to_pylist()))


def _json_default(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
