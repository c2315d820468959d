"""The scoring protocol's edges, without HTTP."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
from mlflow.models import Model

from gateway.errors import MalformedRequest, UnsupportedMediaType
from gateway.wire.mlflow_scoring import CSV, JSON, PARQUET, decode, encode_predictions, parse_content_type


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("application/json", JSON),
        ("Application/JSON; charset=UTF-8", JSON),
        ("text/csv", CSV),
        ("application/vnd.apache.parquet", PARQUET),
        ("application/x-parquet", PARQUET),
        ('application/json; charset="utf-8"', JSON),  # RFC 9110: a value may be quoted
        ("application/json;Charset=utf-8", JSON),  # ... and names are case-insensitive
    ],
)
def test_content_types_mlflow_takes(header: str, expected: str) -> None:
    assert parse_content_type(header) == expected


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "text/plain",
        "application/json; charset=latin-1",
        "text/csv; q=1",
        "application/json; charset = utf-8",  # no whitespace around '=' (RFC 9110; MLflow refuses it too)
        'application/json; charset="latin-1"',
    ],
)
def test_content_types_mlflow_refuses(header: str | None) -> None:
    with pytest.raises(UnsupportedMediaType):
        parse_content_type(header)


@pytest.mark.parametrize(
    ("header", "says"),
    [
        (None, "No Content-Type header was sent"),
        ("", "No Content-Type header was sent"),
        ("text/plain", "Content type 'text/plain' is not supported"),
    ],
)
def test_a_refused_content_type_is_named_and_a_missing_one_said_missing(header: str | None, says: str) -> None:
    with pytest.raises(UnsupportedMediaType) as refused:
        parse_content_type(header)
    assert str(refused.value).startswith(f"{says}; send 'application/json'"), str(refused.value)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (np.array([1, 2]), [1, 2]),
        (np.array([[0.5, 1.5]], dtype=np.float32), [[0.5, 1.5]]),
        (np.array(["a", "b"], dtype=object), ["a", "b"]),
        (np.arange(6).reshape(2, 3)[:, ::2], [[0, 2], [3, 5]]),  # not contiguous
        (pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}), [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]),
        # MLflow answers a series as the records of a one-column frame
        (pd.Series([1.5, 2.5]), [{"0": 1.5}, {"0": 2.5}]),
        (pd.Series([1, 2], name="score"), [{"score": 1}, {"score": 2}]),
        ({"label": np.int64(3), "scores": [np.float64(0.25)]}, {"label": 3, "scores": [0.25]}),
    ],
)
def test_predictions_are_shaped_as_mlflow_shapes_them(raw: object, expected: object) -> None:
    assert orjson.loads(encode_predictions(raw)) == {"predictions": expected}


def _mlflow_encoded(raw: Any) -> Any:
    import io

    from mlflow.pyfunc.scoring_server import predictions_to_json

    out = io.StringIO()
    predictions_to_json(raw, out)
    return json.loads(out.getvalue())


@pytest.mark.parametrize(
    "raw",
    [
        np.array(3.5),  # a 0-d array: one value, not a list
        [b"ab"],  # bytes: base64, newline included
        np.array([b"ab", b"cd"]),
        pd.DataFrame({"t": pd.to_datetime(["2024-01-01 10:00:00", "2024-01-02 00:00:00"])}),
        pd.DataFrame({"t": pd.to_datetime(["2024-01-01 10:00:00"]).tz_localize("UTC")}),
        [pd.Timestamp("2024-01-01"), pd.Timestamp("2024-01-02 03:04:05")],
        [2**70],  # past 64 bits
        pd.DataFrame({"a": [1, 2], "b": [0.5, 1.5]}),
    ],
    ids=["0-d", "bytes", "bytes-array", "datetimes", "tz-aware", "timestamps", "big-int", "frame"],
)
def test_outputs_are_encoded_as_mlflow_encodes_them(raw: Any) -> None:
    """Issue 16: these answered 500 (or plain text for bytes) where MLflow's server answers."""
    assert json.loads(encode_predictions(raw)) == _mlflow_encoded(raw)


@pytest.mark.parametrize(
    "body",
    [
        b'\xef\xbb\xbf{"inputs": [[1, 2]]}',  # a UTF-8 byte order mark
        '{"inputs": [[1, 2]]}'.encode("utf-16"),
        '{"inputs": [[1, 2]]}'.encode("utf-16-le"),
        '{"inputs": [[1, 2]]}'.encode("utf-32"),
    ],
    ids=["utf-8 bom", "utf-16", "utf-16-le", "utf-32"],
)
def test_json_is_read_in_every_encoding_mlflow_reads(body: bytes) -> None:
    assert decode(body, JSON, Model()).data.tolist() == [[1, 2]]


def test_integers_keep_every_digit_so_a_cast_cannot_wrap_them() -> None:
    """orjson reads 2**64 as a float, which pandas then cast to int64 as garbage (issue 16)."""
    body = b'{"dataframe_split": {"columns": ["a"], "data": [[18446744073709551616]]}}'
    assert decode(body, JSON, Model()).data["a"].tolist() == [2**64]


def test_unified_llm_input_is_the_data_and_answers_unwrapped() -> None:
    decoded = decode(b'{"messages": [{"role": "user", "content": "hi"}], "temperature": 0.1}', JSON, Model())
    assert decoded.unwrapped and decoded.params == {}  # no params schema: every key is data, as in MLflow
    assert decoded.data == {"messages": [{"role": "user", "content": "hi"}], "temperature": 0.1}
    assert orjson.loads(encode_predictions({"content": "yo"}, unwrapped=True)) == {"content": "yo"}


def test_csv_that_pandas_cannot_cast_is_a_bad_request() -> None:
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    metadata = Model(signature=ModelSignature(inputs=Schema([ColSpec("long", "a")])))
    with pytest.raises(MalformedRequest, match="CSV"):  # OverflowError in pandas: it was a 500
        decode(b"a\n18446744073709551616\n", CSV, metadata)
