"""The Open Inference Protocol's tensors (KServe V2), to and from what pyfunc takes and gives.

Reading checks every size before it allocates or slices: a shape whose element count
disagrees with its data, a ``binary_data_size`` past the end of the body, a BYTES element
whose length prefix runs past its tensor, bytes left over: each is a 400 in words
(:class:`~gateway.errors.MalformedRequest`), never an over-read (Triton's
CVE-2025-23310/23311 class).

Model metadata, decoding and encoding follow MLServer's mlflow runtime, so clients written
for it work unchanged: a column is a tensor of shape ``[-1, 1]`` (long -> INT64, double ->
FP64, string -> BYTES with content type ``str``...), a tensor spec keeps its dtype and
shape; a request is decoded by its ``parameters.content_type`` (``pd``: a frame of one
column per input; ``np``: the one input's array; ``dict``: name -> array; ``str``: the one
input's strings), else by the model's (``pd`` for column signatures, ``np`` for an unnamed
tensor, ``dict`` for named tensors); an array answers as ``output-1``, a frame as one
output per column, a dict as one output per key.
"""

from __future__ import annotations

import base64
import json
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pandas as pd
from mlflow.models import Model
from mlflow.types.schema import ColSpec, DataType, Schema, TensorSpec

from gateway.errors import InvalidInput, MalformedRequest
from gateway.wire.mlflow_scoring import ScoringInput

DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
BYTES = "BYTES"
_MAX_DIMS = 32
_COLUMN_TYPES = {
    DataType.boolean: ("BOOL", "np"),
    DataType.integer: ("INT32", "np"),
    DataType.long: ("INT64", "np"),
    DataType.float: ("FP32", "np"),
    DataType.double: ("FP64", "np"),
    DataType.string: (BYTES, "str"),
    DataType.binary: (BYTES, "base64"),
    DataType.datetime: (BYTES, "datetime"),
}
REQUEST_CONTENT_TYPES = ("pd", "np", "dict", "str")
# Request parameters the protocol itself uses; the rest go to the model as MLflow params.
_RESERVED_PARAMETERS = {"content_type", "headers", "binary_data_output", "binary_data_size", "binary_data"}
OUTPUT_PREFIX = "output-"


@dataclass(slots=True)
class Tensor:
    name: str
    datatype: str
    shape: list[int]
    data: np.ndarray  # numbers in their dtype; BYTES as an object array of str or bytes
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RequestedOutput:
    name: str
    binary: bool | None  # None: as the request's binary_data_output says


@dataclass(slots=True)  # not frozen: made for every request, and frozen dataclasses are slower to make
class Reply:
    """What a request asks of its answer: its ``id`` echoed, which outputs, in binary or not."""

    id: str | None
    outputs: list[RequestedOutput] | None  # None: every output
    binary_outputs: bool = False  # the request's binary_data_output


@dataclass(slots=True)
class InferRequest:
    reply: Reply
    parameters: dict[str, Any]
    inputs: list[Tensor]


# --- reading a request ------------------------------------------------------------------


def parse_request(body: bytes, header_length: int | None) -> InferRequest:
    """The request, from its JSON (and the binary part after ``header_length`` bytes of it)."""
    if header_length is None:
        header, rest = body, b""
    else:
        if header_length < 0 or header_length > len(body):
            raise MalformedRequest(
                f"Inference-Header-Content-Length is {header_length} but the body has {len(body)} bytes"
            )
        header, rest = body[:header_length], body[header_length:]
    try:
        document = orjson.loads(header)
    except orjson.JSONDecodeError as exc:
        raise MalformedRequest(f"The inference request is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise MalformedRequest("The inference request must be a JSON object")
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise MalformedRequest("'id' must be a string")
    parameters = _parameters(document.get("parameters"), "the request")
    raw_inputs = document.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise MalformedRequest("'inputs' must be a non-empty list of tensors")
    view = memoryview(rest)
    offset = 0
    inputs: list[Tensor] = []
    for position, raw in enumerate(raw_inputs):
        tensor, used = _input(raw, position, view[offset:])
        offset += used
        inputs.append(tensor)
    if offset != len(rest):
        raise MalformedRequest(
            f"The binary part has {len(rest)} bytes but the inputs' binary_data_size add up to {offset}"
        )
    names = [tensor.name for tensor in inputs]
    if len(set(names)) != len(names):
        raise MalformedRequest("Input names must be unique")
    reply = Reply(request_id, _outputs(document.get("outputs")), parameters.get("binary_data_output") is True)
    return InferRequest(reply, parameters, inputs)


_FAST_PARAMETERS = _RESERVED_PARAMETERS - {"binary_data_size"}


def column_rows(
    body: bytes, names: Sequence[str], dtype: np.dtype[Any], header_length: int | None = None
) -> tuple[Reply, np.ndarray] | None:
    """A request that is nothing but a column model's columns (in JSON, or in the binary
    part after ``header_length`` bytes of it), read in one step into rows: one per element,
    the columns in ``names`` order, all of ``dtype``. The data plane's fast path for a model
    whose signature is these columns. None for anything else: :func:`parse_request` then
    reads it (and names what is wrong, if anything is).

    An optimisation, never other rules: where it answers, :func:`parse_request` and
    :func:`plain_tensors` would give the same columns of the same dtype (the model's own
    content type, ``pd``; flat ``data`` or ``binary_data_size`` bytes for shape ``[n]`` or
    ``[n, 1]``; no params)."""
    if header_length is None:
        header, rest = memoryview(body), memoryview(b"")
    elif 0 <= header_length <= len(body):
        header, rest = memoryview(body)[:header_length], memoryview(body)[header_length:]
    else:
        return None
    try:
        document = orjson.loads(header)
    except orjson.JSONDecodeError:
        return None
    if type(document) is not dict:
        return None
    request_id, parameters, inputs = document.get("id"), document.get("parameters", {}), document.get("inputs")
    if parameters is None:
        parameters = {}
    if request_id is not None and type(request_id) is not str:
        return None
    if type(parameters) is not dict or not _FAST_PARAMETERS.issuperset(parameters):
        return None
    if parameters.get("content_type", "pd") != "pd" or type(inputs) is not list or len(inputs) != len(names):
        return None
    datatype, allowed = DATATYPE_OF.get(dtype), _KINDS.get(dtype.kind)
    if datatype is None or allowed is None:
        return None
    little = dtype.newbyteorder("<")
    columns: dict[str, list[Any] | np.ndarray] = {}
    rows = -1
    offset = 0  # into the binary part
    for raw in inputs:
        if type(raw) is not dict or raw.get("datatype") != datatype:
            return None
        name, shape, own = raw.get("name"), raw.get("shape"), raw.get("parameters")
        if type(name) is not str or name in columns or type(shape) is not list or len(shape) not in (1, 2):
            return None
        if len(shape) == 2 and (type(shape[1]) is not int or shape[1] != 1):
            return None
        if type(shape[0]) is not int or shape[0] <= 0 or rows not in (-1, shape[0]):
            return None
        rows = shape[0]
        if own is not None and type(own) is not dict:
            return None
        size = own.get("binary_data_size") if own is not None else None
        if size is not None:
            if type(size) is not int or "data" in raw or size != rows * dtype.itemsize or offset + size > len(rest):
                return None
            columns[name] = np.frombuffer(rest[offset : offset + size], dtype=little)
            offset += size
            continue
        data = raw.get("data")
        if type(data) is not list or len(data) != rows or not allowed.issuperset(map(type, data)):
            return None  # nested data, booleans, strings...: parse_request reads it
        columns[name] = data
    if offset != len(rest) or columns.keys() != set(names):
        return None
    try:
        outputs = _outputs(document.get("outputs"))
        if len(rest):  # some columns are bytes: each into its place
            block = np.empty((rows, len(names)), dtype=dtype)
            for position, name in enumerate(names):
                block[:, position] = columns[name]
        else:  # all JSON: one conversion, then laid out as column_stack lays columns out
            block = np.ascontiguousarray(np.array([columns[name] for name in names], dtype=dtype).T)
    except (MalformedRequest, OverflowError):
        return None
    return Reply(request_id, outputs, parameters.get("binary_data_output") is True), block


def _parameters(raw: Any, where: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise MalformedRequest(f"'parameters' of {where} must be a JSON object")
    return raw


def _outputs(raw: Any) -> list[RequestedOutput] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise MalformedRequest("'outputs' must be a list")
    outputs = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise MalformedRequest("each of 'outputs' must be an object with a 'name'")
        parameters = _parameters(item.get("parameters"), f"output '{item['name']}'")
        binary = parameters.get("binary_data")
        if binary is not None and not isinstance(binary, bool):
            raise MalformedRequest(f"'binary_data' of output '{item['name']}' must be true or false")
        outputs.append(RequestedOutput(item["name"], binary))
    return outputs


def _input(raw: Any, position: int, binary: memoryview) -> tuple[Tensor, int]:
    """One input tensor, and how many bytes of the binary part it took."""
    if not isinstance(raw, dict):
        raise MalformedRequest(f"input {position} must be a JSON object")
    name, datatype, shape, count = checked_header(raw.get("name"), raw.get("datatype"), raw.get("shape"), position)
    parameters = _parameters(raw.get("parameters"), f"input '{name}'")
    size = parameters.get("binary_data_size")
    if size is not None:
        if type(size) is not int or size < 0:
            raise MalformedRequest(f"input '{name}': 'binary_data_size' must be an integer >= 0")
        if "data" in raw:
            raise MalformedRequest(f"input '{name}' has both 'data' and 'binary_data_size'")
        if size > len(binary):
            raise MalformedRequest(
                f"input '{name}': binary_data_size is {size} but only {len(binary)} bytes of the body are left"
            )
        data = from_bytes(name, datatype, count, binary[:size])
        used = size
    else:
        if "data" not in raw:
            raise MalformedRequest(f"input '{name}' has neither 'data' nor 'binary_data_size'")
        data = _from_json(name, datatype, count, raw["data"])
        used = 0
    return Tensor(name, datatype, shape, data.reshape(shape), parameters), used


def checked_header(name: Any, datatype: Any, shape: Any, position: int) -> tuple[str, str, list[int], int]:
    """An input's name, datatype and shape once checked (for every protocol: the JSON's and
    gRPC's tensors alike), and how many elements it holds."""
    if not isinstance(name, str) or not name:
        raise MalformedRequest(f"input {position} needs a 'name'")
    if datatype != BYTES and datatype not in DTYPES:
        raise MalformedRequest(f"input '{name}': unknown datatype {datatype!r}; use one of {[*DTYPES, BYTES]}")
    if (
        not isinstance(shape, list)
        or len(shape) > _MAX_DIMS
        or not all(type(d) is int and d >= 0 for d in shape)  # bools are ints to Python
    ):
        raise MalformedRequest(f"input '{name}': 'shape' must be a list of at most {_MAX_DIMS} integers >= 0")
    return name, datatype, shape, math.prod(shape)


def from_bytes(name: str, datatype: str, count: int, raw: memoryview) -> np.ndarray:
    """``count`` elements of ``datatype`` from their little-endian bytes (BYTES elements
    each after a 4-byte length), every size checked against the bytes there are."""
    if datatype == BYTES:
        elements: list[bytes] = []
        offset, end = 0, len(raw)
        while offset < end:
            if end - offset < 4:
                raise MalformedRequest(f"input '{name}': a BYTES element's 4-byte length is cut short")
            (length,) = struct.unpack_from("<I", raw, offset)
            offset += 4
            if length > end - offset:
                raise MalformedRequest(
                    f"input '{name}': a BYTES element says {length} bytes but {end - offset} are left"
                )
            elements.append(bytes(raw[offset : offset + length]))
            offset += length
            if len(elements) > count:
                break
        if len(elements) != count:
            raise MalformedRequest(f"input '{name}': the shape has {count} elements but the bytes hold {len(elements)}")
        array = np.empty(count, dtype=object)
        array[:] = elements
        return array
    dtype = DTYPES[datatype]
    if len(raw) != count * dtype.itemsize:
        raise MalformedRequest(
            f"input '{name}': the shape has {count} elements of {datatype} ({count * dtype.itemsize} bytes) "
            f"but binary_data_size is {len(raw)}"
        )
    array = np.frombuffer(raw, dtype=dtype)
    if datatype == "BOOL" and array.size and not np.isin(raw, (0, 1)).all():  # only 0 and 1 are booleans
        raise MalformedRequest(f"input '{name}': BOOL bytes must be 0 or 1")
    return array.astype(dtype.newbyteorder("="), copy=True)  # owned (the body goes), native order


def _flatten(name: str, data: list[Any], count: int) -> list[Any]:
    """Nested lists' elements in row-major order, at most ``count`` of them read."""
    flat: list[Any] = []
    pending = [iter(data)]
    while pending:
        for item in pending[-1]:
            if isinstance(item, list):
                if len(pending) > _MAX_DIMS:
                    raise MalformedRequest(f"input '{name}': 'data' is nested too deeply")
                pending.append(iter(item))
                break
            flat.append(item)
            if len(flat) > count:
                break
        else:
            pending.pop()
        if len(flat) > count:
            break
    return flat


_NATIVE = {datatype: dtype.newbyteorder("=") for datatype, dtype in DTYPES.items()}
DATATYPE_OF = {dtype: datatype for datatype, dtype in _NATIVE.items()}
_KINDS = {"b": frozenset({bool}), "i": frozenset({int}), "u": frozenset({int}), "f": frozenset({int, float})}
_STRINGS = frozenset({str})


def _from_json(name: str, datatype: str, count: int, data: Any) -> np.ndarray:
    if not isinstance(data, list):
        data = [data]
    kinds = set(map(type, data))  # one pass in C: nested? and which types, for the check below
    if list in kinds:
        data = _flatten(name, data, count)
        kinds = set(map(type, data))
    if len(data) > count:
        raise MalformedRequest(f"input '{name}': 'data' has more elements than the shape's {count}")
    if len(data) != count:
        raise MalformedRequest(f"input '{name}': the shape has {count} elements but 'data' has {len(data)}")
    if datatype == BYTES:
        if not kinds <= _STRINGS:
            raise MalformedRequest(f"input '{name}': BYTES data must be strings")
        array = np.empty(count, dtype=object)
        array[:] = data
        return array
    dtype = _NATIVE[datatype]
    allowed = _KINDS[dtype.kind]
    if not kinds <= allowed:
        names = {kind.__name__ for kind in kinds - allowed}
        raise MalformedRequest(f"input '{name}': {datatype} data cannot hold {', '.join(sorted(names))}")
    try:
        if dtype.kind == "f" and dtype.itemsize < 8:  # a Python float may overflow FP16/FP32
            with np.errstate(over="raise"):
                return np.array(data, dtype=dtype)
        return np.array(data, dtype=dtype)  # an int out of range raises OverflowError itself
    except (OverflowError, FloatingPointError, ValueError) as exc:
        raise MalformedRequest(f"input '{name}': a value does not fit {datatype}") from exc


# --- the model's metadata ---------------------------------------------------------------


def model_content_type(schema: Schema | None) -> str:
    if schema is not None and schema.is_tensor_spec():
        return "dict" if schema.has_input_names() else "np"
    return "pd"


def metadata_tensors(schema: Schema | None, prefix: str) -> list[dict[str, Any]]:
    if schema is None:
        return []
    tensors = []
    for index, spec in enumerate(schema.inputs):
        if isinstance(spec, TensorSpec):
            datatype, content_type, shape = _datatype(spec.type), "np", list(spec.shape)
        elif isinstance(spec, ColSpec) and isinstance(spec.type, DataType) and spec.type in _COLUMN_TYPES:
            (datatype, content_type), shape = _COLUMN_TYPES[spec.type], [-1, 1]
        else:  # arrays, objects, maps, any: JSON in BYTES, as MLServer describes them
            datatype, content_type, shape = BYTES, "pd_json", [-1, 1]
        tensors.append(
            {
                "name": spec.name or f"{prefix}{index}",
                "datatype": datatype,
                "shape": shape,
                "parameters": {"content_type": content_type},
            }
        )
    return tensors


def model_metadata(name: str, versions: list[str], mlmodel: Model | None) -> dict[str, Any]:
    signature = mlmodel.signature if mlmodel is not None else None
    inputs = signature.inputs if signature is not None else None
    return {
        "name": name,
        "versions": versions,
        "platform": "mlflow",
        "inputs": metadata_tensors(inputs, "input-"),
        "outputs": metadata_tensors(signature.outputs if signature is not None else None, OUTPUT_PREFIX),
        "parameters": {"content_type": model_content_type(inputs)},
    }


def _datatype(dtype: np.dtype[Any]) -> str:
    if dtype.kind in "OSU":
        return BYTES
    known = DATATYPE_OF.get(dtype)  # every answer asks: a look-up first, then any byte order
    if known is not None:
        return known
    for datatype, candidate in DTYPES.items():
        if candidate.kind == dtype.kind and candidate.itemsize == dtype.itemsize:
            return datatype
    raise InvalidInput(f"the model answered with {dtype}, which the Open Inference Protocol has no datatype for")


# --- to the model -----------------------------------------------------------------------


def to_model_input(request: InferRequest, mlmodel: Model) -> ScoringInput:
    """What ``PyFuncModel.predict`` takes for this request, with its params."""
    schema = mlmodel.get_input_schema()  # type: ignore[no-untyped-call]
    declared = {tensor["name"]: tensor for tensor in metadata_tensors(schema, "input-")}
    content_type = request.parameters.get("content_type") or model_content_type(schema)
    if content_type not in REQUEST_CONTENT_TYPES:
        raise InvalidInput(f"unknown request content_type {content_type!r}; use one of {list(REQUEST_CONTENT_TYPES)}")
    values = {tensor.name: _decoded(tensor, declared.get(tensor.name)) for tensor in request.inputs}
    params = {k: v for k, v in request.parameters.items() if k not in _RESERVED_PARAMETERS} or None
    if content_type == "pd":
        return ScoringInput(_frame(values), params)
    if content_type == "dict":
        return ScoringInput(values, params)
    if len(values) != 1:
        raise InvalidInput(f"content_type {content_type!r} takes exactly one input, not {len(values)}")
    (value,) = values.values()
    if content_type == "str":
        return ScoringInput([str(item) for item in np.asarray(value, dtype=object).ravel()], params)
    return ScoringInput(value, params)


def plain_tensors(request: InferRequest, mlmodel: Model) -> dict[str, np.ndarray] | None:
    """The inputs as named arrays, where :func:`to_model_input` would hand pyfunc just those
    arrays (the model's own content type, numbers only, no params): the data plane's fast
    path may then take them. None: only pyfunc reads this request."""
    own = model_content_type(mlmodel.get_input_schema())  # type: ignore[no-untyped-call]
    content_type = request.parameters.get("content_type") or own
    if content_type != own or content_type not in ("pd", "np"):
        return None
    if any(key not in _RESERVED_PARAMETERS for key in request.parameters):
        return None  # params go to the model: pyfunc
    if any(tensor.datatype == BYTES for tensor in request.inputs):
        return None
    tensors = {tensor.name: tensor.data for tensor in request.inputs}
    return tensors if len(tensors) == len(request.inputs) else None


def _decoded(tensor: Tensor, declared: dict[str, Any] | None) -> Any:
    content_type = tensor.parameters.get("content_type")
    if content_type is None and declared is not None:
        content_type = declared["parameters"]["content_type"]
    if tensor.datatype != BYTES:
        return tensor.data
    elements = tensor.data
    decoded: list[Any]
    try:
        if content_type == "base64":
            decoded = [base64.b64decode(item, validate=True) for item in elements.ravel()]
        elif content_type == "pd_json":
            decoded = [orjson.loads(item) for item in elements.ravel()]
        else:  # "str", "datetime" (pandas reads the strings) or none given: text
            decoded = [item.decode("utf-8") if isinstance(item, bytes) else item for item in elements.ravel()]
    except (ValueError, orjson.JSONDecodeError) as exc:  # binascii.Error, UnicodeDecodeError too
        raise InvalidInput(f"input '{tensor.name}': its BYTES are not {content_type or 'UTF-8 text'}: {exc}") from exc
    array = np.empty(len(decoded), dtype=object)
    array[:] = decoded
    return array.reshape(elements.shape)


def _frame(values: dict[str, Any]) -> pd.DataFrame:
    columns: dict[str, Any] = {}
    for name, value in values.items():
        array = np.asarray(value)
        if array.ndim == 0:
            array = array.reshape(1)
        if array.ndim == 2 and array.shape[1] == 1:
            columns[name] = array[:, 0]
        elif array.ndim == 1:
            columns[name] = array
        else:  # a tensor per row
            columns[name] = list(array)
    lengths = {len(column) for column in columns.values()}
    if len(lengths) > 1:
        raise InvalidInput(f"the inputs have different numbers of rows ({sorted(lengths)}); a frame needs one")
    return pd.DataFrame(columns)


# --- from the model ---------------------------------------------------------------------


@dataclass(slots=True)
class Output:
    name: str
    array: np.ndarray  # numbers, or an object array of str / bytes for BYTES
    datatype: str
    content_type: str | None  # None: the output says none (a frame's column of numbers)


def outputs_of(raw: Any) -> tuple[list[Output], str]:
    """The model's answer as named tensors, and the answer's content type: what MLServer's
    codecs make of the same answer (its mlflow runtime picks one by the answer's type), content
    types included, so a client that decodes by them reads the same from both.

    - an array (or anything else numpy reads): ``output-1``, content type ``np``, strings too
      (MLServer's NumpyCodec);
    - a dict: one output per key, each ``np`` (its TensorDictCodec, each value by NumpyCodec);
    - a list of strings: ``output-1``, ``str`` (its StringCodec);
    - a frame (or a series): one output per column, text columns ``str``, numbers with no
      content type at all, and a column holding anything else (dicts, lists, a None among
      strings) each value as its JSON text, ``pd_json`` (its PandasCodec).
    """
    if isinstance(raw, pd.DataFrame):
        return [_column(str(column), raw[column]) for column in raw.columns], "pd"
    if isinstance(raw, pd.Series):
        return [_column(str(raw.name) if raw.name is not None else f"{OUTPUT_PREFIX}1", raw)], "pd"
    if isinstance(raw, dict):
        return [_output(str(key), value) for key, value in raw.items()], "dict"
    if isinstance(raw, list) and raw and all(isinstance(item, str) for item in raw):
        return [_output(f"{OUTPUT_PREFIX}1", raw, text="str")], "str"
    return [_output(f"{OUTPUT_PREFIX}1", raw)], "np"


def _column(name: str, column: pd.Series) -> Output:
    values = column.to_numpy()
    if values.dtype == object and not all(isinstance(item, str | bytes) for item in values):
        texts = np.empty(len(values), dtype=object)
        texts[:] = [_json_text(item) for item in values]
        return Output(name, texts.reshape(-1, 1), BYTES, "pd_json")
    output = _output(name, values, text="str")
    if output.datatype != BYTES:
        output.content_type = None
    return output


def _output(name: str, value: Any, *, text: str = "np") -> Output:
    """``value`` as one output; BYTES (strings, and anything that is not a number) with the
    content type ``text``, numbers with ``np``."""
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if array.ndim == 0:
        array = array.reshape(1)
    if array.ndim == 1:  # one value per row: a batch of [N, 1], as MLServer answers
        array = array.reshape(-1, 1)
    if array.dtype.kind in "OSU" or array.dtype.kind not in "biuf":
        texts = np.empty(array.size, dtype=object)
        texts[:] = [_text(item) for item in array.ravel()]
        return Output(name, texts.reshape(array.shape), BYTES, text)
    return Output(name, array, _datatype(array.dtype), "np")


def _json_text(item: Any) -> str:
    """One value of a ``pd_json`` column, written as MLServer writes it (``json.dumps``,
    compact, non-ASCII kept); what JSON has no type for (numpy arrays and numbers, dates) as
    its nearest JSON value rather than an error; a missing value (NaN, None) is ``null``, as
    MLServer's codec makes a NaN."""
    if isinstance(item, float) and not math.isfinite(item):
        item = None
    return json.dumps(item, ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_jsonable)


def _jsonable(item: Any) -> Any:
    if isinstance(item, np.ndarray | np.generic):
        return item.tolist()
    text = _text(item)
    return text.decode("utf-8", "replace") if isinstance(text, bytes) else text


def _text(item: Any) -> str | bytes:
    if isinstance(item, bytes | str):
        return item
    if hasattr(item, "isoformat"):
        return str(item.isoformat())
    return str(item)


def chosen_outputs(request: Reply, raw: Any) -> tuple[list[tuple[Output, bool | None]], str]:
    """The outputs the request asked for (all of them if it named none), in its order, each
    with whether it asked for it in binary; and the answer's content type."""
    outputs, content_type = outputs_of(raw)
    if request.outputs is None:
        return [(output, None) for output in outputs], content_type
    by_name = {output.name: output for output in outputs}
    missing = [wanted.name for wanted in request.outputs if wanted.name not in by_name]
    if missing:
        raise InvalidInput(f"unknown output(s) {missing}; this model answers {list(by_name)}")
    return [(by_name[wanted.name], wanted.binary) for wanted in request.outputs], content_type


def encode_response(request: Reply, raw: Any, *, model_name: str, model_version: str) -> tuple[bytes, bytes]:
    """The answer's JSON, and its binary part (empty unless an output was asked for in binary)."""
    chosen, content_type = chosen_outputs(request, raw)
    binary_parts: list[bytes] = []
    rendered = []
    for output, binary in chosen:
        entry: dict[str, Any] = {"name": output.name, "datatype": output.datatype, "shape": list(output.array.shape)}
        parameters: dict[str, Any] = {} if output.content_type is None else {"content_type": output.content_type}
        if binary if binary is not None else request.binary_outputs:
            part = to_bytes(output)
            parameters["binary_data_size"] = len(part)
            binary_parts.append(part)
        else:
            entry["data"] = _to_json(output)
        if parameters:  # none at all rather than an empty object, as MLServer answers
            entry["parameters"] = parameters
        rendered.append(entry)
    document: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request.id is not None:
        document["id"] = request.id
    document["parameters"] = {"content_type": content_type}
    document["outputs"] = rendered
    return orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY), b"".join(binary_parts)


def to_bytes(output: Output) -> bytes:
    """An output's little-endian bytes (BYTES elements each after a 4-byte length)."""
    if output.datatype != BYTES:
        return output.array.astype(DTYPES[output.datatype], copy=False).tobytes()
    parts = []
    for item in output.array.ravel():
        data = item if isinstance(item, bytes) else str(item).encode("utf-8")
        parts.append(struct.pack("<I", len(data)))
        parts.append(data)
    return b"".join(parts)


def _to_json(output: Output) -> Any:
    flat = output.array.ravel()
    if output.datatype != BYTES:
        return np.ascontiguousarray(flat)
    return [item.decode("utf-8", "replace") if isinstance(item, bytes) else item for item in flat]
