"""The codec alone: BYTES tensors both ways, content types, frames and dicts as outputs.
Triton's own serialisers write and read the bytes, so the wire format is theirs, not ours."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from mlflow.models import Model, ModelSignature
from mlflow.types.schema import ColSpec, Schema, TensorSpec
from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor

from gateway.protocols import oip_codec


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
    document, binary = oip_codec.encode_response(request, frame, model_name="m", model_version="3")
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
        answer = json.loads(oip_codec.encode_response(request, raw, model_name="m", model_version="1")[0])
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
