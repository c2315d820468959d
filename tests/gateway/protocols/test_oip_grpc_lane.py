"""gRPC's column lane: a ModelInferRequest of nothing but a column model's columns in
``raw_input_contents`` is read in one step into rows, or declined. Where it reads, the full
parse reads the same (the same rows of the same dtype for the fast path, the same reply);
anything else is declined and the full parse decides, as before the lane."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlflow.models import Model, ModelSignature
from mlflow.types.schema import ColSpec, Schema

from gateway.dataplane.fastpath import FastPath, _column_tensors
from gateway.errors import MalformedRequest
from gateway.protocols import oip_grpc
from gateway.protocols.proto import grpc_service_pb2 as pb
from gateway.wire import oip_codec

_COLUMNS = ["a", "b", "c"]
_DTYPES = {"double": np.dtype(np.float64), "long": np.dtype(np.int64)}
_DATATYPES = {"double": "FP64", "long": "INT64"}
_VALUES = {
    "double": st.floats(allow_nan=True, allow_infinity=True, width=64),  # the fast path declines NaN itself
    "long": st.integers(-(2**63), 2**63 - 1),
}


def _model(column_type: str) -> Model:
    model = Model()
    model.signature = ModelSignature(inputs=Schema([ColSpec(column_type, name) for name in _COLUMNS]))
    return model


@st.composite
def _requests(draw: st.DrawFn, column_type: str) -> pb.ModelInferRequest:
    """tritonclient's request for the model's columns (any order, [n, 1] or [n], raw bytes),
    then a few changes that may take it off the lane: another datatype or shape, bytes of the
    wrong size, a missing, extra or repeated input, typed contents, parameters, ids, outputs."""
    rows = draw(st.integers(min_value=1, max_value=3))
    dtype = _DTYPES[column_type]
    message = pb.ModelInferRequest(model_name="m", id=draw(st.sampled_from(["", "request-1"])))
    for name in draw(st.permutations(_COLUMNS)):
        values = np.array(draw(st.lists(_VALUES[column_type], min_size=rows, max_size=rows)), dtype=dtype)
        shape = draw(st.sampled_from([[rows, 1], [rows]]))
        message.inputs.add(name=name, datatype=_DATATYPES[column_type], shape=shape)
        message.raw_input_contents.append(values.astype(dtype.newbyteorder("<")).tobytes())
    for _ in range(draw(st.integers(min_value=0, max_value=2))):
        position = draw(st.integers(min_value=0, max_value=len(_COLUMNS) - 1))
        tensor = message.inputs[position]
        change = draw(st.integers(min_value=0, max_value=9))
        if change == 0:
            tensor.datatype = draw(st.sampled_from(["FP64", "INT64", "FP32", "BOOL", "BYTES", "NOPE"]))
        elif change == 1:
            del tensor.shape[:]
            tensor.shape.extend(draw(st.sampled_from([[2, 1, 1], [0], [0, 1], [2, 2], [], [rows + 1], [-1]])))
        elif change == 2:
            message.raw_input_contents[position] = message.raw_input_contents[position] + b"\0" * draw(
                st.sampled_from([1, 8])
            )
        elif change == 3:
            del message.raw_input_contents[position]
        elif change == 4:
            tensor.name = draw(st.sampled_from([*_COLUMNS, "d", ""]))
        elif change == 5:
            tensor.contents.fp64_contents.extend([1.0] * rows)
        elif change == 6:
            key = draw(st.sampled_from(["content_type", "binary_data_size", "temperature"]))
            tensor.parameters[key].string_param = draw(st.sampled_from(["pd", "np"]))
        elif change == 7:
            keys = ["content_type", "temperature", "binary_data_output"]
            for key in draw(st.lists(st.sampled_from(keys), min_size=1, max_size=3, unique=True)):
                value = message.parameters[key]
                if draw(st.booleans()):
                    value.string_param = draw(st.sampled_from(["pd", "np", ""]))
                else:
                    value.int64_param = 1
        elif change == 8:
            message.outputs.add(name=draw(st.sampled_from(["output-0", "nope"])))
        elif change == 9:
            extra = message.inputs.add(name=draw(st.sampled_from([*_COLUMNS, "d"])), datatype=tensor.datatype)
            extra.shape.extend(tensor.shape)
            message.raw_input_contents.append(message.raw_input_contents[0])
    return message


@pytest.mark.parametrize("column_type", list(_DTYPES))
@settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_lane_declines_or_reads_what_the_full_parse_reads(column_type: str, data: st.DataObject) -> None:
    message = data.draw(_requests(column_type))
    dtype = _DTYPES[column_type]
    fast = FastPath(lambda document: None, lambda rows: rows, tensors=_column_tensors(_COLUMNS, dtype))
    rows = oip_grpc.column_rows(message, _COLUMNS, dtype)
    if rows is None:
        return  # declining is always allowed: the full parse reads it
    request = oip_grpc.parse_request(message)  # must not raise where the lane read it
    tensors = oip_codec.plain_tensors(request, _model(column_type))
    assert tensors is not None, "the lane read a request the fast path would not take"
    expected = fast.from_tensors(tensors)
    if expected is None:  # only NaN or infinities, which the fast path leaves to pyfunc itself
        assert dtype == np.float64 and not np.isfinite(rows).all()
        return
    assert rows.dtype == expected.dtype and rows.flags.c_contiguous and rows.flags.writeable
    np.testing.assert_array_equal(rows, expected)
    assert oip_grpc.reply_of(message) == request.reply


def test_tritonclients_request_takes_the_lane_in_signature_order() -> None:
    values = np.array([[1.5, -2.0, 3.25], [4.0, 5.5, -6.0]])
    message = pb.ModelInferRequest(model_name="m", id="r")
    for position in (2, 0, 1):  # any order of inputs
        message.inputs.add(name=_COLUMNS[position], datatype="FP64", shape=[2, 1])
        message.raw_input_contents.append(values[:, position].astype("<f8").tobytes())
    message.parameters["content_type"].string_param = "pd"
    rows = oip_grpc.column_rows(message, _COLUMNS, np.dtype(np.float64))
    assert rows is not None
    np.testing.assert_array_equal(rows, values)
    assert oip_grpc.reply_of(message) == oip_codec.Reply("r", None)


def test_a_request_the_full_parse_refuses_is_declined() -> None:
    message = pb.ModelInferRequest(model_name="m")
    for name in (_COLUMNS[0], _COLUMNS[0], _COLUMNS[1]):
        message.inputs.add(name=name, datatype="FP64", shape=[1])
        message.raw_input_contents.append(np.zeros(1).tobytes())
    assert oip_grpc.column_rows(message, _COLUMNS, np.dtype(np.float64)) is None
    with pytest.raises(MalformedRequest, match="unique"):
        oip_grpc.parse_request(message)


def test_only_number_columns_take_the_lane() -> None:
    """BOOL bytes have a check of their own (0 or 1) in the full parse; no columns, nothing."""
    message = pb.ModelInferRequest(model_name="m")
    message.inputs.add(name="a", datatype="BOOL", shape=[1])
    message.raw_input_contents.append(b"\x02")
    assert oip_grpc.column_rows(message, ["a"], np.dtype(np.bool_)) is None
    with pytest.raises(MalformedRequest, match="0 or 1"):
        oip_grpc.parse_request(message)
    assert oip_grpc.column_rows(pb.ModelInferRequest(model_name="m"), [], np.dtype(np.float64)) is None
