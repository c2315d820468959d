"""A record as a CloudEvent: every body shape, redaction by name in each, and the event valid
as the CloudEvents SDK itself reads it."""

from __future__ import annotations

import base64
import hashlib
import json
import random
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from cloudevents.core.bindings.http import from_binary, to_binary
from cloudevents.core.formats.json import JSONFormat

from gateway.observability.context import new_request_id
from gateway.observability.records.events import EVENT_TYPE, event_for, event_id, serialized
from gateway.observability.records.redaction import REDACTED, _parsed
from tests.gateway.observability.records_support import a_record

SOURCE = "/registry-gateway/test-host"
R = REDACTED


def data_of(event_bytes: bytes) -> dict[str, Any]:
    event = JSONFormat().read(None, event_bytes)
    data = event.get_data()
    assert isinstance(data, dict)
    return data


def recorded(redact: set[str], **changes: Any) -> tuple[bytes, dict[str, Any]]:
    encoded = serialized(event_for(a_record(**changes), source=SOURCE, redact=redact))
    return encoded, data_of(encoded)


# (protocol, media type, body, the inputs recorded with "ssn" and "token" redacted)
SHAPES = {
    "dataframe_split": (
        "mlflow",
        "application/json",
        {"dataframe_split": {"columns": ["age", "ssn"], "data": [[41, "SECRET-1"], [7, "SECRET-2"]], "index": [5, 6]}},
        {"dataframe_split": {"columns": ["age", "ssn"], "data": [[41, R], [7, R]], "index": [5, 6]}},
    ),
    "dataframe_split, one column": (
        "mlflow",
        "application/json; format=pandas-split",
        {"dataframe_split": {"columns": ["ssn"], "data": ["SECRET-1", "SECRET-2"]}},
        {"dataframe_split": {"columns": ["ssn"], "data": [R, R]}},
    ),
    "dataframe_records": (
        "mlflow",
        "application/json",
        {"dataframe_records": [{"age": 41, "ssn": "SECRET-1"}, {"ssn": "SECRET-2", "age": 7}]},
        {"dataframe_records": [{"age": 41, "ssn": R}, {"ssn": R, "age": 7}]},
    ),
    "instances of objects": (
        "mlflow",
        "application/json",
        {"instances": [{"age": 41, "ssn": ["SECRET-1", "SECRET-2"]}, {"user": {"ssn": "SECRET-3", "age": 7}}]},
        {"instances": [{"age": 41, "ssn": [R, R]}, {"user": {"ssn": R, "age": 7}}]},
    ),
    "inputs as columns, with params": (
        "mlflow",
        "application/json",
        {"inputs": {"age": [41, 7], "ssn": ["SECRET-1", "SECRET-2"]}, "params": {"token": "SECRET-3", "k": 2}},
        {"inputs": {"age": [41, 7], "ssn": [R, R]}, "params": {"token": R, "k": 2}},
    ),
    "inputs as rows": (
        "mlflow",
        "application/json",
        {"inputs": [{"age": 41, "ssn": "SECRET-1"}]},
        {"inputs": [{"age": 41, "ssn": R}]},
    ),
    "open inference protocol tensors": (
        "oip",
        "application/json",
        {
            "id": "r1",
            "inputs": [
                {"name": "age", "shape": [2], "datatype": "INT64", "data": [41, 7]},
                {"name": "ssn", "shape": [2, 1], "datatype": "BYTES", "data": [["SECRET-1"], ["SECRET-2"]]},
            ],
            "parameters": {"token": "SECRET-3"},
            "outputs": [{"name": "predict"}],
        },
        {
            "id": "r1",
            "inputs": [
                {"name": "age", "shape": [2], "datatype": "INT64", "data": [41, 7]},
                {"name": "ssn", "shape": [2, 1], "datatype": "BYTES", "data": [[R], [R]]},
            ],
            "parameters": {"token": R},
            "outputs": [{"name": "predict"}],
        },
    ),
    "csv": (
        "mlflow",
        "text/csv",
        "age,ssn\n41,SECRET-1\n7,SECRET-2\n",
        {"columns": ["age", "ssn"], "data": [["41", R], ["7", R]]},
    ),
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_named_columns_are_redacted_in_every_body_shape(shape: str) -> None:
    protocol, media_type, body, expected = SHAPES[shape]
    raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    encoded, data = recorded({"ssn", "token"}, protocol=protocol, media_type=media_type, request=raw)
    assert data["inputs"] == expected
    assert "inputs_omitted" not in data
    assert b"SECRET" not in encoded


@pytest.mark.parametrize("shape", list(SHAPES))
def test_without_names_every_body_shape_is_recorded_whole(shape: str) -> None:
    protocol, media_type, body, _ = SHAPES[shape]
    raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    _, data = recorded(set(), protocol=protocol, media_type=media_type, request=raw)
    if isinstance(body, str):  # CSV, read with the csv module: strings, the header as columns
        assert data["inputs"] == {"columns": ["age", "ssn"], "data": [["41", "SECRET-1"], ["7", "SECRET-2"]]}
    else:
        assert data["inputs"] == body


UNREADABLE = {
    "parquet": ("mlflow", "application/vnd.apache.parquet", b"PAR1\x00SECRET-1\x00PAR1"),
    "oip binary extension": ("oip", "application/octet-stream", b'{"inputs":[]}\x00SECRET-1'),
    "invalid json": ("mlflow", "application/json", b'{"dataframe_split": {"columns": ["ssn"], "data": [["SECRET-1"'),
    "an unknown key": ("mlflow", "application/json", b'{"rows": [["SECRET-1"]]}'),
    "unnamed instances": ("mlflow", "application/json", b'{"instances": [["SECRET-1", 2]]}'),
    "unnamed inputs": ("mlflow", "application/json", b'{"inputs": [["SECRET-1", 2]]}'),
    "a split without columns": ("mlflow", "application/json", b'{"dataframe_split": {"data": [["SECRET-1"]]}}'),
    "rows longer than the columns": (
        "mlflow",
        "application/json",
        b'{"dataframe_split": {"columns": ["ssn"], "data": [["x", "SECRET-1"]]}}',
    ),
    "a json array": ("mlflow", "application/json", b'[{"ssn": "SECRET-1"}]'),
    "an oip tensor without a name": (
        "oip",
        "application/json",
        b'{"inputs": [{"shape": [1], "datatype": "BYTES", "data": ["SECRET-1"]}]}',
    ),
    "csv rows longer than the header": ("mlflow", "text/csv", b"age\n41,SECRET-1\n"),
    "csv that is not utf-8": ("mlflow", "text/csv", b"age,ssn\n41,SECRET-1\xff\n"),
}


@pytest.mark.parametrize("case", list(UNREADABLE))
def test_with_names_set_a_body_whose_columns_cannot_be_read_is_left_out(case: str) -> None:
    protocol, media_type, body = UNREADABLE[case]
    encoded, data = recorded({"ssn"}, protocol=protocol, media_type=media_type, request=body)
    assert data["inputs"] is None
    assert isinstance(data["inputs_omitted"], str) and data["inputs_omitted"]
    assert b"SECRET" not in encoded
    assert data["outputs"] == {"predictions": [0, 1]}  # the answer is still recorded


def test_without_names_a_binary_body_is_kept_as_base64() -> None:
    body = b"PAR1\x00\x01\xff binary PAR1"
    _, data = recorded(set(), media_type="application/vnd.apache.parquet", request=body)
    assert data["inputs"] == {"media_type": "application/vnd.apache.parquet", "base64": base64.b64encode(body).decode()}
    assert base64.b64decode(data["inputs"]["base64"]) == body


def test_without_names_json_that_does_not_parse_is_kept_as_text() -> None:
    body = b'{"inputs": [1, 2\xff'
    _, data = recorded(set(), media_type="application/json", request=body)
    assert data["inputs"] == {"media_type": "application/json", "text": '{"inputs": [1, 2\ufffd'}


def test_a_body_nested_past_the_parser_is_text_without_names_and_left_out_with_them() -> None:
    deep = b"[" * 5000 + b"]" * 5000
    _, data = recorded(set(), request=deep)
    assert data["inputs"]["text"].startswith("[[[")
    _, data = recorded({"ssn"}, request=deep)
    assert data["inputs"] is None and data["inputs_omitted"]


def test_named_keys_and_tensors_in_the_answer_are_redacted_too() -> None:
    echo = {"predictions": [{"ssn": "SECRET-1", "label": 1}], "outputs": [{"name": "ssn", "data": ["SECRET-2"]}]}
    encoded, data = recorded({"ssn"}, response=json.dumps(echo).encode())
    assert data["outputs"] == {"predictions": [{"ssn": R, "label": 1}], "outputs": [{"name": "ssn", "data": [R]}]}
    assert b"SECRET" not in encoded


def test_the_event_is_a_valid_cloudevent_read_back_by_the_sdk() -> None:
    record = a_record(trace_id="4bf92f3577b34da6a3ce929d0e0e4736", alias=None)
    event = event_for(record, source=SOURCE, redact=())
    back = JSONFormat().read(None, serialized(event))  # validates the attributes as it builds the event
    assert back.get_specversion() == "1.0"
    assert back.get_type() == EVENT_TYPE
    assert back.get_source() == SOURCE
    assert back.get_subject() == "iris/versions/3"
    assert back.get_datacontenttype() == "application/json"
    assert back.get_time() == datetime.fromtimestamp(record.time, UTC)
    assert back.get_id() == event.get_id()
    assert back.get_extension("model") == "iris"
    assert back.get_extension("modelversion") == 3
    assert back.get_extension("requestid") == "req-1"
    assert back.get_extension("arm") == "default"
    assert back.get_data() == {
        "model": "iris",
        "version": 3,
        "alias": None,
        "arm": "default",
        "request_id": "req-1",
        "route_key_hash": hashlib.sha256(b"user-4711@example.com").hexdigest()[:16],
        "protocol": "mlflow",
        "media_type": "application/json",
        "status": 200,
        "latency_ms": 4.2,
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "inputs": json.loads(record.request),
        "outputs": {"predictions": [0, 1]},
    }
    # ... and in HTTP binary mode, its attributes in ce-* headers
    binary = from_binary(to_binary(event, JSONFormat()), JSONFormat())
    assert binary.get_id() == event.get_id() and binary.get_data() == event.get_data()


def test_every_event_has_its_own_id() -> None:
    record = a_record()
    ids = {event_for(record, source=SOURCE, redact=()).get_id() for _ in range(100)}
    assert len(ids) == 100


@pytest.mark.parametrize("redact", [set(), {"ssn"}])
def test_the_route_key_never_leaves_raw(redact: set[str]) -> None:
    record = a_record(route_key="user-4711@example.com")
    event = event_for(record, source=SOURCE, redact=redact)
    structured = serialized(event)
    binary = to_binary(event, JSONFormat())
    for text in (structured, binary.body, json.dumps(binary.headers).encode()):
        assert b"user-4711" not in text
    assert data_of(structured)["route_key_hash"] == hashlib.sha256(b"user-4711@example.com").hexdigest()[:16]
    assert (
        data_of(serialized(event_for(a_record(route_key=None), source=SOURCE, redact=redact)))["route_key_hash"] is None
    )


@pytest.mark.parametrize(
    "body",
    [
        b'{"dataframe_split": {"columns": ["a"], "data": [[1.5], [2]]}}',
        b'{"inputs": [NaN, Infinity, -Infinity]}',  # json.loads' extensions: orjson declines them
        b'{"big": 123456789012345678901234567890, "small": -1e400, "x": 1e-400}',
        b'{"k": 1, "k": 2}',  # the last of a repeated key
        b'{"s": "caf\xc3\xa9 \\ud83d\\ude00"}',
        b"[" * 600 + b"]" * 600,  # nested deep
    ],
)
def test_bodies_are_read_as_json_loads_reads_them(body: bytes) -> None:
    got, expected = _parsed(body), json.loads(body)
    assert json.dumps(got) == json.dumps(expected)  # NaN == NaN only as text


@pytest.mark.parametrize("body", [b'{"a": 1', b'{"a": "\xff"}', b""])
def test_bodies_json_loads_refuses_are_refused_the_same_way(body: bytes) -> None:
    with pytest.raises(ValueError) as ours:
        _parsed(body)
    with pytest.raises(ValueError) as theirs:
        json.loads(body)
    assert type(ours.value) is type(theirs.value)


def test_event_ids_are_version_4_uuids_and_distinct() -> None:
    """Ids come from the gateway's own random generator (no system call a record), still as
    version-4 UUIDs, one of their own for each event."""
    ids = [JSONFormat().read(None, recorded(set())[0]).get_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122 and str(parsed) == text


def test_seeding_the_random_module_does_not_repeat_ids() -> None:
    """A model or library that seeds Python's shared generator must not make the gateway's ids
    repeat: event ids, request ids and new trace ids come from a generator of their own."""
    state = random.getstate()
    try:
        drawn = []
        for _ in range(2):
            random.seed(0)
            drawn.append((event_id(), new_request_id()))
        assert drawn[0][0] != drawn[1][0] and drawn[0][1] != drawn[1][1]
    finally:
        random.setstate(state)
