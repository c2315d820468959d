"""MLflow's scoring protocol, as ``mlflow models serve`` speaks it.

Request bodies are JSON with exactly one of ``dataframe_split``, ``dataframe_records``,
``instances`` or ``inputs`` (plus optional ``params``), or MLflow's unified LLM input (a
body with ``messages``, ``prompt`` or ``input``: the body itself is the data, answered
without the ``predictions`` wrapper), or CSV, or Parquet. Parsing uses the model's input
schema the way MLflow's scoring server does (so an int is accepted for a double column),
through MLflow's own parsing utilities, so a body that works against ``mlflow models
serve`` works here unchanged. Where the gateway deliberately differs, docs/user-guide.md says so
("Differences from `mlflow models serve`") and tests/conformance pins it.
"""

from __future__ import annotations

import base64
import datetime
import io
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from mlflow.utils.proto_json_utils import dataframe_from_parsed_json, parse_tf_serving_input

from gateway.errors import DecodedTooLarge, InvalidInput, MalformedRequest, UnsupportedMediaType

INPUT_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")
LLM_KEYS = ("messages", "prompt", "input")  # MLflow's unified chat, completions and embeddings input
PARAMS_KEY = "params"
JSON = "application/json"
CSV = "text/csv"
PARQUET = "application/vnd.apache.parquet"  # as MLflow 3 names it
PARQUET_ALIASES = ("application/x-parquet",)


@dataclass(frozen=True, slots=True)
class BodyLimits:
    """How much a CSV or Parquet body may decode to (``GATEWAY_MAX_BODY_ROWS``,
    ``GATEWAY_MAX_DECODED_MB``): the body's byte limit does not bound a compressed format."""

    max_rows: int = 100_000
    max_decoded_bytes: int = 256 * 2**20

    def rows(self, what: str, rows: int) -> None:
        if rows > self.max_rows:
            found = f"more than {self.max_rows:,} rows" if rows == self.max_rows + 1 else f"{rows:,} rows"
            raise DecodedTooLarge(what, found=found, limit=f"{self.max_rows:,} rows", setting="GATEWAY_MAX_BODY_ROWS")

    def decoded(self, what: str, size: int) -> None:
        if size > self.max_decoded_bytes:
            raise DecodedTooLarge(
                what,
                found=f"at least {size / 2**20:.1f} MiB decoded",
                limit=f"{self.max_decoded_bytes / 2**20:g} MiB",
                setting="GATEWAY_MAX_DECODED_MB",
            )


@dataclass(frozen=True, slots=True)
class ScoringInput:
    data: Any
    params: dict[str, Any] | None
    unwrapped: bool = False  # unified LLM input: answered as the bare output, as MLflow does


def parse_content_type(header: str | None) -> str:
    """The media type of a request, refusing what the scoring server refuses (415)."""
    if not header:
        raise UnsupportedMediaType(header)
    media_type, *parameters = (part.strip() for part in header.split(";"))
    for parameter in parameters:
        # RFC 9110: names and the charset's value are case-insensitive and a value may be
        # quoted (MLflow takes neither); no whitespace around "=" (MLflow refuses it too).
        key, _, value = parameter.partition("=")
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        if key.lower() != "charset" or value.lower() != "utf-8":
            raise UnsupportedMediaType(header)
    media_type = media_type.lower()
    if media_type in PARQUET_ALIASES:
        media_type = PARQUET
    if media_type not in (JSON, CSV, PARQUET):
        raise UnsupportedMediaType(header)
    return media_type


def decode(body: bytes, media_type: str, metadata: Model, limits: BodyLimits | None = None) -> ScoringInput:
    """Turn a request body into what ``PyFuncModel.predict`` takes."""
    schema = metadata.get_input_schema()
    limits = limits or BodyLimits()
    try:
        if media_type == CSV:
            return ScoringInput(_parse_csv(body, schema, limits), None)
        if media_type == PARQUET:
            return ScoringInput(_parse_parquet(body, limits), None)
        return _parse_json(body, metadata, schema)
    except MlflowException as exc:
        if exc.error_code == "BAD_REQUEST":
            raise MalformedRequest(exc.message) from exc
        raise InvalidInput(exc.message) from exc


def _load_json(body: bytes) -> Any:
    """The document as MLflow's scoring server reads it, with Python's json: UTF-16 and UTF-32
    bodies and a byte order mark are read (json detects them), integers keep every digit (never
    a float that an int64 cast would wrap) and NaN / Infinity literals are numbers. The fast
    path reads with orjson and declines whatever orjson reads otherwise."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError; deep nesting
        raise MalformedRequest(f"Request body is not valid JSON: {exc}") from exc


def _parse_json(body: bytes, metadata: Model, schema: Any) -> ScoringInput:
    document = _load_json(body)
    if isinstance(document, dict) and any(key in document for key in LLM_KEYS):
        # As MLflow: the body is the data, less the keys the params schema names.
        params_schema = metadata.get_params_schema()
        names = {param.name for param in params_schema.params} if params_schema is not None else set()
        data = {key: value for key, value in document.items() if key not in names}
        return ScoringInput(data, {key: document[key] for key in document if key in names}, unwrapped=True)
    if not isinstance(document, dict):
        raise MalformedRequest(
            f"The JSON body must be an object with exactly one of {list(INPUT_KEYS)}; "
            f"got a JSON {type(document).__name__}"
        )
    keys = [key for key in INPUT_KEYS if key in document]
    if len(keys) != 1:
        found = ", ".join(repr(k) for k in document) or "none"
        raise MalformedRequest(f"The JSON body must have exactly one of {list(INPUT_KEYS)}; found keys: {found}")
    params = document.get(PARAMS_KEY)
    if params is not None and not isinstance(params, dict):
        # MLflow ignores it (or fails in the model's params check); never silently here.
        raise InvalidInput(f"'{PARAMS_KEY}' must be a JSON object, got {type(params).__name__}")
    key = keys[0]
    # Models whose signature comes from type hints take 'inputs' as it is (as MLflow does).
    if metadata._is_signature_from_type_hint():
        if key != "inputs":
            raise InvalidInput("This model's signature comes from type hints: send its data under 'inputs'")
        return ScoringInput(document["inputs"], params)
    if key in ("instances", "inputs"):
        data = parse_tf_serving_input({key: document[key]}, schema=schema)
    else:
        data = dataframe_from_parsed_json(document[key], pandas_orient=key[len("dataframe_") :], schema=schema)
    return ScoringInput(data, params)


def _parse_csv(body: bytes, schema: Any, limits: BodyLimits) -> pd.DataFrame:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedRequest(f"CSV body is not valid UTF-8: {exc}") from exc
    try:
        # One row past the limit is read at most: enough to know it is past it.
        if schema is None:
            frame = pd.read_csv(io.StringIO(text), nrows=limits.max_rows + 1)
        else:
            # MLflow's own reading: a tensor schema has no pandas types, and that refuses the CSV.
            dtypes = dict(zip(schema.input_names(), schema.pandas_types(), strict=False))
            frame = pd.read_csv(io.StringIO(text), dtype=dtypes, nrows=limits.max_rows + 1)
    except Exception as exc:  # pandas raises many types (OverflowError for 2**64 in an int64 column)
        message = exc.message if isinstance(exc, MlflowException) else str(exc)
        raise MalformedRequest(f"Could not read the body as CSV (pandas.DataFrame.to_csv format): {message}") from exc
    limits.rows("CSV", len(frame))
    limits.decoded("CSV", int(frame.memory_usage(deep=True).sum()))  # bounded by the body's size
    return frame


_PARQUET_BATCH_ROWS = 1024


# Bytes a value of each fixed-width physical type takes decoded (Arrow's widths).
_PARQUET_WIDTHS = {"BOOLEAN": 1, "INT32": 4, "FLOAT": 4, "INT64": 8, "DOUBLE": 8, "INT96": 8}


def _parquet_decoded_bytes(meta: Any) -> int:
    """What the file's metadata says it decodes to, at least: rows times width for fixed-width
    columns (a dictionary or run-length encoded column says nothing of its decoded size in
    its byte counts), the uncompressed pages plus an offset a row for the others."""
    total = 0
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        for c in range(group.num_columns):
            column = group.column(c)
            kind = str(column.physical_type)
            if kind in _PARQUET_WIDTHS:
                total += group.num_rows * _PARQUET_WIDTHS[kind]
            elif kind == "FIXED_LEN_BYTE_ARRAY":
                total += group.num_rows * max(int(meta.schema.column(c).length or 0), 1)
            else:
                total += int(column.total_uncompressed_size) + group.num_rows * 8
    return total


def _parse_parquet(body: bytes, limits: BodyLimits) -> pd.DataFrame:
    """The frame ``pandas.read_parquet`` reads, after the file's own metadata (rows, uncompressed
    size) passes the limits, decoded a batch at a time so that metadata that lies is caught
    within a batch of the limit."""
    try:
        file = pq.ParquetFile(io.BytesIO(body))
        meta = file.metadata
    except Exception as exc:  # pyarrow raises several unrelated types for bad bytes
        raise MalformedRequest(f"Could not read the body as Parquet: {exc}") from exc
    limits.rows("Parquet", meta.num_rows)
    limits.decoded("Parquet", _parquet_decoded_bytes(meta))
    batches, rows, size = [], 0, 0
    try:
        for batch in file.iter_batches(batch_size=_PARQUET_BATCH_ROWS):
            rows, size = rows + batch.num_rows, size + batch.nbytes
            limits.rows("Parquet", rows)
            limits.decoded("Parquet", size)
            batches.append(batch)
        return pa.Table.from_batches(batches, schema=file.schema_arrow).to_pandas()
    except DecodedTooLarge:
        raise
    except Exception as exc:
        raise MalformedRequest(f"Could not read the body as Parquet: {exc}") from exc


def encode_predictions(raw: Any, *, unwrapped: bool = False) -> bytes:
    """``{"predictions": ...}`` exactly as MLflow's scoring server shapes it; the bare output
    for unified LLM input (``unwrapped``), as MLflow answers that."""
    document = jsonable(raw) if unwrapped else {"predictions": jsonable(raw)}
    try:
        return orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
    except TypeError:  # what orjson cannot write (integers past 64 bits): the standard library can
        return json.dumps(document, default=_array_list, separators=(",", ":")).encode()


def _array_list(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def jsonable(value: Any) -> Any:
    """Frames become lists of records, series and arrays become lists (MLflow's shapes)."""
    if isinstance(value, pd.DataFrame):
        return [jsonable(record) for record in value.to_dict(orient="records")]
    if isinstance(value, pd.Series):  # MLflow answers a series as records of a one-column frame
        return jsonable(pd.DataFrame(value))
    if isinstance(value, np.ndarray):
        if value.ndim == 0:  # a 0-d array answers as its one value, as in MLflow
            return jsonable(value.item())
        if value.dtype.kind in "biuf" and value.dtype.isnative:
            return np.ascontiguousarray(value)  # orjson serialises these natively
        return [jsonable(item) for item in value.tolist()]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):  # base64, newline included, as MLflow's encoder writes them
        return base64.encodebytes(value).decode("ascii")
    if isinstance(value, datetime.date):  # pandas Timestamps too: ISO 8601, offset if any
        return value.isoformat()
    if hasattr(value, "tolist"):  # torch tensors and other array-likes
        return jsonable(np.asarray(value))
    return value
