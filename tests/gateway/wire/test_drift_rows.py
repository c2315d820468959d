"""Bodies and answers read back as columns for drift: every shape of MLflow's scoring protocol
and OIP's REST JSON, and garbage read as nothing, never raised."""

from __future__ import annotations

import orjson
import pytest

from gateway.wire.drift_rows import frame_of, input_columns, output_columns

NAMES = ["a", "b"]


def inputs(document: object, protocol: str = "mlflow") -> object:
    return input_columns(orjson.dumps(document), media_type="application/json", protocol=protocol, names=NAMES)


@pytest.mark.parametrize(
    "document",
    [
        {"dataframe_split": {"columns": ["a", "b"], "data": [[1, "x"], [2, "y"]]}},
        {"dataframe_split": {"data": [[1, "x"], [2, "y"]]}},  # no columns: the reference's, by position
        {"dataframe_records": [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]},
        {"inputs": [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]},
        {"instances": [[1, "x"], [2, "y"]]},
        {"inputs": {"a": [1, 2], "b": ["x", "y"]}},
    ],
)
def test_each_mlflow_shape_reads_as_the_same_columns(document: object) -> None:
    assert inputs(document) == {"a": [1, 2], "b": ["x", "y"]}


def test_oip_tensors_by_name_or_one_matrix_by_position() -> None:
    by_name = {"inputs": [{"name": n, "shape": [2], "datatype": "FP64", "data": [1.0, 2.0]} for n in NAMES]}
    assert inputs(by_name, "oip") == {"a": [1.0, 2.0], "b": [1.0, 2.0]}
    matrix = {"inputs": [{"name": "input-0", "shape": [2, 2], "datatype": "FP64", "data": [[1.0, 3.0], [2.0, 4.0]]}]}
    assert inputs(matrix, "oip") == {"a": [1.0, 2.0], "b": [3.0, 4.0]}
    answer = orjson.dumps({"outputs": [{"name": "output-0", "shape": [2], "datatype": "INT64", "data": [0, 1]}]})
    assert output_columns(answer, protocol="oip", names=["prediction"]) == {"prediction": [0, 1]}


def test_answers_of_values_records_and_columns() -> None:
    one = ["prediction"]
    assert output_columns(b'{"predictions": [0, 2]}', protocol="mlflow", names=one) == {"prediction": [0, 2]}
    assert output_columns(b"[0, 2]", protocol="mlflow", names=one) == {"prediction": [0, 2]}
    records = b'{"predictions": [{"p": 0.1, "c": 1}, {"p": 0.9, "c": 0}]}'
    assert output_columns(records, protocol="mlflow", names=one) == {"p": [0.1, 0.9], "c": [1, 0]}


@pytest.mark.parametrize(
    "body",
    [b"{nope", b"[]", b'{"dataframe_split": {"columns": ["a"], "data": [[1, 2]]}}', b'{"inputs": 3}', b"\xff\xfe"],
)
def test_garbage_reads_as_nothing(body: bytes) -> None:
    read = input_columns(body, media_type="application/json", protocol="mlflow", names=NAMES)
    assert read is None or read == {"a": [], "b": []}


def test_a_frame_of_requests_with_other_columns_fills_what_each_lacks() -> None:
    frame = frame_of([{"a": [1, 2]}, {"a": [3], "b": ["z"], "c": [0]}], ["a", "b"])
    assert frame["a"].tolist() == [1, 2, 3]
    assert frame["b"].isna().tolist() == [True, True, False] and frame["b"].iloc[2] == "z"
