"""A hot path for sklearn, XGBoost, LightGBM, CatBoost and pytorch versions: JSON straight
into a typed array, then the flavor's own predict, with no per-request pandas frame and no
pyfunc schema enforcement.

It is an optimisation, never a second set of rules. ``decode`` accepts only bodies whose
meaning is beyond doubt (exact column names, plain JSON numbers of the column's type,
consistent shapes) and returns None for anything else; the caller then takes the pyfunc
path, which gives MLflow's own answer or error. So for any body, the fast path either
declines or produces what pyfunc produces (tests/gateway/test_fastpath.py checks that
over generated inputs), to within the rounding of a float sum taken in another order
(gateway.dataplane.agreement, checked on each version's warm-up request).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import orjson
from mlflow.models import Model
from mlflow.types.schema import ColSpec, DataType, Schema, TensorSpec

from gateway.runtimes.worker.raw import raw_predict
from gateway.wire.mlflow_scoring import JSON

log = logging.getLogger(__name__)

_ROW_KEYS = ("dataframe_records", "instances", "inputs")
_INT64 = (-(2**63), 2**63 - 1)
# The flavors that predict on an array of the signature's columns (runtimes/worker/raw.py).
COLUMN_FLAVORS = ("sklearn", "xgboost", "lightgbm", "catboost")
# Column types the fast path builds arrays of; every other type goes through pyfunc.
_COLUMN_DTYPES = {DataType.double: np.dtype(np.float64), DataType.long: np.dtype(np.int64)}


class FastPath:
    """Decode a JSON body into one array, predict a batch of such arrays at once."""

    def __init__(
        self,
        decode: Callable[[Any], np.ndarray | None],
        predict: Callable[[np.ndarray], Any],
        *,
        tensors: Callable[[dict[str, np.ndarray]], np.ndarray | None] | None = None,
        columns: tuple[list[str], np.dtype[Any]] | None = None,
        on_cpu: bool = True,
    ) -> None:
        self._decode = decode
        self._tensors = tensors
        self.predict = predict
        self.columns = columns
        """The signature's columns and their one dtype, where the array predicted on is those
        columns side by side: an adapter may read a request straight into such rows."""
        self.on_cpu = on_cpu
        """Whether ``predict`` computes on this CPU (sklearn, a torch model on the CPU), not on
        a device it would wait for: only then may a batch run on the event loop."""

    def from_rows(self, rows: np.ndarray) -> np.ndarray | None:
        """Rows an adapter laid out as :attr:`columns` says, if they are exactly that (and
        finite, for floats: NaN and infinities get the model's own checks, through pyfunc)."""
        if self.columns is None:
            return None
        names, dtype = self.columns
        if rows.dtype != dtype or rows.ndim != 2 or rows.shape[1] != len(names) or not rows.shape[0]:
            return None
        if dtype == np.float64 and not np.isfinite(rows).all():
            return None
        return rows

    def from_tensors(self, tensors: dict[str, np.ndarray]) -> np.ndarray | None:
        """Another protocol's named, typed tensors (the Open Inference Protocol's inputs) as
        the array the flavor predicts on, or None: only where pyfunc would take them unchanged
        (the signature's columns or tensor, each of exactly its dtype and shape)."""
        return self._tensors(tensors) if self._tensors is not None else None

    def decode(self, body: bytes, media_type: str) -> np.ndarray | None:
        """The request as the array the flavor predicts on, or None: take the pyfunc path."""
        if media_type != JSON:
            return None
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(document, dict) or len(document) != 1:
            return None  # params, or several input keys, or none: pyfunc decides
        return self._decode(document)


RawPredict = Callable[[np.ndarray], Any]
AskRaw = Callable[[list[str] | None], RawPredict | None]
"""The flavor's own predict for arrays of these columns (None for a tensor model), or None."""


def build(pyfunc: Any, metadata: Model, flavor: str) -> FastPath | None:
    """The fast path for a version loaded in this process, or None when only pyfunc is safe."""
    on_cpu = True
    if flavor == "pytorch":
        wrapper = getattr(pyfunc, "_model_impl", None)
        on_cpu = str(getattr(wrapper, "device", "cpu")).split(":")[0] == "cpu"  # MLflow's load-time device
    return assemble(metadata, flavor, lambda names: raw_predict(pyfunc, flavor, names), on_cpu=on_cpu)


def assemble(metadata: Model, flavor: str, ask: AskRaw, *, on_cpu: bool) -> FastPath | None:
    """The fast path from what the signature says (decoding, here) and the flavor's own
    predict that ``ask`` finds, wherever the model runs (a worker's predict is a call to it:
    ``on_cpu`` False keeps its batches off the event loop)."""
    schema = metadata.get_input_schema()  # type: ignore[no-untyped-call]
    if schema is None or metadata.get_params_schema() is not None:  # type: ignore[no-untyped-call]
        return None
    try:
        if flavor in COLUMN_FLAVORS:
            return _sklearn(ask, schema, on_cpu=on_cpu)
        if flavor == "pytorch":
            return _pytorch(ask, schema, on_cpu=on_cpu)
    except Exception as exc:  # an unusual model: serve it, just not fast
        log.info("no fast path for this %s model (%s: %s)", flavor, type(exc).__name__, exc)
    return None


def reason(fast: FastPath | None, metadata: Model, flavor: str) -> str:
    """Which path serves a version and why, in words, for ``/models`` (before the warm-up
    check, :func:`gateway.dataplane.inference.check_fast_path`, adds what it found)."""
    if fast is not None:
        if fast.columns is None:
            return f"fast path: {flavor} on one tensor"
        types = {np.dtype(np.float64): "double", np.dtype(np.int64): "long"}
        return f"fast path: {flavor} on {types.get(fast.columns[1], fast.columns[1].name)} columns"
    if flavor not in (*COLUMN_FLAVORS, "pytorch"):
        return f"pyfunc: no fast path for {flavor} models (only {', '.join(COLUMN_FLAVORS)} and pytorch have one)"
    if metadata.get_input_schema() is None:  # type: ignore[no-untyped-call]
        return "pyfunc: no fast path without an input signature"
    if metadata.get_params_schema() is not None:  # type: ignore[no-untyped-call]
        return "pyfunc: no fast path for a signature with params"
    if flavor in COLUMN_FLAVORS:
        return (
            f"pyfunc: no fast path for this signature (the {flavor} one takes required columns, all double or all "
            "long, in the order the model was fitted with)"
        )
    return (
        "pyfunc: no fast path for this signature (the pytorch one takes one unnamed tensor, and no forecasting model)"
    )


def _sklearn(ask: AskRaw, schema: Schema, *, on_cpu: bool) -> FastPath | None:
    columns = _numeric_columns(schema)
    if columns is None:
        return None
    names, dtype = columns
    predict = ask(names)
    if predict is None:
        return None
    decode = _column_decoder(names, dtype)
    return FastPath(decode, predict, tensors=_column_tensors(names, dtype), columns=columns, on_cpu=on_cpu)


def _pytorch(ask: AskRaw, schema: Schema, *, on_cpu: bool) -> FastPath | None:
    from mlflow.utils.proto_json_utils import parse_tf_serving_input

    if not schema.is_tensor_spec() or len(schema.inputs) != 1 or schema.has_input_names():
        return None
    spec = schema.inputs[0]
    if not isinstance(spec, TensorSpec):
        return None
    predict = ask(None)
    if predict is None:
        return None

    def decode(document: dict[str, Any]) -> np.ndarray | None:
        key, value = next(iter(document.items()))
        if key not in ("instances", "inputs") or not _plain_numbers(value):
            return None  # strings, bools, nulls: MLflow's conversions decide, through pyfunc
        try:
            array = parse_tf_serving_input(document, schema=schema)  # type: ignore[no-untyped-call]
        except Exception:
            return None
        # What pyfunc's schema enforcement would accept unchanged: exact dtype and shape.
        if not isinstance(array, np.ndarray) or array.dtype != spec.type or not _shape_fits(array.shape, spec.shape):
            return None
        return array

    def tensors(values: dict[str, np.ndarray]) -> np.ndarray | None:
        if len(values) != 1:
            return None
        (array,) = values.values()
        if array.dtype != spec.type or not _shape_fits(array.shape, spec.shape):
            return None
        return array

    return FastPath(decode, predict, tensors=tensors, on_cpu=on_cpu)


def _plain_numbers(value: Any) -> bool:
    """A nested list whose leaves are all JSON numbers (no bools, strings or nulls)."""
    pending = [value]
    while pending:
        item = pending.pop()
        if type(item) is not list or not item:
            return False
        if type(item[0]) is list:
            pending.extend(item)
        elif not all(_accepts_double(leaf) for leaf in item):
            return False
    return True


def _shape_fits(shape: tuple[int, ...], expected: tuple[int, ...]) -> bool:
    return len(shape) == len(expected) and all(e == -1 or e == s for s, e in zip(shape, expected, strict=True))


def _numeric_columns(schema: Schema) -> tuple[list[str], np.dtype[Any]] | None:
    """Names in schema order and the one dtype they share, if the fast path can build them."""
    if schema.is_tensor_spec() or not schema.has_input_names():
        return None
    specs = [spec for spec in schema.inputs if isinstance(spec, ColSpec)]
    if len(specs) != len(schema.inputs):
        return None
    dtypes = {_COLUMN_DTYPES.get(spec.type) if isinstance(spec.type, DataType) else None for spec in specs}
    if len(dtypes) != 1 or None in dtypes or not all(spec.required for spec in specs):
        return None
    names = [str(spec.name) for spec in specs]
    if len(set(names)) != len(names):
        return None
    return names, dtypes.pop()  # type: ignore[return-value]


def _column_decoder(names: list[str], dtype: np.dtype[Any]) -> Callable[[Any], np.ndarray | None]:
    wanted = set(names)
    accepts = _accepts_double if dtype == np.float64 else _accepts_long

    def from_split(split: Any) -> np.ndarray | None:
        if not isinstance(split, dict) or set(split) != {"columns", "data"}:
            return None
        columns, data = split["columns"], split["data"]
        if not isinstance(columns, list) or not isinstance(data, list) or not data:
            return None
        if len(columns) != len(names) or set(columns) != wanted:
            return None
        width = len(columns)
        for row in data:
            if not isinstance(row, list) or len(row) != width or not all(accepts(v) for v in row):
                return None
        array = np.array(data, dtype=dtype)
        if columns != names:
            array = array[:, [columns.index(name) for name in names]]
        return array

    def from_records(records: Any) -> np.ndarray | None:
        if not isinstance(records, list) or not records:
            return None
        rows = []
        for record in records:
            if not isinstance(record, dict) or len(record) != len(names):
                return None
            try:
                row = [record[name] for name in names]
            except (KeyError, TypeError):
                return None
            if not all(accepts(v) for v in row):
                return None
            rows.append(row)
        return np.array(rows, dtype=dtype)

    def decode(document: dict[str, Any]) -> np.ndarray | None:
        key, value = next(iter(document.items()))
        if key == "dataframe_split":
            return from_split(value)
        if key in _ROW_KEYS:
            return from_records(value)
        return None

    return decode


def _column_tensors(names: list[str], dtype: np.dtype[Any]) -> Callable[[dict[str, np.ndarray]], np.ndarray | None]:
    """One tensor per signature column, each ``[N]`` or ``[N, 1]`` of exactly the column's
    dtype (no conversion that pyfunc might make otherwise), stacked in signature order."""
    wanted = set(names)

    def stack(values: dict[str, np.ndarray]) -> np.ndarray | None:
        if set(values) != wanted:
            return None
        columns = []
        for name in names:
            array = values[name]
            if array.dtype != dtype or array.ndim not in (1, 2) or (array.ndim == 2 and array.shape[1] != 1):
                return None
            columns.append(array.reshape(-1))
        rows = {len(column) for column in columns}
        if len(rows) != 1 or 0 in rows:
            return None
        stacked = np.column_stack(columns)
        if dtype == np.float64 and not np.isfinite(stacked).all():
            return None  # NaN and infinities: the model's own checks, through pyfunc
        return stacked

    return stack


def _accepts_double(value: object) -> bool:
    # bool is an int to Python but not a number to pandas; huge ints become objects there;
    # infinities (1e999 in JSON) are left to the model's own checks, through pyfunc.
    if type(value) is float:
        return math.isfinite(value)
    return type(value) is int and _INT64[0] <= value <= _INT64[1]


def _accepts_long(value: object) -> bool:
    return type(value) is int and _INT64[0] <= value <= _INT64[1]


def split_rows(output: Any, counts: Sequence[int]) -> list[Any] | None:
    """One batch's predictions cut back into each request's rows, or None if they don't line up."""
    if isinstance(output, np.ndarray) and output.ndim >= 1 and output.shape[0] == sum(counts):
        bounds = np.cumsum(counts)[:-1]
        return list(np.split(output, bounds))
    return None
