"""A record's bodies as its event's ``inputs`` and ``outputs``: parsed where the media type says
how, with every value of a named column or tensor (``GATEWAY_RECORDS_REDACT``) replaced.

Redaction works by name, so it needs names: a body whose columns cannot be read while any
name is set (another media type, an unknown or unnamed JSON shape, a body that does not
parse) is recorded without its inputs, saying why, rather than with values that might be the
very ones to hide. Without names set, nothing is withheld and nothing fails: what does not
parse is kept as text or base64.
"""

from __future__ import annotations

import base64
import csv
import io
import json
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import orjson

REDACTED = "[redacted]"

JSON = "application/json"
_CSV_TYPES = ("text/csv", "application/csv")

# Top-level keys of an MLflow scoring body (mlflow.pyfunc.scoring_server) and of an Open
# Inference Protocol request; any other key may hold data that no name describes.
_MLFLOW_INPUT_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")
_OIP_KEYS = ("id", "parameters", "inputs", "outputs")


class Unreadable(Exception):
    """A body whose columns cannot be told apart; the message says why, never with its content."""


@dataclass(slots=True)
class Section:
    """An event's ``inputs`` or ``outputs``: ``value`` (JSON-ready) or, when withheld, None and
    ``omitted`` saying why. Two a record, made in the writer thread: not frozen, whose
    ``__init__`` sets each field through ``object.__setattr__``."""

    value: Any
    omitted: str | None = None


def base_media_type(media_type: str) -> str:
    """``application/json; format=pandas-split`` -> ``application/json``."""
    return media_type.partition(";")[0].strip().lower()


def is_json(media_type: str) -> bool:
    return media_type == JSON or media_type.endswith("+json")


def recorded_inputs(body: bytes, *, media_type: str, protocol: str, redact: Collection[str]) -> Section:
    """The request body as the event's ``inputs``."""
    media_type = base_media_type(media_type)
    try:
        if is_json(media_type):
            return _json_inputs(body, media_type, protocol, redact)
        if media_type in _CSV_TYPES:
            return _csv_inputs(body, media_type, redact)
        if redact:
            raise Unreadable(f"{media_type or 'a body without a media type'} has no columns to redact by name")
    except Unreadable as exc:
        return Section(None, str(exc))
    except RecursionError:  # only while redacting: JSON nested deeper than the walk can go
        return Section(None, "the body is nested too deeply to redact")
    return Section(_opaque(body, media_type))


def recorded_outputs(body: bytes, *, redact: Collection[str]) -> Section:
    """The answer (always JSON) as the event's ``outputs``. A model may echo an input, so named
    keys and named tensors are redacted here too, wherever they appear."""
    try:
        document = _parsed(body)
    except (ValueError, RecursionError):
        if redact:
            return Section(None, "the answer is not JSON")
        return Section(_text(body, JSON))
    if not redact:
        return Section(document)
    try:
        return Section(_scrubbed(document, redact))
    except RecursionError:
        return Section(None, "the answer is nested too deeply to redact")


def _parsed(body: bytes) -> Any:
    """A JSON body as ``json.loads`` reads it. orjson reads strict JSON several times faster
    (the writer thread shares the event loop's core); what it declines (``NaN``, integers past
    64 bits, nesting past its limit, bad UTF-8) goes to ``json.loads``, which decides as before."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return json.loads(body)


def _opaque(body: bytes, media_type: str) -> dict[str, Any]:
    return {"media_type": media_type, "base64": base64.b64encode(body).decode("ascii")}


def _text(body: bytes, media_type: str) -> dict[str, Any]:
    return {"media_type": media_type, "text": body.decode("utf-8", errors="replace")}


def _json_inputs(body: bytes, media_type: str, protocol: str, redact: Collection[str]) -> Section:
    try:
        document = _parsed(body)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
        if redact:
            raise Unreadable("the body is not valid JSON") from None
        return Section(_text(body, media_type))
    if not redact:
        return Section(document)
    if protocol == "oip":
        return Section(_oip_request(document, redact))
    return Section(_mlflow_request(document, redact))


def _csv_inputs(body: bytes, media_type: str, redact: Collection[str]) -> Section:
    try:
        rows = list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))
    except (UnicodeDecodeError, csv.Error):
        if redact:
            raise Unreadable("the CSV body cannot be read") from None
        return Section(_opaque(body, media_type))
    columns, data = (rows[0], rows[1:]) if rows else ([], [])
    if redact:
        named = {i for i, column in enumerate(columns) if column in redact}
        if any(len(row) > len(columns) for row in data):
            raise Unreadable("the CSV body has rows longer than its header")
        if named:
            data = [[REDACTED if i in named else cell for i, cell in enumerate(row)] for row in data]
    return Section({"columns": columns, "data": data})


# --- MLflow scoring bodies ---


def _mlflow_request(document: Any, redact: Collection[str]) -> dict[str, Any]:
    if not isinstance(document, dict):
        raise Unreadable("the JSON body is not an object")
    found: dict[str, Any] = {}
    for key, value in document.items():
        if key == "dataframe_split":
            found[key] = _split(value, redact)
        elif key == "dataframe_records":
            found[key] = _rows(value, redact) if isinstance(value, list) else _columns(value, redact)
        elif key in ("instances", "inputs"):
            found[key] = _columns(value, redact) if isinstance(value, dict) else _rows(value, redact)
        elif key == "params":
            found[key] = _columns(value, redact)
        else:
            raise Unreadable("the JSON body has a key that is not MLflow's scoring format")
    if not any(key in found for key in _MLFLOW_INPUT_KEYS):
        raise Unreadable("the JSON body has none of MLflow's input keys")
    return found


def _split(value: Any, redact: Collection[str]) -> dict[str, Any]:
    """``{"columns": [...], "data": [[...]], "index": [...]}``: cells by the column's position."""
    if not isinstance(value, dict) or not set(value) <= {"columns", "data", "index"}:
        raise Unreadable("dataframe_split is not {columns, data[, index]}")
    columns, data = value.get("columns"), value.get("data")
    if not isinstance(columns, list) or not isinstance(data, list):
        raise Unreadable("dataframe_split has no column names")
    named = {i for i, column in enumerate(columns) if isinstance(column, str) and column in redact}
    if not named:
        return value
    rows = []
    for row in data:
        if isinstance(row, list) and len(row) == len(columns):
            rows.append([_blanked(cell) if i in named else cell for i, cell in enumerate(row)])
        elif not isinstance(row, list) and len(columns) == 1:  # one column's values, one per row
            rows.append(_blanked(row))
        else:
            raise Unreadable("dataframe_split has rows that do not match its columns")
    return {**value, "data": rows}


def _rows(value: Any, redact: Collection[str]) -> list[Any]:
    """Rows as objects (``dataframe_records``, ``instances``): every one must name its values."""
    if not isinstance(value, list) or not all(isinstance(row, dict) for row in value):
        raise Unreadable("the inputs are not named (a list of values, not of objects)")
    return [_columns(row, redact) for row in value]


def _columns(value: Any, redact: Collection[str]) -> dict[str, Any]:
    """An object whose keys are names: a row, columns (``inputs``) or ``params``. Values that
    are objects themselves are searched for the names too."""
    if not isinstance(value, dict):
        raise Unreadable("the inputs are not named")
    return {key: _blanked(item) if key in redact else _scrubbed(item, redact) for key, item in value.items()}


# --- Open Inference Protocol (REST JSON) ---


def _oip_request(document: Any, redact: Collection[str]) -> dict[str, Any]:
    if not isinstance(document, dict) or not set(document) <= set(_OIP_KEYS):
        raise Unreadable("the JSON body is not an inference request")
    tensors = document.get("inputs")
    if not isinstance(tensors, list):
        raise Unreadable("the inference request has no list of inputs")
    found = dict(document)
    found["inputs"] = [_tensor(tensor, redact) for tensor in tensors]
    if "parameters" in document:
        found["parameters"] = _columns(document["parameters"], redact)
    return found


def _tensor(tensor: Any, redact: Collection[str]) -> dict[str, Any]:
    if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
        raise Unreadable("an input tensor has no name")
    if tensor["name"] in redact and "data" in tensor:
        return {**tensor, "data": _blanked(tensor["data"])}
    return tensor


# --- shared ---


def _blanked(value: Any) -> Any:
    """Every value replaced, the shape of lists kept (a column keeps its rows, a tensor its shape)."""
    if isinstance(value, list):
        return [_blanked(item) for item in value]
    return REDACTED


def _scrubbed(value: Any, redact: Collection[str]) -> Any:
    """Anything JSON, with named keys and named tensors (``{"name": ..., "data": ...}``) blanked."""
    if isinstance(value, list):
        return [_scrubbed(item, redact) for item in value]
    if not isinstance(value, dict):
        return value
    named_tensor = isinstance(value.get("name"), str) and value["name"] in redact
    return {
        key: _blanked(item) if key in redact or (named_tensor and key == "data") else _scrubbed(item, redact)
        for key, item in value.items()
    }
