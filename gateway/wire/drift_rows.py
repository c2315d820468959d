"""Request bodies and answers read back as columns, for drift: data only, no I/O.

A sampled request's body and its answer, as they crossed the wire, become ``{column: values}``
(every list the same length), named as the version's reference names its columns. What is
read:

- MLflow's scoring protocol (JSON): ``dataframe_split`` (``columns`` and ``data``; without
  ``columns``, the reference's names by position), ``dataframe_records``, and ``inputs`` /
  ``instances`` as records, as ``{column: values}``, or as rows of values by position; CSV with
  a header. Answers: ``{"predictions": ...}`` as a list of values (one output column), of
  records or of rows, or ``{column: values}``; a bare list likewise.
- The Open Inference Protocol's REST JSON: each input tensor a column (by name), or one
  two-dimensional tensor whose second dimension is the reference's column count (by position);
  outputs likewise.

Anything else (Parquet bodies, the binary extension, a shape that is none of these) is
unreadable: ``None``, counted by the caller, never raised.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import orjson
import pandas as pd

Columns = dict[str, list[Any]]


def _records(rows: list[Any]) -> Columns | None:
    if not all(isinstance(row, dict) for row in rows):
        return None
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    return {str(name): [row.get(name) for row in rows] for name in names}


def _positional(rows: list[Any], names: Sequence[str]) -> Columns | None:
    if not rows:
        return {name: [] for name in names}
    if all(isinstance(row, list) for row in rows):
        width = len(rows[0])
        if width == 0 or any(len(row) != width for row in rows):
            return None
        labels = list(names[:width]) + [f"_{i}" for i in range(len(names), width)]  # extra: unnamed
        return {label: [row[i] for row in rows] for i, label in enumerate(labels)}
    if all(not isinstance(row, dict | list) for row in rows):  # one column of values
        return {names[0] if names else "_0": list(rows)}
    return _records(rows)


def _mapping(value: dict[str, Any]) -> Columns | None:
    columns = {str(k): (v if isinstance(v, list) else [v]) for k, v in value.items()}
    lengths = {len(v) for v in columns.values()}
    return columns if len(lengths) <= 1 else None


def _table(value: Any, names: Sequence[str]) -> Columns | None:
    if isinstance(value, list):
        return _positional(value, names)
    if isinstance(value, dict):
        return _mapping(value)
    return None


def _mlflow_inputs(document: Any, names: Sequence[str]) -> Columns | None:
    if not isinstance(document, dict):
        return None
    if isinstance(split := document.get("dataframe_split"), dict):
        data = split.get("data")
        if not isinstance(data, list):
            return None
        columns = split.get("columns")
        if isinstance(columns, list) and all(isinstance(row, list) for row in data):
            if any(len(row) != len(columns) for row in data):
                return None
            return {str(c): [row[i] for row in data] for i, c in enumerate(columns)}
        return _positional(data, names)
    if isinstance(records := document.get("dataframe_records"), list):
        return _records(records)
    for key in ("inputs", "instances"):
        if key in document:
            return _table(document[key], names)
    return None


def _oip(tensors: Any, names: Sequence[str]) -> Columns | None:
    if not isinstance(tensors, list) or not tensors or not all(isinstance(t, dict) for t in tensors):
        return None
    if len(tensors) == 1:
        shape, data = tensors[0].get("shape"), _flat(tensors[0].get("data"))
        if data is None:
            return None
        if isinstance(shape, list) and len(shape) == 2 and shape[1] > 1 and shape[0] * shape[1] == len(data):
            width = int(shape[1])
            return _positional([data[i : i + width] for i in range(0, len(data), width)], names)
        name = tensors[0].get("name")
        return {str(name) if str(name) in names or len(names) != 1 else names[0]: data}
    columns: Columns = {}
    for tensor in tensors:
        data = _flat(tensor.get("data"))
        if data is None:
            return None
        columns[str(tensor.get("name"))] = data
    return columns if len({len(v) for v in columns.values()}) == 1 else None


def _flat(data: Any) -> list[Any] | None:
    if not isinstance(data, list):
        return None
    flat: list[Any] = []
    for item in data:
        if isinstance(item, list):
            inner = _flat(item)
            if inner is None:
                return None
            flat.extend(inner)
        else:
            flat.append(item)
    return flat


def _csv(body: bytes) -> Columns | None:
    frame = pd.read_csv(io.BytesIO(body))
    return {str(c): frame[c].tolist() for c in frame.columns}


def input_columns(body: bytes, *, media_type: str, protocol: str, names: Sequence[str]) -> Columns | None:
    """A request body's inputs as columns, or None where it cannot be read as a table."""
    try:
        base = media_type.split(";", 1)[0].strip().lower()
        if protocol == "mlflow" and base == "text/csv":
            return _csv(body)
        document = orjson.loads(body)
        if protocol == "oip":
            return _oip(document.get("inputs") if isinstance(document, dict) else None, names)
        if protocol == "mlflow":
            return _mlflow_inputs(document, names)
    except Exception:  # a body the model read but drift cannot: unreadable, counted, never raised
        return None
    return None


def output_columns(answer: bytes, *, protocol: str, names: Sequence[str]) -> Columns | None:
    """An answer's outputs as columns, or None where it cannot be read as a table."""
    try:
        document = orjson.loads(answer)
        if protocol == "oip":
            return _oip(document.get("outputs") if isinstance(document, dict) else None, names)
        if isinstance(document, dict) and "predictions" in document:
            document = document["predictions"]
        return _table(document, names)
    except Exception:
        return None


def row_count(columns: Columns | None) -> int | None:
    if columns is None:
        return None
    lengths = {len(values) for values in columns.values()}
    return lengths.pop() if len(lengths) == 1 else (0 if not lengths else None)


def frame_of(parts: list[Columns], names: list[str]) -> pd.DataFrame:
    """One DataFrame of these requests' columns (``names``: a column a request lacks is None there)."""
    columns: dict[str, list[Any]] = {name: [] for name in names}
    for part in parts:
        rows = row_count(part) or 0
        for name in names:
            values = part.get(name)
            columns[name].extend(values if values is not None else [None] * rows)
    return pd.DataFrame(columns)
