"""Splitting a job's input files into chunks, the unit a replica claims, reads, scores and
commits.

- Parquet: consecutive row groups, up to about ``target_rows`` rows (or ``target_bytes`` of
  uncompressed data), from the footer alone. A row group is never split: a file written as one
  huge row group is one chunk (pyarrow writes 1 Mi rows a group by default).
- CSV and JSON lines: byte ranges of about ``target_bytes``, each cut at a line start, found by
  reading a few bytes at each cut (never the whole file). The CSV header (the file's first
  line) is no range's; a reader takes the column names from it.

A CSV value holding a newline (a quoted multi-line field) cannot be split on lines: such files
are refused when read (InputUnreadable naming the range), never silently mis-split; write them
as Parquet or JSON lines.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from gateway.jobs.files.errors import InputUnreadable, JobFileError
from gateway.jobs.files.locations import FORMATS, InputFile
from gateway.jobs.files.storage import Located, locate, open_seekable, read_failure, read_range, s3_client

# How much is read at a time around a cut or for a header: one small ranged GET usually finds
# the line's end; a longer line takes more.
_PROBE = 64 * 1024


@dataclass(frozen=True)
class ChunkSpec:
    """A part of one input file. ``rows`` and ``first_row`` (the index of its first row in the
    file) are known from a Parquet footer, None for text, whose rows are counted when read."""

    file: InputFile
    start: int  # parquet: first row group; csv/jsonl: first byte (at a line start)
    stop: int  # parquet: row group after the last; csv/jsonl: byte after the last line
    rows: int | None = None
    first_row: int | None = None

    @property
    def range(self) -> str:
        """The chunk's place in its file, for a reason: ``row groups 3-4``, ``bytes 0-1023``."""
        if self.file.format == "parquet":
            return f"row groups {self.start}-{self.stop - 1}"
        return f"bytes {self.start}-{self.stop - 1}"

    def to_json(self) -> dict[str, object]:
        return {
            "file": self.file.to_json(),
            "start": self.start,
            "stop": self.stop,
            "rows": self.rows,
            "first_row": self.first_row,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> ChunkSpec:
        """The inverse of :meth:`to_json`; ValueError for anything else."""
        try:
            file = data["file"]
            if not isinstance(file, Mapping):
                raise TypeError("file")
            found = InputFile(str(file["uri"]), _integer(file["size"]), str(file["format"]))
            if found.format not in FORMATS:
                raise ValueError(f"format {found.format!r}")
            rows, first_row = data.get("rows"), data.get("first_row")
            return cls(
                found,
                _integer(data["start"]),
                _integer(data["stop"]),
                None if rows is None else _integer(rows),
                None if first_row is None else _integer(first_row),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a chunk: {exc}") from exc


def _integer(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{value!r} is not an integer")
    return value


def plan_chunks(files: list[InputFile], *, target_rows: int, target_bytes: int) -> list[ChunkSpec]:
    """Every file's chunks, files in order, chunks in file order (see the module's doc).
    Raises InputUnreadable (a Parquet footer that is not one, say) or InputNotFound."""
    if target_rows < 1 or target_bytes < 1:
        raise ValueError("target_rows and target_bytes must be at least 1")
    client = s3_client() if any(f.uri.startswith("s3://") for f in files) else None
    chunks: list[ChunkSpec] = []
    for file in files:
        where = locate(file.uri)
        try:
            if file.format == "parquet":
                chunks += _parquet_chunks(file, where, target_rows, target_bytes, client)
            else:
                begin = csv_header(file, where, client)[1] if file.format == "csv" else 0
                chunks += _text_chunks(file, where, begin, target_bytes, client)
        except JobFileError:
            raise
        except FileNotFoundError as exc:
            raise read_failure(file.uri, exc, format=file.format, range="") from exc
        except pa.ArrowException as exc:  # what pyarrow found there is no Parquet footer
            raise InputUnreadable(file.uri, format=file.format, range="footer", detail=str(exc)) from exc
        except Exception as exc:  # an OSError, boto3's
            raise read_failure(file.uri, exc, format=file.format, range="") from exc
    return chunks


def _parquet_chunks(
    file: InputFile, where: Located, target_rows: int, target_bytes: int, client: Any
) -> list[ChunkSpec]:
    with open_seekable(where, size=file.size, client=client) as handle:
        metadata = pq.ParquetFile(handle).metadata
    chunks: list[ChunkSpec] = []
    start, rows, size, first_row = 0, 0, 0, 0
    for group in range(metadata.num_row_groups):
        row_group = metadata.row_group(group)
        rows += row_group.num_rows
        size += row_group.total_byte_size
        if rows >= target_rows or size >= target_bytes or group == metadata.num_row_groups - 1:
            chunks.append(ChunkSpec(file, start, group + 1, rows, first_row))
            start, first_row, rows, size = group + 1, first_row + rows, 0, 0
    return chunks


def csv_header(file: InputFile, where: Located, client: Any) -> tuple[list[str], int]:
    """A CSV file's column names (its first line) and the byte after that line."""
    end = line_start_after(where, 0, file.size, client)
    if end == 0:
        end = file.size  # one line, the header, and no newline after it
    text = read_range(where, 0, end, client).decode("utf-8-sig", errors="replace").rstrip("\r\n")
    names = next(csv.reader([text]), [])
    if not names or len(set(names)) != len(names) or any(not name for name in names):
        raise InputUnreadable(
            file.uri, format="csv", range=f"bytes 0-{end - 1}", detail="the header must name every column once"
        )
    return names, end


def line_start_after(where: Located, position: int, limit: int, client: Any) -> int:
    """The first line start after ``position`` (the byte after the next newline at or after
    it), or ``limit`` if there is none before it; 0 if ``position`` is 0 and no newline is."""
    cursor = position
    while cursor < limit:
        window = read_range(where, cursor, min(cursor + _PROBE, limit), client)
        found = window.find(b"\n")
        if found >= 0:
            return cursor + found + 1
        cursor += len(window)
        if not window:
            break
    return 0 if position == 0 else limit


def _text_chunks(file: InputFile, where: Located, begin: int, target_bytes: int, client: Any) -> list[ChunkSpec]:
    chunks: list[ChunkSpec] = []
    start = begin
    while start < file.size:
        wanted = start + target_bytes
        # A cut at ``wanted`` is a line start if the byte before it is a newline: look from there.
        stop = file.size if wanted >= file.size else line_start_after(where, wanted - 1, file.size, client)
        if stop <= start:  # no newline after ``start`` at all: the rest is one line
            stop = file.size
        chunks.append(ChunkSpec(file, start, stop))
        start = stop
    return chunks
