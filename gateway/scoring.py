"""MLflow's scoring protocol, as ``mlflow models serve`` speaks it.

Request bodies are JSON with exactly one of ``dataframe_split``, ``dataframe_records``,
``instances`` or ``inputs`` (plus optional ``params``), or CSV, or Parquet. Parsing
uses the model's input schema the way MLflow's scoring server does (so an int is
accepted for a double column), through MLflow's own parsing utilities, so a body that
works against ``mlflow models serve`` works here unchanged.
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
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from mlflow.utils.proto_json_utils import dataframe_from_parsed_json, parse_tf_serving_input

from gateway.errors import InvalidInput, MalformedRequest, UnsupportedMediaType

INPUT_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")
PARAMS_KEY = "params"
JSON = "application/json"
CSV = "text/csv"
PARQUET = "application/vnd.apache.parquet"  # as MLflow 3 names it
PARQUET_ALIASES = ("application/x-parquet",)


@dataclass(frozen=True, slots=True)
class ScoringInput:
    data: Any
    params: dict[str, Any] | None


def parse_content_type(header: str | None) -> str:
    """The media type of a request, refusing what the scoring server refuses (415)."""
    if not header:
        raise UnsupportedMediaType(header)
    media_type, *parameters = (part.strip() for part in header.split(";"))
    for parameter in parameters:
        key, _, value = parameter.partition("=")
        if key.strip().lower() != "charset" or value.strip().strip('"').lower() != "utf-8":
            raise UnsupportedMediaType(header)
    media_type = media_type.lower()
    if media_type in PARQUET_ALIASES:
        media_type = PARQUET
    if media_type not in (JSON, CSV, PARQUET):
        raise UnsupportedMediaType(header)
    return media_type


def decode(body: bytes, media_type: str, metadata: Model) -> ScoringInput:
    """Turn a request body into what ``PyFuncModel.predict`` takes."""
    schema = metadata.get_input_schema()
    try:
        if media_type == CSV:
            return ScoringInput(_parse_csv(body, schema), None)
        if media_type == PARQUET:
            return ScoringInput(_parse_parquet(body), None)
        return _parse_json(body, metadata, schema)
    except MlflowException as exc:
        if exc.error_code == "BAD_REQUEST":
            raise MalformedRequest(exc.message) from exc
        raise InvalidInput(exc.message) from exc


def _parse_json(body: bytes, metadata: Model, schema: Any) -> ScoringInput:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedRequest(f"Request body is not valid JSON: {exc}") from exc
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
        raise MalformedRequest(f"'{PARAMS_KEY}' must be a JSON object, got {type(params).__name__}")
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


def _parse_csv(body: bytes, schema: Any) -> pd.DataFrame:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedRequest(f"CSV body is not valid UTF-8: {exc}") from exc
    try:
        if schema is None or not schema.has_input_names():
            return pd.read_csv(io.StringIO(text))
        dtypes = dict(zip(schema.input_names(), schema.pandas_types(), strict=False))
        return pd.read_csv(io.StringIO(text), dtype=dtypes)
    except (ValueError, TypeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise MalformedRequest(f"Could not read the body as CSV (pandas.DataFrame.to_csv format): {exc}") from exc


def _parse_parquet(body: bytes) -> pd.DataFrame:
    try:
        return pd.read_parquet(io.BytesIO(body))
    except Exception as exc:  # pyarrow raises several unrelated types for bad bytes
        raise MalformedRequest(f"Could not read the body as Parquet: {exc}") from exc


def encode_predictions(raw: Any) -> bytes:
    """``{"predictions": ...}`` exactly as MLflow's scoring server shapes it."""
    document = {"predictions": jsonable(raw)}
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
