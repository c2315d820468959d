"""A request to warm a freshly loaded version with before it takes traffic.

The version's own serving example when one was logged (MLflow writes it as a ready
scoring request), else one row built from its signature, else nothing (load only).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
from mlflow.types import Schema, TensorSpec

from gateway.dataplane.loader import LoadedModel
from gateway.wire.mlflow_scoring import JSON

_DEFAULTS: dict[str, Any] = {
    "boolean": False,
    "integer": 0,
    "long": 0,
    "float": 0.0,
    "double": 0.0,
    "string": "",
    "binary": "",
    "datetime": "2020-01-01T00:00:00",
}


def warmup_request(model: LoadedModel) -> tuple[bytes, str] | None:
    info = model.metadata.saved_input_example_info or {}
    example = info.get("serving_input_path")
    if example and (model.path / example).is_file():
        return (model.path / example).read_bytes(), JSON
    schema = model.metadata.get_input_schema()  # type: ignore[no-untyped-call]
    if schema is None:
        return None
    body = sample_from_schema(schema)
    return (orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), JSON) if body is not None else None


def sample_from_schema(schema: Schema) -> dict[str, Any] | None:
    if schema.is_tensor_spec():
        tensors = {spec.name: _zeros(spec.shape, spec.type) for spec in schema.inputs if isinstance(spec, TensorSpec)}
        if len(tensors) == 1 and not schema.has_input_names():
            return {"inputs": next(iter(tensors.values()))}
        return {"inputs": tensors}
    row = {}
    for column in schema.inputs:
        default = _DEFAULTS.get(str(getattr(column.type, "name", column.type)))
        if default is None:
            return None  # arrays, objects, maps: no safe guess
        row[column.name] = default
    return {"dataframe_records": [row]}


def _zeros(shape: tuple[int, ...], dtype: np.dtype[Any]) -> Any:
    return np.zeros(tuple(1 if dim == -1 else dim for dim in shape), dtype=dtype)
