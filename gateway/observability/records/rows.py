"""A record as a row of the inference tables (``tables.py``): the columns every row has, its
inputs and outputs as JSON text in one shape whatever the request's format, and typed list
columns from the version's signature.

The shape of ``inputs`` and ``outputs`` (records orient): a list of row objects where the
body names its columns (``dataframe_split``, ``dataframe_records``, ``inputs`` as columns or
rows, CSV); nested lists for tensors; ``{name: nested lists}`` for named tensors (the Open
Inference Protocol's, reshaped). ``outputs`` is the answer's ``predictions`` (MLflow) or its
tensors (the Open Inference Protocol), in the same shape: one element per request row.

Typed columns, where the signature's inputs (outputs) are columns: ``input_<name>`` holds the
column's values as a list, one element per request row, in the column's Arrow type (MLflow's
``long`` is ``int64``, ``double`` ``float64``...); an unnamed column is named by its position
(``output_0``). A value of the wrong type makes that list null (the JSON text keeps it), and a
redacted column (``GATEWAY_RECORDS_REDACT``) is null throughout. Types that are not scalars
(arrays, objects) have no typed column: their values are in the JSON text.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import pyarrow as pa

from gateway.observability.records.events import route_key_hash
from gateway.observability.records.record import InferenceRecord, LabelRecord
from gateway.observability.records.redaction import base_media_type, recorded_inputs, recorded_outputs

# Arms as the tables name them: a version a request named itself (by number or alias) is pinned.
ARMS = {"default": "default", "canary": "canary", "shadow": "shadow"}
PINNED = "pinned"

# MLflow's scalar DataTypes (mlflow.types.DataType's names) as Arrow types.
_ARROW_TYPES: dict[str, pa.DataType] = {
    "boolean": pa.bool_(),
    "integer": pa.int32(),
    "long": pa.int64(),
    "float": pa.float32(),
    "double": pa.float64(),
    "string": pa.string(),
    "binary": pa.binary(),
    "datetime": pa.timestamp("us"),
}

PREDICTION_FIELDS: list[pa.Field] = [
    pa.field("request_id", pa.string(), nullable=False),
    pa.field("time", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("model", pa.string(), nullable=False),
    pa.field("version", pa.string(), nullable=False),
    pa.field("alias", pa.string()),
    pa.field("arm", pa.string(), nullable=False),
    pa.field("protocol", pa.string(), nullable=False),
    pa.field("route", pa.string()),
    pa.field("media_type", pa.string()),
    pa.field("status", pa.int32(), nullable=False),
    pa.field("error_code", pa.string()),
    pa.field("error", pa.string()),
    pa.field("latency_ms", pa.float64(), nullable=False),
    pa.field("queue_ms", pa.float64()),
    pa.field("predict_ms", pa.float64()),
    pa.field("key_id", pa.string()),
    pa.field("route_key_hash", pa.string()),
    pa.field("trace_id", pa.string()),
    pa.field("replica", pa.string(), nullable=False),
    pa.field("inputs", pa.string()),
    pa.field("inputs_omitted", pa.string()),
    pa.field("outputs", pa.string()),
    pa.field("outputs_omitted", pa.string()),
]

LABEL_SCHEMA = pa.schema(
    [
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("model", pa.string()),
        pa.field("version", pa.string()),
        pa.field("label", pa.string(), nullable=False),
        pa.field("received_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("replica", pa.string(), nullable=False),
        pa.field("row", pa.int32(), nullable=False),  # last: files written before it read alike
    ]
)


PREDICTION_NAMES: tuple[str, ...] = tuple(field.name for field in PREDICTION_FIELDS)
LABEL_NAMES: tuple[str, ...] = tuple(LABEL_SCHEMA.names)

# A typed column: its name, its key in the rows (a column's name, or its position), its Arrow
# type, and the plain-Python check that a value fits it (None: asked of pa.array). The check is
# found once here: a DataType's hash is a str() of it, so looking one up per value cost more
# than the rest of a row.
TypedSpec = tuple[str, str | int, pa.DataType, Any]


@dataclass(frozen=True, slots=True)
class TypedColumns:
    """The typed columns of a version's signature, inputs then outputs (``TypedSpec`` each)."""

    inputs: tuple[TypedSpec, ...]
    outputs: tuple[TypedSpec, ...]

    def fields(self) -> list[pa.Field]:
        return [pa.field(name, pa.list_(kind)) for name, _, kind, _ in (*self.inputs, *self.outputs)]

    def names(self) -> tuple[str, ...]:
        """A prediction's columns in order: the fixed ones, then these."""
        return (*PREDICTION_NAMES, *(name for name, _, _, _ in (*self.inputs, *self.outputs)))


NO_COLUMNS = TypedColumns((), ())


def typed_columns(signature: Any) -> TypedColumns:
    """The typed columns of a ModelSignature (None, or tensors: none)."""
    if signature is None:
        return NO_COLUMNS
    return TypedColumns(_specs(getattr(signature, "inputs", None), "input_"), _specs(signature.outputs, "output_"))


def _specs(schema: Any, prefix: str) -> tuple[TypedSpec, ...]:
    if schema is None or schema.is_tensor_spec():
        return ()
    found: list[TypedSpec] = []
    for position, spec in enumerate(schema.inputs):
        kind = _ARROW_TYPES.get(getattr(getattr(spec, "type", None), "name", ""))
        if kind is None:
            continue
        key: str | int = spec.name if spec.name is not None else position
        found.append((f"{prefix}{key}", key, kind, _CHECKS.get(kind)))
    return tuple(found)


@dataclass(frozen=True, slots=True)
class Partition:
    """Where a row goes: its folder's segments under the table's root."""

    segments: tuple[str, ...]


def prediction_partition(model: str, version: str, day: str) -> Partition:
    return Partition(("predictions", f"model={_segment(model)}", f"version={_segment(version)}", f"date={day}"))


class Partitions:
    """Partitions and days looked up once (the writer's: every record needs its own)."""

    def __init__(self) -> None:
        self._days: dict[int, str] = {}
        self._partitions: dict[tuple[str, str, str], Partition] = {}

    def day(self, moment: float) -> str:
        number = int(moment // 86400)
        found = self._days.get(number)
        if found is None:
            if len(self._days) > 64:
                self._days.clear()
            found = self._days[number] = day_of(moment)
        return found

    def prediction(self, model: str, version: str, moment: float) -> Partition:
        key = (model, version, self.day(moment))
        found = self._partitions.get(key)
        if found is None:
            if len(self._partitions) > 10_000:
                self._partitions.clear()
            found = self._partitions[key] = prediction_partition(*key)
        return found


def label_partition(day: str) -> Partition:
    return Partition(("labels", f"date={day}"))


def _segment(value: str) -> str:
    """A partition value as a folder name: what a path cannot hold is %-escaped, as Hive does
    (a model name may hold ``/``; the row's own column keeps the name as it is)."""
    out = []
    for char in value:
        if char in '/\\%=:*?"<>|#' or ord(char) < 32 or ord(char) == 127:
            out.append("".join(f"%{byte:02X}" for byte in char.encode("utf-8")))
        else:
            out.append(char)
    text = "".join(out)
    return "%2E" + text[1:] if text.startswith(".") else text  # never a hidden folder


def day_of(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d")


def prediction_row(
    record: InferenceRecord, *, redact: frozenset[str], columns: TypedColumns, replica: str
) -> dict[str, Any]:
    """One record as a row (typed columns included), by column name."""
    values = prediction_values(record, redact=redact, columns=columns, replica=replica)
    return dict(zip(columns.names(), values, strict=True))


def prediction_values(
    record: InferenceRecord, *, redact: frozenset[str], columns: TypedColumns, replica: str
) -> tuple[Any, ...]:
    """One record's row as a tuple, in the columns' order (``TypedColumns.names``): what the
    table sink keeps until it makes a row group of many, a column at a time."""
    inputs = recorded_inputs(record.request, media_type=record.media_type, protocol=record.protocol, redact=redact)
    input_rows = _shaped(inputs.value, record.protocol, "inputs") if inputs.value is not None else None
    if record.response or record.error_code is None:
        outputs = recorded_outputs(record.response, redact=redact)
        output_rows = _shaped(outputs.value, record.protocol, "outputs") if outputs.value is not None else None
        outputs_omitted = outputs.omitted
    else:  # failed: no answer to keep (the error's code says why)
        output_rows, outputs_omitted = None, None
    media_type = _MEDIA_TYPES.get(record.media_type)
    if media_type is None:
        if len(_MEDIA_TYPES) > 256:
            _MEDIA_TYPES.clear()
        media_type = _MEDIA_TYPES[record.media_type] = base_media_type(record.media_type)
    row = (
        record.request_id,
        int(record.time * 1_000_000),
        record.model,
        str(record.version),
        record.alias,
        ARMS.get(record.arm or "", PINNED),
        record.protocol,
        record.route,
        media_type or None,
        record.status,
        record.error_code,
        record.error,
        record.latency_seconds * 1000,
        _ms(record.queue_seconds),
        _ms(record.predict_seconds),
        record.key_id,
        route_key_hash(record.route_key),
        record.trace_id,
        replica,
        _json(input_rows) if inputs.value is not None else None,
        inputs.omitted,
        _json(output_rows) if output_rows is not None else None,
        outputs_omitted,
    )
    if not columns.inputs and not columns.outputs:
        return row
    return (*row, *_typed_all(input_rows, columns.inputs, redact), *_typed_all(output_rows, columns.outputs, redact))


# A request's media type as received, by its base (``application/json; format=pandas-split``
# -> ``application/json``): a handful of distinct values, looked up rather than parsed each time.
_MEDIA_TYPES: dict[str, str] = {}


def label_row(label: LabelRecord, *, replica: str) -> dict[str, Any]:
    """A label as a row, by column name."""
    return dict(zip(LABEL_NAMES, label_values(label, replica=replica), strict=True))


def label_values(label: LabelRecord, *, replica: str) -> tuple[Any, ...]:
    """A label's row as a tuple, in ``LABEL_SCHEMA``'s order."""
    return (
        label.request_id,
        label.model,
        label.version,
        _json(label.label),
        int(label.received_at * 1_000_000),
        replica,
        label.row,
    )


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def _json(value: Any) -> str:
    try:
        return orjson.dumps(value).decode("utf-8")
    except TypeError:  # an integer past 64 bits, say: the standard library writes any JSON
        import json

        return json.dumps(value)


def _shaped(value: Any, protocol: str, side: str) -> Any:
    """A body's parsed value in the tables' shape (see the module's doc)."""
    if not isinstance(value, dict):
        return value
    if protocol == "oip":
        tensors = value.get(side)
        if isinstance(tensors, list) and all(isinstance(t, dict) and "name" in t for t in tensors):
            shaped = {str(t["name"]): _reshaped(t.get("data"), t.get("shape")) for t in tensors}
            if len(shaped) == 1:
                return next(iter(shaped.values()))
            return _rows_of_columns(shaped)
        return value
    if "predictions" in value and len(value) == 1:  # MLflow's answer
        return _rows_of_columns(value["predictions"])
    if "dataframe_split" in value:
        split = value["dataframe_split"]
        if isinstance(split, dict) and isinstance(split.get("columns"), list) and isinstance(split.get("data"), list):
            columns = split["columns"]
            return [dict(zip(columns, row, strict=False)) if isinstance(row, list) else row for row in split["data"]]
        return split
    for key in ("dataframe_records", "instances", "inputs"):
        if key in value:
            return _rows_of_columns(value[key])
    if isinstance(value.get("columns"), list) and isinstance(value.get("data"), list):  # CSV
        columns = value["columns"]
        return [dict(zip(columns, row, strict=False)) for row in value["data"]]
    return value


def _rows_of_columns(value: Any) -> Any:
    """``{column: [values]}`` (all of one length) as row objects; anything else as it is."""
    if isinstance(value, dict) and value and all(isinstance(v, list) for v in value.values()):
        lengths = {len(v) for v in value.values()}
        if len(lengths) == 1:
            (length,) = lengths
            names = list(value)
            return [{name: value[name][i] for name in names} for i in range(length)]
    return value


def _reshaped(data: Any, shape: Any) -> Any:
    """A tensor's flat data in its shape, as nested lists (data already nested stays so)."""
    if not isinstance(data, list) or not isinstance(shape, list) or len(shape) < 2:
        return data
    if any(isinstance(item, list) for item in data):
        return data
    size = 1
    for dim in shape:
        if not isinstance(dim, int) or dim < 0:
            return data
        size *= dim
    if size != len(data):
        return data
    nested: list[Any] = data
    for dim in reversed(shape[1:]):
        nested = [nested[i : i + dim] for i in range(0, len(nested), dim)]
    return nested


def _typed_all(rows: Any, specs: tuple[TypedSpec, ...], redact: frozenset[str]) -> list[list[Any] | None]:
    """The typed columns' values from one side's rows, a list per column (None for one that is
    redacted, or whose values are not all of its type). The rows' shape is looked at once for
    all the columns, and a one-row request (most) makes no list to check its one value."""
    if not isinstance(rows, list):
        return [None] * len(specs)
    one = rows[0] if len(rows) == 1 else None
    dicts: bool | None = None  # whether every row is an object: asked once, if a column is named
    out: list[list[Any] | None] = []
    for _, key, kind, check in specs:
        if isinstance(key, str):
            if key in redact:
                out.append(None)
                continue
            if dicts is None:
                dicts = all(map(_is_dict, rows))  # map over a C check: no generator frame a row
            if not dicts:
                out.append(None)
                continue
            if one is not None:
                value = one.get(key)
                out.append([value] if (check(value) if check is not None else _fits([value], kind)) else None)
                continue
            values = [row.get(key) for row in rows]
        else:  # an unnamed column: rows are its values (or lists, by position)
            values = [row[key] if isinstance(row, list) and len(row) > key else row for row in rows]
            if key and not all(isinstance(row, list) for row in rows):
                out.append(None)
                continue
        # plain Python: pa.array per value list cost more than the rest of a row
        fits = all(map(check, values)) if check is not None else _fits(values, kind)
        out.append(values if fits else None)
    return out


def _fits(values: list[Any], kind: pa.DataType) -> bool:
    """Whether Arrow takes the values as the type (for the types with no plain check)."""
    try:
        pa.array(values, type=kind)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError, ValueError):
        return False
    return True


# Whether a value fits a column of the type (None, a missing value, fits every one).
def _number(value: Any) -> bool:
    return (type(value) is float) or value is None or (type(value) is int and -(2**63) <= value < 2**63)


def _int64(value: Any) -> bool:
    return value is None or (type(value) is int and -(2**63) <= value < 2**63)


def _int32(value: Any) -> bool:
    return value is None or (type(value) is int and -(2**31) <= value < 2**31)


_is_dict = dict.__instancecheck__

_CHECKS: dict[pa.DataType, Any] = {
    pa.float64(): _number,
    pa.float32(): _number,
    pa.int64(): _int64,
    pa.int32(): _int32,
    pa.bool_(): lambda value: value is None or type(value) is bool,
    pa.string(): lambda value: value is None or type(value) is str,
}
