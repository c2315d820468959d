"""Reading one chunk: its row groups, or its byte range, and nothing else of the file, so a
chunk's memory is bounded by the chunk whatever the file's size (about twice the range's bytes
for text: the bytes and the table; the row groups' decoded columns for Parquet).

Types: ``types`` (a column's name to an Arrow type, the model signature's, say) are taken as
given: CSV and JSON-lines text is parsed as that type (``"007"`` stays a string), Parquet
columns are cast to it. Any other column keeps Parquet's type, or is typed by pyarrow's
inference over the chunk's own rows (one block the size of the chunk, so a float late in the
range still makes the column float): the same column can then come back ``int64`` in one chunk
and ``double`` in another, ``null`` where a chunk holds no value, and a string of digits as a
number. A value that is not of its given type fails the chunk (InputUnreadable).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from gateway.jobs.files.chunks import ChunkSpec, csv_header
from gateway.jobs.files.errors import InputUnreadable, JobFileError
from gateway.jobs.files.storage import Located, locate, open_seekable, read_failure, read_range, s3_client

_MIN_BLOCK = 1 << 20  # pyarrow's own default block size
# A line with an odd number of quotes (RFC 4180 escapes a quote by doubling it) begins or ends
# a quoted value that holds a newline: the plan cuts at newlines without knowing whether they
# are inside quotes, so such a file is refused, in every chunk that holds such a line.
_ODD_QUOTES = re.compile(rb'^(?:[^"\n]*"[^"\n]*")*[^"\n]*"[^"\n]*$', re.MULTILINE)


def read_chunk(
    spec: ChunkSpec,
    *,
    columns: list[str] | None = None,
    types: Mapping[str, pa.DataType] | None = None,
    use_threads: bool = True,
) -> pa.Table:
    """The chunk's rows, in file order, with ``columns`` only (every column if None), typed
    by ``types`` where it names them (see the module's doc). ``use_threads``: decoded on
    pyarrow's threads (every core), else on the calling thread alone. Raises InputUnreadable
    (with the chunk's range), InputNotFound, or InputUnavailable (transient)."""
    types = dict(types or {})
    where = locate(spec.file.uri)
    client = s3_client() if spec.file.uri.startswith("s3://") else None
    try:
        if spec.file.format == "parquet":
            table = _parquet(spec, where, columns, client, use_threads)
        elif spec.file.format == "csv":
            table = _csv(spec, where, columns, types, client, use_threads)
        else:
            table = _jsonl(spec, where, columns, types, client, use_threads)
        return _typed(spec, table, types)
    except JobFileError:
        raise
    except pa.ArrowException as exc:
        raise _unreadable(spec, str(exc)) from exc
    except Exception as exc:  # OSError, boto3's
        raise read_failure(spec.file.uri, exc, format=spec.file.format, range=spec.range) from exc


def _typed(spec: ChunkSpec, table: pa.Table, types: dict[str, pa.DataType]) -> pa.Table:
    """``table`` with the columns ``types`` names cast to their types (a no-op for text, parsed
    as them already); InputUnreadable naming the column when a value is not of its type."""
    for index, field in enumerate(table.schema):
        wanted = types.get(field.name)
        if wanted is not None and field.type != wanted:
            try:
                table = table.set_column(index, field.name, table.column(index).cast(wanted))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise _unreadable(spec, f"column '{field.name}' is not {wanted}: {exc}") from exc
    return table


def _unreadable(spec: ChunkSpec, detail: str) -> InputUnreadable:
    return InputUnreadable(spec.file.uri, format=spec.file.format, range=spec.range, detail=detail)


def _parquet(spec: ChunkSpec, where: Located, columns: list[str] | None, client: Any, use_threads: bool) -> pa.Table:
    with open_seekable(where, size=spec.file.size, client=client) as handle:
        parquet = pq.ParquetFile(handle)
        if spec.stop > parquet.metadata.num_row_groups:
            groups = parquet.metadata.num_row_groups
            raise _unreadable(spec, f"the file has {groups} row groups (changed since planned?)")
        _check_columns(spec, parquet.schema_arrow.names, columns)
        table = parquet.read_row_groups(range(spec.start, spec.stop), columns=columns, use_threads=use_threads)
    if spec.rows is not None and table.num_rows != spec.rows:
        raise _unreadable(spec, f"{table.num_rows} rows where the plan had {spec.rows} (changed since planned?)")
    return table


def _check_columns(spec: ChunkSpec, names: list[str], columns: list[str] | None) -> None:
    missing = [name for name in columns or () if name not in names]
    if missing:
        raise _unreadable(spec, f"no column {', '.join(map(repr, missing))} (it has {', '.join(names)})")


def _csv(
    spec: ChunkSpec,
    where: Located,
    columns: list[str] | None,
    types: dict[str, pa.DataType],
    client: Any,
    use_threads: bool,
) -> pa.Table:
    names, _ = csv_header(spec.file, where, client)
    _check_columns(spec, names, columns)
    data = read_range(where, spec.start, spec.stop, client)
    split = _ODD_QUOTES.search(data) if b'"' in data else None
    if split is not None:
        raise _unreadable(
            spec,
            f"the line at byte {spec.start + split.start()} opens or closes a quoted value across a line break; "
            "CSV values holding newlines cannot be split into chunks: write the file as Parquet or JSON lines",
        )
    return pacsv.read_csv(
        pa.BufferReader(data),
        # One block for the whole range: types are inferred from every row of the chunk.
        read_options=pacsv.ReadOptions(
            column_names=names, block_size=max(len(data) + 1, _MIN_BLOCK), use_threads=use_threads
        ),
        parse_options=pacsv.ParseOptions(newlines_in_values=False),
        convert_options=pacsv.ConvertOptions(
            include_columns=columns, column_types={name: kind for name, kind in types.items() if name in names}
        ),
    )


def _jsonl(
    spec: ChunkSpec,
    where: Located,
    columns: list[str] | None,
    types: dict[str, pa.DataType],
    client: Any,
    use_threads: bool,
) -> pa.Table:
    data = read_range(where, spec.start, spec.stop, client)
    # The types given are parsed as such; fields they do not name are inferred.
    parse = pajson.ParseOptions(explicit_schema=pa.schema(types) if types else None, unexpected_field_behavior="infer")
    try:
        table = pajson.read_json(
            pa.BufferReader(data),
            read_options=pajson.ReadOptions(block_size=max(len(data) + 1, _MIN_BLOCK), use_threads=use_threads),
            parse_options=parse,
        )
    except pa.ArrowInvalid as exc:
        raise _unreadable(spec, _bad_line(spec, data) or str(exc)) from exc
    if columns is not None:
        _check_columns(spec, table.column_names, columns)
        table = table.select(columns)
    return table


def _bad_line(spec: ChunkSpec, data: bytes) -> str | None:
    """Which line of a JSON-lines range is not a JSON object, and why (pyarrow's message
    says neither where in the file nor what)."""
    offset = 0
    for line in data.split(b"\n"):
        if line.strip():
            try:
                value = orjson.loads(line)
                problem = None if isinstance(value, dict) else f"a {type(value).__name__}, not an object"
            except orjson.JSONDecodeError as exc:
                problem = str(exc)
            if problem is not None:
                return f"the line at byte {spec.start + offset}: {problem}"
        offset += len(line) + 1
    return None
