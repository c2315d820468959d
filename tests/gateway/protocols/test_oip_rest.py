"""The Open Inference Protocol over REST, spoken by tritonclient (binary by default, and
JSON) and by hand, against a real gateway on a real registry: answers equal pyfunc's."""

from __future__ import annotations

import gzip
import json
import struct
import zlib
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from gateway.demo import IRIS, TORCH, iris_frame, torch_available
from tests.conftest import IRIS_COLUMNS, Registry
from tests.support.ci import needs
from tests.support.numeric import assert_far_from_ties, assert_within, mlp_error_bound

ROWS = iris_frame()[0].iloc[[0, 60, 120, 149]].to_numpy()  # rows of each class


@pytest.fixture(scope="module")
def client(oip_url: str) -> Iterator[triton.InferenceServerClient]:
    connection = triton.InferenceServerClient(oip_url)
    yield connection
    connection.close()


@pytest.fixture(scope="module")
def http(oip_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://{oip_url}", timeout=60) as connection:
        yield connection


def iris_inputs(rows: np.ndarray, *, binary: bool) -> list[triton.InferInput]:
    inputs = []
    for index, column in enumerate(IRIS_COLUMNS):
        tensor = triton.InferInput(column, [len(rows), 1], "FP64")
        tensor.set_data_from_numpy(np.ascontiguousarray(rows[:, [index]]), binary_data=binary)
        inputs.append(tensor)
    return inputs


def iris_json(rows: np.ndarray, **extra: Any) -> dict[str, Any]:
    inputs = [
        {"name": column, "datatype": "FP64", "shape": [len(rows), 1], "data": rows[:, index].tolist()}
        for index, column in enumerate(IRIS_COLUMNS)
    ]
    return {"inputs": inputs, **extra}


def test_server_metadata_and_health(client: triton.InferenceServerClient, http: httpx.Client) -> None:
    assert client.is_server_live() and client.is_server_ready()
    metadata = client.get_server_metadata()
    assert metadata["name"] == "registry-gateway" and "binary_tensor_data" in metadata["extensions"]
    assert http.get("/v2/health/live").json() == {"live": True}
    assert http.get("/v2/health/ready").json() == {"ready": True}


def test_model_metadata_maps_the_signature_as_mlserver_does(
    client: triton.InferenceServerClient, sqlite_registry: Registry
) -> None:
    first, second = sqlite_registry.versions[IRIS]
    metadata = client.get_model_metadata(IRIS, "challenger")
    assert metadata["versions"] == [str(second)]
    assert metadata["platform"] == "mlflow" and metadata["parameters"] == {"content_type": "pd"}
    assert metadata["inputs"] == [
        {"name": column, "datatype": "FP64", "shape": [-1, 1], "parameters": {"content_type": "np"}}
        for column in IRIS_COLUMNS
    ]
    assert metadata["outputs"] == [
        {"name": "output-0", "datatype": "INT64", "shape": [-1, 1], "parameters": {"content_type": "np"}}
    ]
    assert client.get_model_metadata(IRIS)["versions"] == [str(first)]  # the default alias, champion
    if torch_available():
        torch_metadata = client.get_model_metadata(TORCH, "latest")
        assert torch_metadata["parameters"] == {"content_type": "np"}
        assert torch_metadata["inputs"] == [
            {"name": "input-0", "datatype": "FP32", "shape": [-1, 4], "parameters": {"content_type": "np"}}
        ]


def test_readiness_by_number_alias_and_default(
    client: triton.InferenceServerClient, http: httpx.Client, sqlite_registry: Registry
) -> None:
    first, second = sqlite_registry.versions[IRIS]
    assert client.is_model_ready(IRIS) and client.is_model_ready(IRIS, str(second))
    assert client.is_model_ready(IRIS, "challenger") and client.is_model_ready(IRIS, "latest")
    assert not client.is_model_ready(IRIS, "999") and not client.is_model_ready("no-such-model")
    answer = http.get(f"/v2/models/{IRIS}/versions/challenger/ready")
    assert answer.json() == {"name": IRIS, "ready": True}
    assert answer.headers["X-Model-Version"] == str(second) and answer.headers["X-Model-Alias"] == "challenger"
    missing = http.get("/v2/models/no-such-model/ready")
    assert missing.status_code == 404 and "no-such-model" in missing.json()["error"]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("selector", ["number", "alias", "default", "header"])
def test_iris_answers_as_pyfunc_does(
    client: triton.InferenceServerClient, sqlite_registry: Registry, binary: bool, selector: str
) -> None:
    first, second = sqlite_registry.versions[IRIS]
    version, headers, expected = {
        "number": (str(second), None, second),
        "alias": ("challenger", None, second),
        "default": ("", None, first),
        "header": ("", {"X-Model-Version": "challenger"}, second),
    }[selector]
    outputs = None if binary else [triton.InferRequestedOutput("output-1", binary_data=False)]
    result = client.infer(
        IRIS, iris_inputs(ROWS, binary=binary), model_version=version, outputs=outputs, headers=headers
    )
    reference = sqlite_registry.pyfunc(IRIS, expected)
    frame = iris_frame()[0].iloc[[0, 60, 120, 149]]
    assert_far_from_ties(reference.get_raw_model(), frame)
    expected_labels = np.asarray(reference.predict(frame)).reshape(-1, 1)
    np.testing.assert_array_equal(result.as_numpy("output-1"), expected_labels)
    response = result.get_response()
    assert response["model_name"] == IRIS and response["model_version"] == str(expected)
    assert response["outputs"][0]["datatype"] == "INT64" and response["outputs"][0]["shape"] == [len(ROWS), 1]


@pytest.mark.torch
@needs(torch_available(), "needs the [torch] extra")
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_torch_answers_as_pyfunc_does(
    client: triton.InferenceServerClient, sqlite_registry: Registry, binary: bool
) -> None:
    rows = np.random.default_rng(7).standard_normal((5, 4)).astype(np.float32)
    tensor = triton.InferInput("input-0", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows, binary_data=binary)
    outputs = [triton.InferRequestedOutput("output-1", binary_data=binary)]
    result = client.infer(TORCH, [tensor], model_version="champion", outputs=outputs)
    reference = sqlite_registry.pyfunc(TORCH, sqlite_registry.versions[TORCH][0])
    answer = result.as_numpy("output-1")
    assert answer.dtype == np.float32 and answer.shape == (5, 3)
    network = reference._model_impl.pytorch_model
    assert_within(answer, reference.predict(rows), 2 * mlp_error_bound(network, rows))


def test_json_by_hand_echoes_the_id_selects_outputs_and_says_the_content_type(
    http: httpx.Client, sqlite_registry: Registry
) -> None:
    body = iris_json(ROWS, id="request-7", outputs=[{"name": "output-1"}])
    answer = http.post(f"/v2/models/{IRIS}/versions/champion/infer", json=body)
    assert answer.status_code == 200, answer.text
    document = answer.json()
    assert document["id"] == "request-7" and document["parameters"] == {"content_type": "np"}
    assert [output["name"] for output in document["outputs"]] == ["output-1"]
    assert answer.headers["X-Model-Name"] == IRIS and answer.headers["X-Model-Alias"] == "champion"
    unknown = http.post(f"/v2/models/{IRIS}/infer", json=iris_json(ROWS, outputs=[{"name": "proba"}]))
    assert unknown.status_code == 400 and "proba" in unknown.json()["error"]


def test_a_frame_answers_one_output_per_column(http: httpx.Client) -> None:
    # doubler is a pyfunc over a frame; 'dict' content hands it the inputs by name
    body = {"inputs": [{"name": "x", "datatype": "FP64", "shape": [3], "data": [1.0, 2.5, -4.0]}]}
    answer = http.post("/v2/models/doubler/infer", json=body)
    assert answer.status_code == 200, answer.text
    (output,) = answer.json()["outputs"]
    assert output["name"] == "output-1" and output["shape"] == [3, 1]
    assert output["data"] == [2.0, 5.0, -8.0]


def test_gzip_and_deflate_bodies_and_gzip_answers(http: httpx.Client) -> None:
    rows = np.tile(ROWS, (500, 1))  # an answer worth compressing (past 1 KiB)
    raw = json.dumps(iris_json(rows)).encode()
    for encoding, packed in (("gzip", gzip.compress(raw)), ("deflate", zlib.compress(raw))):
        answer = http.post(
            f"/v2/models/{IRIS}/infer",
            content=packed,
            headers={"Content-Encoding": encoding, "Accept-Encoding": "gzip"},
        )
        assert answer.status_code == 200, answer.text
        assert answer.headers["Content-Encoding"] == "gzip"  # httpx decoded it for us
        assert answer.json()["outputs"][0]["shape"] == [len(rows), 1]


def _binary(header: dict[str, Any], tail: bytes, *, length: int | None = None) -> tuple[bytes, dict[str, str]]:
    head = json.dumps(header).encode()
    return head + tail, {"Inference-Header-Content-Length": str(len(head) if length is None else length)}


def _one(datatype: str, shape: list[int], size: int) -> dict[str, Any]:
    return {"inputs": [{"name": "x", "datatype": datatype, "shape": shape, "parameters": {"binary_data_size": size}}]}


GARBAGE: dict[str, tuple[bytes, dict[str, str]]] = {
    "not json": (b"{inputs", {}),
    "a json list": (b"[1, 2]", {}),
    "no inputs": (b'{"inputs": []}', {}),
    "unknown datatype": (b'{"inputs": [{"name": "x", "datatype": "FP128", "shape": [1], "data": [1]}]}', {}),
    "negative shape": (b'{"inputs": [{"name": "x", "datatype": "FP64", "shape": [-1], "data": [1]}]}', {}),
    "shape larger than data": (b'{"inputs": [{"name": "x", "datatype": "FP64", "shape": [9], "data": [1]}]}', {}),
    "huge shape": (
        b'{"inputs": [{"name": "x", "datatype": "FP64", "shape": [4294967296, 4294967296], "data": [1]}]}',
        {},
    ),
    "strings as numbers": (b'{"inputs": [{"name": "x", "datatype": "FP64", "shape": [1], "data": ["1"]}]}', {}),
    "overflowing int": (b'{"inputs": [{"name": "x", "datatype": "INT8", "shape": [1], "data": [300]}]}', {}),
    "deep nesting": (
        b'{"inputs": [{"name": "x", "datatype": "FP64", "shape": [1], "data": '
        + b"[" * 100
        + b"1"
        + b"]" * 100
        + b"}]}",
        {},
    ),
    "header length past the body": _binary(_one("FP64", [1], 8), b"\0" * 8, length=10_000),
    "header length not a number": (json.dumps(iris_json(ROWS)).encode(), {"Inference-Header-Content-Length": "ten"}),
    "binary size past the body": _binary(_one("FP64", [1], 800), b"\0" * 8),
    "binary size and shape disagree": _binary(_one("FP64", [2], 8), b"\0" * 8),
    "bytes left over": _binary(_one("FP64", [1], 8), b"\0" * 16),
    "bytes element runs past its tensor": _binary(_one("BYTES", [1], 8), struct.pack("<I", 1 << 30) + b"abcd"),
    "bytes length cut short": _binary(_one("BYTES", [1], 2), b"\0\0"),
    "bytes count and shape disagree": _binary(
        _one("BYTES", [3], 10), struct.pack("<I", 2) + b"ab" + struct.pack("<I", 0)
    ),
    "bool bytes not 0 or 1": _binary(_one("BOOL", [1], 1), b"\x07"),
    "unknown content type": (json.dumps(iris_json(ROWS, parameters={"content_type": "xml"})).encode(), {}),
    "wrong columns for the model": (
        b'{"inputs": [{"name": "nope", "datatype": "FP64", "shape": [1], "data": [1.0]}]}',
        {},
    ),
}


# What each answer must name: the reason, not a 400 for some other fault of the same body.
REASONS = {
    "not json": "not valid JSON",
    "a json list": "JSON object",
    "no inputs": "'inputs'",
    "unknown datatype": "FP128",
    "negative shape": "'shape'",
    "shape larger than data": "9 elements",
    "huge shape": "18446744073709551616 elements",
    "strings as numbers": "cannot hold str",
    "overflowing int": "does not fit INT8",
    "deep nesting": "nested too deeply",
    "header length past the body": "Inference-Header-Content-Length is 10000",
    "header length not a number": "'ten' is not a number",
    "binary size past the body": "binary_data_size is 800",
    "binary size and shape disagree": "2 elements of FP64 (16 bytes)",
    "bytes left over": "16 bytes",
    "bytes element runs past its tensor": "1073741824 bytes but 4 are left",
    "bytes length cut short": "cut short",
    "bytes count and shape disagree": "3 elements but the bytes hold 2",
    "bool bytes not 0 or 1": "0 or 1",
    "unknown content type": "'xml'",
    "wrong columns for the model": "schema",
}


@pytest.mark.parametrize("case", list(GARBAGE))
def test_garbage_is_a_4xx_in_words_and_the_server_stays_up(http: httpx.Client, case: str) -> None:
    body, headers = GARBAGE[case]
    answer = http.post(f"/v2/models/{IRIS}/infer", content=body, headers=headers)
    assert 400 <= answer.status_code < 500, (answer.status_code, answer.text)
    assert set(answer.json()) == {"error"} and REASONS[case] in answer.json()["error"]
    assert http.get("/v2/health/live").status_code == 200


def test_encodings_and_sizes_are_capped(http: httpx.Client) -> None:
    bomb = gzip.compress(b" " * (20 * 2**20))  # 20 MiB of spaces, past the 10 MiB body limit
    answer = http.post(f"/v2/models/{IRIS}/infer", content=bomb, headers={"Content-Encoding": "gzip"})
    assert answer.status_code == 413 and "error" in answer.json()
    answer = http.post(f"/v2/models/{IRIS}/infer", content=b"{}", headers={"Content-Encoding": "br"})
    assert answer.status_code == 415 and "br" in answer.json()["error"]
    answer = http.post(f"/v2/models/{IRIS}/infer", content=b"\x1f\x8bnot gzip", headers={"Content-Encoding": "gzip"})
    assert answer.status_code == 400


def test_unknown_models_versions_and_aliases_are_404(client: triton.InferenceServerClient, http: httpx.Client) -> None:
    for path in (
        "/v2/models/no-such-model/infer",
        f"/v2/models/{IRIS}/versions/999/infer",
        f"/v2/models/{IRIS}/versions/nope/infer",
    ):
        answer = http.post(path, json=iris_json(ROWS))
        assert answer.status_code == 404 and set(answer.json()) == {"error"}
    with pytest.raises(InferenceServerException, match="no-such-model"):
        client.get_model_metadata("no-such-model")
    assert http.get("/v2/no-such-route").json().keys() == {"error"}


def test_a_method_an_infer_route_does_not_take_is_405_in_the_protocols_shape(http: httpx.Client) -> None:
    for path in (f"/v2/models/{IRIS}/infer", f"/v2/models/{IRIS}/versions/1/infer"):
        answer = http.get(path)
        assert answer.status_code == 405 and answer.headers["allow"] == "POST", answer.text
        assert set(answer.json()) == {"error"} and "Method GET is not allowed" in answer.json()["error"]
    answer = http.post(f"/v2/models/{IRIS}/ready")
    assert answer.status_code == 405 and answer.headers["allow"] == "GET", answer.text


def test_a_malformed_version_is_400_not_404(http: httpx.Client) -> None:
    for path, headers in (
        (f"/v2/models/{IRIS}/versions/-1/infer", {}),
        (f"/v2/models/{IRIS}/versions/0/infer", {}),
        (f"/v2/models/{IRIS}/infer", {"X-Model-Version": "-1"}),
    ):
        answer = http.post(path, json=iris_json(ROWS), headers=headers)
        assert answer.status_code == 400 and "start at 1" in answer.json()["error"], (path, answer.text)


def _by_path(http: httpx.Client, model: str) -> dict[str, float]:
    counts = {"fast": 0.0, "pyfunc": 0.0}
    for line in http.get("/metrics").text.splitlines():
        if line.startswith("gateway_predictions_by_path_total{") and f'model="{model}"' in line:
            path = line.split('path="')[1].split('"')[0]
            counts[path] = float(line.rsplit(" ", 1)[1])
    return counts


def test_plain_numeric_tensors_take_the_fast_path_and_the_rest_pyfunc(
    client: triton.InferenceServerClient, http: httpx.Client, sqlite_registry: Registry
) -> None:
    """The signature's columns in their own dtype, nothing else: the flavor's own predict,
    batched with MLflow-protocol requests like any; other dtypes, params or another content
    type: pyfunc. Both answer as pyfunc does (the tests above),
    so only the road is checked here."""
    before = _by_path(http, IRIS)
    for binary in (True, False):
        outputs = None if binary else [triton.InferRequestedOutput("output-1", binary_data=False)]
        client.infer(IRIS, iris_inputs(ROWS, binary=binary), model_version="2", outputs=outputs)
    plain = _by_path(http, IRIS)
    assert plain["fast"] == before["fast"] + 2 and plain["pyfunc"] == before["pyfunc"]
    # a tensor of another dtype than the column's is pyfunc's to judge: MLflow refuses int64
    # for a double column, and the fast path must not quietly take it
    ints = iris_json(ROWS.round().astype(np.int64))
    for tensor in ints["inputs"]:
        tensor["datatype"] = "INT64"
    refused = http.post(f"/v2/models/{IRIS}/versions/2/infer", json=ints)
    assert refused.status_code == 400 and "int64" in refused.json()["error"], refused.text
    after = _by_path(http, IRIS)
    assert after["fast"] == plain["fast"] and after["pyfunc"] == plain["pyfunc"] + 1
