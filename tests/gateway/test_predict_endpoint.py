"""The predict paths on bare ASGI answer exactly what FastAPI's declared routes answer.

GatewayApp serves the two predict paths before FastAPI sees them; with
``serves_predictions`` off, the same app routes them through FastAPI (gateway.protocols.mlflow_routes).
Every request here is sent both ways and must get the same status, body and headers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from starlette.testclient import TestClient

from gateway.app import GatewayApp, create_app
from gateway.demo import IRIS, log_iris_version, using_registry
from gateway.protocols.mlflow_predict import header_value, match, route_path
from gateway.settings import GatewaySettings
from registry_sync.registry import RegistryReader
from tests.conftest import Registry, iris_split
from tests.support.mlflow_db import new_mlflow_db

GOOD = orjson.dumps(iris_split([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]))
JSON = {"content-type": "application/json"}
XML = {"content-type": "text/xml"}
UNICODE_NAME = "ирис 模型"  # MLflow takes any name without '/'; a header value cannot carry it as is
UNICODE_ALIAS = "чемпион"  # MLflow's alias rule is \w with Python's Unicode \w
NEGATIVE_ALIAS = "-7"  # ^[\w\-]*$ too: an alias, though it reads as a version number


@pytest.fixture(scope="module")
def unicode_registry(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("unicode-registry")
    tracking_uri = new_mlflow_db(root / "mlflow.db")
    with using_registry(tracking_uri, root / "artifacts") as client:
        version = log_iris_version(UNICODE_NAME)
        client.set_registered_model_alias(UNICODE_NAME, "champion", str(version))
        client.set_registered_model_alias(UNICODE_NAME, UNICODE_ALIAS, str(version))
        iris = log_iris_version(IRIS)
        client.set_registered_model_alias(IRIS, NEGATIVE_ALIAS, str(iris))  # MLflow takes it
    return tracking_uri


def _client(tracking_uri: str, workdir: Path) -> TestClient:
    settings = GatewaySettings(
        artifact_cache_dir=workdir / "cache",
        database_url=f"sqlite:///{workdir / 'state.db'}",
        max_body_bytes=4096,
        load_retry_seconds=0,
        warm_aliases=[],
    )
    app = create_app(settings, reader=RegistryReader(tracking_uri=tracking_uri))
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture(scope="module")
def client(sqlite_registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with _client(sqlite_registry.tracking_uri, tmp_path_factory.mktemp("lane-gateway")) as test_client:
        yield test_client


def both_ways(client: TestClient, method: str, url: str, **kwargs: Any) -> httpx.Response:
    """Send the request through the ASGI lane and through FastAPI; they must agree."""
    app = client.app
    assert isinstance(app, GatewayApp) and app.serves_predictions
    # the request's id is echoed either way: the same one sent, the same one back
    headers = kwargs.get("headers") or {}
    headers = [("X-Request-ID", "both-ways"), *(headers.items() if isinstance(headers, dict) else headers)]
    kwargs = {**kwargs, "headers": headers}
    lane = client.request(method, url, **kwargs)
    assert lane.headers["x-request-id"] == "both-ways"
    app.serves_predictions = False
    try:
        routed = client.request(method, url, **kwargs)
    finally:
        app.serves_predictions = True
    assert (lane.status_code, lane.content) == (routed.status_code, routed.content), (lane.text, routed.text)
    ignored = {"date", "server"}
    assert {k: v for k, v in lane.headers.items() if k not in ignored} == {
        k: v for k, v in routed.headers.items() if k not in ignored
    }
    return lane


REQUESTS: list[tuple[str, str, str, dict[str, Any]]] = [
    ("a prediction", "POST", f"/models/{IRIS}/versions/1/predict", {"content": GOOD, "headers": JSON}),
    ("by alias", "POST", f"/models/{IRIS}/versions/champion/predict", {"content": GOOD, "headers": JSON}),
    ("by header", "POST", f"/models/{IRIS}/predict", {"content": GOOD, "headers": {**JSON, "X-Model-Version": "2"}}),
    ("default alias", "POST", f"/models/{IRIS}/predict", {"content": GOOD, "headers": JSON}),
    (
        "csv with charset",
        "POST",
        f"/models/{IRIS}/versions/latest/predict",
        {
            "content": b"sepal length (cm),sepal width (cm),petal length (cm),petal width (cm)\n5.1,3.5,1.4,0.2\n",
            "headers": {"content-type": "text/csv; charset=utf-8"},
        },
    ),
    (
        "path and header disagree",
        "POST",
        f"/models/{IRIS}/versions/1/predict",
        {"content": GOOD, "headers": {**JSON, "X-Model-Version": "2"}},
    ),
    ("unknown model", "POST", "/models/no-such-model/versions/1/predict", {"content": GOOD, "headers": JSON}),
    ("unknown alias", "POST", f"/models/{IRIS}/versions/nope/predict", {"content": GOOD, "headers": JSON}),
    ("bad selector", "POST", f"/models/{IRIS}/versions/-3/predict", {"content": GOOD, "headers": JSON}),
    ("no content type", "POST", f"/models/{IRIS}/versions/1/predict", {"content": GOOD}),
    ("xml", "POST", f"/models/{IRIS}/versions/1/predict", {"content": b"<a/>", "headers": XML}),
    (
        "two content types, the first wins",
        "POST",
        f"/models/{IRIS}/versions/1/predict",
        {"content": GOOD, "headers": [("content-type", "text/xml"), ("content-type", "application/json")]},
    ),
    ("not json", "POST", f"/models/{IRIS}/versions/1/predict", {"content": b"{", "headers": JSON}),
    ("empty body", "POST", f"/models/{IRIS}/versions/1/predict", {"content": b"", "headers": JSON}),
    ("an extra key", "POST", f"/models/{IRIS}/versions/1/predict", {"json": iris_split([[1, 2]]) | {"x": 1}}),
    ("too large", "POST", f"/models/{IRIS}/versions/1/predict", {"content": b" " * 5000, "headers": JSON}),
    (
        "bad content-length",
        "POST",
        f"/models/{IRIS}/versions/1/predict",
        {"content": GOOD, "headers": {**JSON, "content-length": "1e3"}},
    ),
    ("percent-encoded name", "POST", "/models/ir%69s/versions/1/predict", {"content": GOOD, "headers": JSON}),
    ("empty name", "POST", "/models//predict", {"content": GOOD, "headers": JSON}),
    ("empty version", "POST", f"/models/{IRIS}/versions//predict", {"content": GOOD, "headers": JSON}),
    ("trailing slash", "POST", f"/models/{IRIS}/predict/", {"content": GOOD, "headers": JSON}),
    ("GET", "GET", f"/models/{IRIS}/versions/1/predict", {}),
    ("PUT", "PUT", f"/models/{IRIS}/predict", {"content": GOOD, "headers": JSON}),
    ("deeper path", "POST", f"/models/{IRIS}/versions/1/predict/x", {"content": GOOD, "headers": JSON}),
]

# What each answers, whichever way it goes: (status, error_code)
EXPECTED: dict[str, tuple[int, str | None]] = {
    "a prediction": (200, None),
    "by alias": (200, None),
    "by header": (200, None),
    "default alias": (200, None),
    "csv with charset": (200, None),
    "path and header disagree": (400, "INVALID_PARAMETER_VALUE"),
    "unknown model": (404, "RESOURCE_DOES_NOT_EXIST"),
    "unknown alias": (404, "RESOURCE_DOES_NOT_EXIST"),
    "bad selector": (400, "INVALID_PARAMETER_VALUE"),
    "no content type": (415, "BAD_REQUEST"),
    "xml": (415, "BAD_REQUEST"),
    "two content types, the first wins": (415, "BAD_REQUEST"),
    "not json": (400, "BAD_REQUEST"),
    "empty body": (400, "BAD_REQUEST"),
    "an extra key": (400, "BAD_REQUEST"),
    "too large": (413, "REQUEST_LIMIT_EXCEEDED"),
    "bad content-length": (400, "BAD_REQUEST"),
    "percent-encoded name": (200, None),
    "empty name": (404, "ENDPOINT_NOT_FOUND"),
    "empty version": (404, "ENDPOINT_NOT_FOUND"),
    "trailing slash": (200, None),
    "GET": (405, "METHOD_NOT_ALLOWED"),
    "PUT": (405, "METHOD_NOT_ALLOWED"),
    "deeper path": (404, "ENDPOINT_NOT_FOUND"),
}


@pytest.mark.parametrize(("what", "method", "url", "kwargs"), REQUESTS, ids=[r[0] for r in REQUESTS])
def test_the_lane_answers_as_fastapi_would(
    client: TestClient, what: str, method: str, url: str, kwargs: dict[str, Any]
) -> None:
    response = both_ways(client, method, url, **kwargs)
    assert response.headers["content-type"].startswith("application/json"), response.text
    status, error_code = EXPECTED[what]  # the same answer both ways, and the right one: not a 500 in both
    assert response.status_code == status, response.text
    if status >= 400:
        assert set(response.json()) == {"error_code", "message"}
        assert response.json()["error_code"] == error_code
    else:
        assert len(response.json()["predictions"]) in (1, 2)


def test_every_request_has_its_expected_answer() -> None:
    assert set(EXPECTED) == {what for what, *_ in REQUESTS}


@pytest.mark.parametrize("url", [f"/models/{IRIS}/versions/1/predict", f"/models/{IRIS}/predict"])
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_a_predict_path_refuses_other_methods_with_405_either_way(client: TestClient, method: str, url: str) -> None:
    response = both_ways(client, method, url)
    assert response.status_code == 405, response.text
    assert response.headers["allow"] == "POST"
    assert response.json()["error_code"] == "METHOD_NOT_ALLOWED"


def test_a_prediction_comes_through_the_lane(client: TestClient) -> None:
    response = both_ways(client, "POST", f"/models/{IRIS}/versions/champion/predict", content=GOOD, headers=JSON)
    assert response.status_code == 200
    assert len(response.json()["predictions"]) == 2
    assert response.headers["x-model-alias"] == "champion"
    assert response.headers["x-model-version"] == "1"


def test_metrics_count_requests_either_way(client: TestClient) -> None:
    # a 415 is decided before the model is known: counted under "_unknown"
    def count() -> float:
        text = client.get("/metrics").text
        line = next(
            line
            for line in text.splitlines()
            if line.startswith("gateway_requests_total{") and 'status="415"' in line and 'model="_unknown"' in line
        )
        return float(line.rsplit(" ", 1)[1])

    client.post(f"/models/{IRIS}/versions/1/predict", content=b"<a/>", headers={"content-type": "text/xml"})
    before = count()
    both_ways(client, "POST", f"/models/{IRIS}/versions/1/predict", content=b"<a/>", headers={"content-type": "a/b"})
    assert count() == before + 2


def test_a_model_name_no_header_can_hold(unicode_registry: str, tmp_path: Path) -> None:
    url = f"/models/{UNICODE_NAME}/versions/champion/predict"
    with _client(unicode_registry, tmp_path) as unicode_client:
        response = both_ways(unicode_client, "POST", url, content=GOOD, headers=JSON)
    assert response.status_code == 200, response.text
    assert response.headers["x-model-name"] == "%D0%B8%D1%80%D0%B8%D1%81 %E6%A8%A1%E5%9E%8B"
    assert response.headers["x-model-alias"] == "champion"


def test_a_unicode_alias_by_path_and_by_header(unicode_registry: str, tmp_path: Path) -> None:
    encoded = "%D1%87%D0%B5%D0%BC%D0%BF%D0%B8%D0%BE%D0%BD"
    with _client(unicode_registry, tmp_path) as unicode_client:
        by_path = both_ways(
            unicode_client,
            "POST",
            f"/models/{UNICODE_NAME}/versions/{UNICODE_ALIAS}/predict",
            content=GOOD,
            headers=JSON,
        )
        headers = {**JSON, "X-Model-Version": UNICODE_ALIAS.encode()}  # as clients send it: UTF-8
        by_header = both_ways(unicode_client, "POST", f"/models/{UNICODE_NAME}/predict", content=GOOD, headers=headers)
    for response in (by_path, by_header):
        assert response.status_code == 200, response.text
        assert (response.headers["x-model-version"], response.headers["x-model-alias"]) == ("1", encoded)


def test_an_alias_that_reads_as_a_negative_number_serves_and_a_missing_one_is_400(
    unicode_registry: str, tmp_path: Path
) -> None:
    with _client(unicode_registry, tmp_path) as test_client:
        by_path = both_ways(
            test_client, "POST", f"/models/{IRIS}/versions/{NEGATIVE_ALIAS}/predict", content=GOOD, headers=JSON
        )
        headers = {**JSON, "X-Model-Version": NEGATIVE_ALIAS}
        by_header = both_ways(test_client, "POST", f"/models/{IRIS}/predict", content=GOOD, headers=headers)
        missing = both_ways(test_client, "POST", f"/models/{IRIS}/versions/-1/predict", content=GOOD, headers=JSON)
    for response in (by_path, by_header):
        assert response.status_code == 200, response.text
        assert (response.headers["x-model-version"], response.headers["x-model-alias"]) == ("1", NEGATIVE_ALIAS)
    assert missing.status_code == 400, missing.text
    assert missing.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "version numbers start at 1" in missing.json()["message"]


def test_header_values_are_plain_ascii_or_percent_encoded() -> None:
    assert header_value("iris-v2_final.pkl") == "iris-v2_final.pkl"
    assert header_value("a b/c") == "a b/c"
    assert header_value("café") == "caf%C3%A9"
    assert header_value("line\nbreak") == "line%0Abreak"


def test_match_takes_what_starlette_routes_and_nothing_else() -> None:
    assert match("/models/iris/versions/3/predict") == ("iris", "3")
    assert match("/models/iris/predict") == ("iris", None)
    for path in ("/models//predict", "/models/iris/versions//predict", "/models/iris/predict/", "models/iris/predict"):
        assert match(path) is None, path
    assert match("/models/iris/versions/3/predict/") is None
    assert match("/models/a/b/predict") is None


def test_route_path_drops_a_root_path_prefix() -> None:
    assert route_path({"path": "/gw/models/iris/predict", "root_path": "/gw"}) == "/models/iris/predict"
    assert route_path({"path": "/gwx/models/iris/predict", "root_path": "/gw"}) == "/gwx/models/iris/predict"
    assert route_path({"path": "/models/iris/predict", "root_path": ""}) == "/models/iris/predict"
