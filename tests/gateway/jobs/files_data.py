"""Input files for the job-file tests: one table written as Parquet (many row groups), CSV and
JSON lines, and what reading every chunk of a plan gives back."""

from __future__ import annotations

from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from gateway.jobs.files.chunks import ChunkSpec, plan_chunks
from gateway.jobs.files.locations import InputFile, find_inputs
from gateway.jobs.files.readers import read_chunk


def rows(count: int, *, first: int = 0) -> pa.Table:
    """``count`` rows: an id, four iris-like floats, a label with a comma and a quote in some."""
    ids = list(range(first, first + count))
    return pa.table(
        {
            "row_id": pa.array(ids, pa.int64()),
            "sepal_length": pa.array([4.0 + (i % 37) / 10 for i in ids], pa.float64()),
            "sepal_width": pa.array([2.0 + (i % 23) / 10 for i in ids], pa.float64()),
            "petal_length": pa.array([1.0 + (i % 59) / 10 for i in ids], pa.float64()),
            "petal_width": pa.array([0.1 + (i % 25) / 10 for i in ids], pa.float64()),
            "label": pa.array([f'k{i % 7}, "q"' if i % 5 == 0 else f"k{i % 7}" for i in ids], pa.string()),
        }
    )


def write(table: pa.Table, path: Path, *, row_group_size: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix
    if suffix in (".parquet", ".pq"):
        pq.write_table(table, path, row_group_size=row_group_size)
    elif suffix == ".csv":
        pacsv.write_csv(table, path)
    else:
        path.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in table.to_pylist()))
    return path


def read_plan(spec: str | list[str], *, target_rows: int, target_bytes: int) -> tuple[list[ChunkSpec], pa.Table]:
    """The plan of ``spec`` and the rows of its chunks, read one by one with the types of
    :func:`rows`, and concatenated."""
    files: list[InputFile] = find_inputs(spec, max_files=100)
    chunks = plan_chunks(files, target_rows=target_rows, target_bytes=target_bytes)
    schema = rows(1).schema
    types = dict(zip(schema.names, schema.types, strict=True))
    tables = [read_chunk(chunk, types=types).select(schema.names) for chunk in chunks]
    return chunks, pa.concat_tables([schema.empty_table(), *tables])
