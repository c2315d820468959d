"""The codec alone: BYTES tensors both ways, content types, frames and dicts as outputs.
Triton's own serialisers write and read the bytes, so the wire format is theirs, not ours."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlflow.models import Model, ModelSignature
from mlflow.types.schema import ColSpec, Schema, TensorSpec
from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor

from gateway.dataplane.fastpath import FastPath, _column_tensors
from gateway.wire import oip_codec


def _binary_request(inputs: list[tuple[str, str, list[int], bytes]], **extra: object) -> tuple[bytes, int]:
    header = {
        "inputs": [
            {"name": name, "datatype": datatype, "shape": shape, "parameters": {"binary_data_size": len(raw)}}
            for name, datatype, shape, raw in inputs
        ],
        **extra,
    }
    head = json.dumps(header).encode()
    return head + b"".join(raw for *_, raw in inputs), len(head)


def _model(inputs: Schema) -> Model:
    model = Model()
    model.signature = ModelSignature(inputs=inputs)
    return model


def test_binary_bytes_and_numbers_are_read_as_triton_writes_them() -> None:
    words = np.array([b"alpha", b"", "βeta".encode()], dtype=object)
    numbers = np.arange(3, dtype=np.float32)
    body, length = _binary_request(
        [
            ("word", "BYTES", [3, 1], serialize_byte_tensor(words).item()),
            ("number", "FP32", [3, 1], numbers.tobytes()),
        ]
    )
    request = oip_codec.parse_request(body, length)
    schema = Schema([ColSpec("string", "word"), ColSpec("float", "number")])
    scoring = oip_codec.to_model_input(request, _model(schema))  # 'pd', as the signature says
    assert list(scoring.data["word"]) == ["alpha", "", "βeta"]  # 'str' from the signature: text
    np.testing.assert_array_equal(scoring.data["number"].to_numpy(), numbers)


def test_content_types_np_dict_and_str() -> None:
    tensor_schema = Schema([TensorSpec(np.dtype(np.float64), (-1, 2))])
    body = {"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [2, 2], "data": [1, 2, 3, 4]}]}
    request = oip_codec.parse_request(json.dumps(body).encode(), None)
    as_array = oip_codec.to_model_input(request, _model(tensor_schema)).data
    np.testing.assert_array_equal(as_array, [[1.0, 2.0], [3.0, 4.0]])
    body["parameters"] = {"content_type": "dict", "temperature": 0.5}
    request = oip_codec.parse_request(json.dumps(body).encode(), None)
    as_dict = oip_codec.to_model_input(request, _model(tensor_schema))
    assert list(as_dict.data) == ["input-0"] and as_dict.params == {"temperature": 0.5}
    strings = {
        "parameters": {"content_type": "str"},
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": ["a", "b"]}],
    }
    request = oip_codec.parse_request(json.dumps(strings).encode(), None)
    assert oip_codec.to_model_input(request, _model(Schema([ColSpec("string")]))).data == ["a", "b"]


def test_a_frame_answers_one_output_per_column_in_binary_or_json() -> None:
    frame = pd.DataFrame({"label": ["setosa", "virginica"], "score": np.array([0.25, 0.75])})
    request = oip_codec.parse_request(
        json.dumps(
            {
                "id": "x",
                "inputs": [{"name": "a", "datatype": "INT64", "shape": [1], "data": [1]}],
                "outputs": [{"name": "score"}, {"name": "label", "parameters": {"binary_data": True}}],
            }
        ).encode(),
        None,
    )
    document, binary = oip_codec.encode_response(request.reply, frame, model_name="m", model_version="3")
    answer = json.loads(document)
    assert answer["id"] == "x" and answer["model_version"] == "3" and answer["parameters"] == {"content_type": "pd"}
    score, label = answer["outputs"]
    # a frame's column of numbers has no content type (MLServer's pandas codec gives it none)
    assert score == {"name": "score", "datatype": "FP64", "shape": [2, 1], "data": [0.25, 0.75]}
    assert label["datatype"] == "BYTES" and label["parameters"]["binary_data_size"] == len(binary)
    assert list(deserialize_bytes_tensor(binary)) == [b"setosa", b"virginica"]


def test_answers_say_the_content_types_mlservers_codecs_say() -> None:
    """Which content type an output says follows the type of the model's answer, as MLServer's
    mlflow runtime picks its codec: strings in an array are ``np`` (NumpyCodec), in a list
    ``str`` (StringCodec), in a frame's column ``str`` (PandasCodec, whose columns of numbers say
    none), in a dict ``np`` (TensorDictCodec). tests/gateway/protocols/test_oip_mlserver.py
    checks the same against MLServer itself."""
    request = oip_codec.parse_request(
        b'{"inputs": [{"name": "a", "datatype": "INT64", "shape": [1], "data": [1]}]}', None
    )
    labels = np.array(["low", "high"], dtype=object)

    def said(raw: object) -> tuple[str, list[tuple[str, str, object]]]:
        answer = json.loads(oip_codec.encode_response(request.reply, raw, model_name="m", model_version="1")[0])
        outputs = [(o["name"], o["datatype"], o.get("parameters", {}).get("content_type")) for o in answer["outputs"]]
        return answer["parameters"]["content_type"], outputs

    assert said(labels) == ("np", [("output-1", "BYTES", "np")])
    assert said(labels.astype(str)) == ("np", [("output-1", "BYTES", "np")])
    assert said(["low", "high"]) == ("str", [("output-1", "BYTES", "str")])
    assert said({"label": labels, "score": np.array([0.5, 1.5])}) == (
        "dict",
        [("label", "BYTES", "np"), ("score", "FP64", "np")],
    )
    frame = pd.DataFrame({"label": labels, "score": [0.5, 1.5], "n": np.array([1, 2])})
    assert said(frame) == ("pd", [("label", "BYTES", "str"), ("score", "FP64", None), ("n", "INT64", None)])
    assert said(pd.Series([0.5, 1.5], name="score")) == ("pd", [("score", "FP64", None)])


def test_a_frame_column_of_anything_but_text_answers_each_value_as_json_pd_json() -> None:
    """MLServer's PandasCodec answers a column of objects that are not all strings (dicts,
    lists) with each value's JSON, content type ``pd_json``; the gateway too, and for what
    MLServer fails on (a missing value among strings, numpy values) the nearest JSON."""
    request = oip_codec.parse_request(
        b'{"inputs": [{"name": "a", "datatype": "INT64", "shape": [1], "data": [1]}]}', None
    )
    frame = pd.DataFrame(
        {
            "record": pd.Series([{"x": 1e300, "s": "é"}, {"t": [1, 2]}], dtype=object),
            "tags": pd.Series([["a"], []], dtype=object),
            "maybe": ["a", None],
            "numpy": pd.Series([np.array([1, 2]), {"k": np.int64(3), "f": np.float32(0.5)}], dtype=object),
            "text": ["a", "b"],
        }
    )
    answer = json.loads(oip_codec.encode_response(request.reply, frame, model_name="m", model_version="1")[0])
    outputs = {o["name"]: (o["datatype"], o["shape"], o["data"], o["parameters"]) for o in answer["outputs"]}
    assert outputs == {
        "record": ("BYTES", [2, 1], ['{"x":1e+300,"s":"é"}', '{"t":[1,2]}'], {"content_type": "pd_json"}),
        "tags": ("BYTES", [2, 1], ['["a"]', "[]"], {"content_type": "pd_json"}),
        "maybe": ("BYTES", [2, 1], ['"a"', "null"], {"content_type": "pd_json"}),
        "numpy": ("BYTES", [2, 1], ["[1,2]", '{"k":3,"f":0.5}'], {"content_type": "pd_json"}),
        "text": ("BYTES", [2, 1], ["a", "b"], {"content_type": "str"}),
    }


# --- the column lane: one step from JSON to rows, or a decline --------------------------

_COLUMNS = ["a", "b", "c"]
_LANE_DTYPES = {"double": np.dtype(np.float64), "long": np.dtype(np.int64)}
_DATATYPES = {"double": "FP64", "long": "INT64"}
_NUMBERS = {
    "double": st.one_of(st.floats(allow_nan=False, allow_infinity=False, width=64), st.integers(-(2**53), 2**53)),
    "long": st.integers(-(2**63), 2**63 - 1),
}
_ODD_ELEMENTS = st.sampled_from([True, "1.5", None, 2**64, -(2**64) - 1, 1.5, [1.0]])
_ODD_SHAPES = st.sampled_from([[2, True], [True], [True, 1], [2, 1, 1], [-1, 1], [0], [0, 1], [2, 2], "2", None, []])
_ODD_TENSOR_PARAMETERS = st.sampled_from([{}, {"content_type": "np"}, {"binary_data_size": 8}, "x", None])
_ODD_PARAMETERS = st.sampled_from(
    [{"content_type": "pd"}, {"content_type": "np"}, {"binary_data_output": True}, {"binary_data_output": "yes"},
     {"temperature": 0.5}, {"binary_data_size": 3}, [], None]
)  # fmt: skip


@st.composite
def _lane_bodies(draw: st.DrawFn, column_type: str) -> tuple[bytes, int | None]:
    """A plain infer request for the model's columns (any order, [n, 1] or [n]), then a few
    changes that may take it off the lane: another datatype or shape, odd elements, nested
    data, a missing, extra or repeated input, parameters, ids and outputs of every kind."""
    rows = draw(st.integers(min_value=1, max_value=3))
    inputs: list[dict[str, object]] = [
        {
            "name": name,
            "datatype": _DATATYPES[column_type],
            "shape": draw(st.sampled_from([[rows, 1], [rows]])),
            "data": draw(st.lists(_NUMBERS[column_type], min_size=rows, max_size=rows)),
        }
        for name in draw(st.permutations(_COLUMNS))
    ]
    document: dict[str, object] = {"inputs": inputs}
    for _ in range(draw(st.integers(min_value=0, max_value=2))):
        tensor = inputs[draw(st.integers(min_value=0, max_value=len(inputs) - 1))] if inputs else {}
        change = draw(st.integers(min_value=0, max_value=10))
        if change == 0:
            tensor["datatype"] = draw(st.sampled_from(["FP64", "INT64", "FP32", "BOOL", "BYTES"]))
        elif change == 1:
            tensor["shape"] = draw(_ODD_SHAPES)
        elif change == 2 and isinstance(tensor.get("data"), list) and tensor["data"]:
            tensor["data"][0] = draw(_ODD_ELEMENTS)  # type: ignore[index]
        elif change == 3 and isinstance(tensor.get("data"), list):
            tensor["data"] = [[value] for value in tensor["data"]]  # type: ignore[union-attr]
        elif change == 4:
            tensor["parameters"] = draw(_ODD_TENSOR_PARAMETERS)
        elif change == 5:
            document["parameters"] = draw(_ODD_PARAMETERS)
        elif change == 6:
            document["id"] = draw(st.sampled_from(["request-1", 7, None]))
        elif change == 7:
            document["outputs"] = draw(st.sampled_from([[{"name": "output-0"}], [{"nome": 1}], {}, None]))
        elif change == 8 and inputs:
            inputs.pop()
        elif change == 9 and inputs:
            inputs.append(dict(inputs[0], name=draw(st.sampled_from([*_COLUMNS, "d", 1]))))
        elif change == 10:
            tensor["data"] = draw(st.one_of(_ODD_ELEMENTS, st.lists(_NUMBERS[column_type], max_size=4)))
    if not draw(st.booleans()):
        return json.dumps(document).encode(), None
    # the binary tensor extension: some inputs' data as bytes after the JSON, as tritonclient
    # sends them; sometimes a size that disagrees with the bytes, data kept beside it, or
    # bytes left over
    parts = []
    for tensor in inputs:
        if not draw(st.booleans()):
            continue
        try:
            raw = np.array(tensor.get("data"), dtype=oip_codec.DTYPES[str(tensor.get("datatype"))]).tobytes()
        except (KeyError, TypeError, ValueError, OverflowError):
            raw = draw(st.binary(max_size=24))
        size = draw(st.one_of(st.just(len(raw)), st.integers(min_value=-1, max_value=32), st.just(True)))
        if draw(st.integers(min_value=0, max_value=4)):
            tensor.pop("data", None)
        own = tensor.get("parameters")
        tensor["parameters"] = {**(own if isinstance(own, dict) else {}), "binary_data_size": size}
        parts.append(raw)
    header = json.dumps(document).encode()
    return header + b"".join(parts) + draw(st.sampled_from([b"", b"", b"\0"])), len(header)


@pytest.mark.parametrize("column_type", list(_LANE_DTYPES))
@settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_column_lane_declines_or_reads_what_the_full_parse_reads(column_type: str, data: st.DataObject) -> None:
    """Where the lane answers, the full parse answers the same: the same rows of the same
    dtype (for the fast path) and the same reply (id, outputs, binary)."""
    body, header_length = data.draw(_lane_bodies(column_type))
    dtype = _LANE_DTYPES[column_type]
    fast = FastPath(lambda document: None, lambda rows: rows, tensors=_column_tensors(_COLUMNS, dtype))
    model = _model(Schema([ColSpec(column_type, name) for name in _COLUMNS]))
    lane = oip_codec.column_rows(body, _COLUMNS, dtype, header_length)
    if lane is None:
        return  # declining is always allowed: the full parse reads it
    reply, rows = lane
    request = oip_codec.parse_request(body, header_length)  # must not raise where the lane read it
    tensors = oip_codec.plain_tensors(request, model)
    assert tensors is not None, "the lane read a request the fast path would not take"
    expected = fast.from_tensors(tensors)
    assert expected is not None, "the lane read a request the fast path would not take"
    assert rows.dtype == expected.dtype and rows.flags.c_contiguous
    np.testing.assert_array_equal(rows, expected)
    assert reply == request.reply


@pytest.mark.parametrize("column_type", list(_LANE_DTYPES))
def test_plain_columns_take_the_lane(column_type: str) -> None:
    dtype = _LANE_DTYPES[column_type]
    inputs = [
        {"name": name, "datatype": "FP64" if column_type == "double" else "INT64", "shape": [2, 1], "data": [i, i + 1]}
        for i, name in enumerate(reversed(_COLUMNS))
    ]
    body = json.dumps({"id": "r", "inputs": inputs, "parameters": {"content_type": "pd"}}).encode()
    lane = oip_codec.column_rows(body, _COLUMNS, dtype)
    assert lane is not None
    reply, rows = lane
    assert reply == oip_codec.Reply("r", None, False)
    np.testing.assert_array_equal(rows, np.array([[2, 1, 0], [3, 2, 1]], dtype=dtype))


def test_plain_binary_columns_take_the_lane() -> None:
    """tritonclient's default: each input's bytes after the JSON (binary_data_size)."""
    values = np.array([[1.5, -2.0, 3.25], [4.0, 5.5, -6.0]])
    inputs = [
        {"name": name, "datatype": "FP64", "shape": [2, 1], "parameters": {"binary_data_size": 16}} for name in _COLUMNS
    ]
    header = json.dumps({"inputs": inputs, "parameters": {"binary_data_output": True}}).encode()
    body = header + b"".join(values[:, i].astype("<f8").tobytes() for i in range(3))
    lane = oip_codec.column_rows(body, _COLUMNS, np.dtype(np.float64), len(header))
    assert lane is not None
    reply, rows = lane
    assert reply == oip_codec.Reply(None, None, True)
    np.testing.assert_array_equal(rows, values)
    assert rows.flags.c_contiguous and rows.dtype == np.float64
