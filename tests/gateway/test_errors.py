"""Garbage in: a clear 4xx with a JSON body naming the problem, and the server serves on."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.routing import Mount
from starlette.testclient import TestClient

from gateway import errors
from gateway.admission.access import routes
from gateway.app import GatewayApp, create_app
from gateway.demo import IRIS, TORCH, torch_available
from gateway.http import errors as http_errors
from registry_sync.registry import RegistryReader
from tests.conftest import IRIS_COLUMNS, Registry, iris_split
from tests.support.ci import needs

PREDICT = f"/models/{IRIS}/versions/1/predict"
GOOD = iris_split([[5.1, 3.5, 1.4, 0.2]])
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="session")
def registry(sqlite_registry: Registry) -> Registry:
    return sqlite_registry


@pytest.fixture(scope="module")
def client(sqlite_registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """One gateway for the whole module: garbage must not wear it down."""
    from gateway.settings import GatewaySettings

    workdir = tmp_path_factory.mktemp("errors-gateway")
    settings = GatewaySettings(
        artifact_cache_dir=workdir / "cache",
        database_url=f"sqlite:///{workdir / 'state.db'}",
        max_body_bytes=64 * 1024,
        load_retry_seconds=0,
        warm_aliases=[],
    )
    app = create_app(settings, reader=RegistryReader(tracking_uri=sqlite_registry.tracking_uri))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def assert_error(response: Any, status: int, code: str | None = None, *, mentions: tuple[str, ...] = ()) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error_code", "message"}
    if code is not None:
        assert body["error_code"] == code
    for text in mentions:
        assert text in body["message"], body["message"]
    assert "Traceback" not in body["message"]


@pytest.fixture(autouse=True)
def still_serving(client: TestClient) -> Iterator[None]:
    yield
    response = client.post(PREDICT, json=GOOD)
    assert response.status_code == 200, f"the gateway stopped serving: {response.text}"


BAD_BODIES: list[tuple[str, bytes | str, str, tuple[str, ...]]] = [
    ("not json", b"garbage", "BAD_REQUEST", ("not valid JSON",)),
    ("empty", b"", "BAD_REQUEST", ("not valid JSON",)),
    ("a list", b"[1, 2]", "BAD_REQUEST", ("list",)),
    ("a string", b'"x"', "BAD_REQUEST", ("str",)),
    ("no input key", b'{"rows": [[1, 2, 3, 4]]}', "BAD_REQUEST", ("'rows'", "dataframe_split")),
    ("two input keys", orjson.dumps({**GOOD, "instances": [[1, 2, 3, 4]]}), "BAD_REQUEST", ("instances",)),
    ("params not an object", orjson.dumps({**GOOD, "params": [1]}), "INVALID_PARAMETER_VALUE", ("params",)),
    ("invalid utf-8", b'{"inputs": "\xff\xfe"}', "BAD_REQUEST", ()),
    ("deep nesting", b"[" * 5000 + b"]" * 5000, "BAD_REQUEST", ()),
    # read as infinity, as MLflow's json reads it, then refused by the schema, as MLflow does
    ("a number out of range", b'{"inputs": [1e400]}', "INVALID_PARAMETER_VALUE", ("inf",)),
    (
        "missing column",
        orjson.dumps({"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2]]}}),
        "INVALID_PARAMETER_VALUE",
        ("sepal length (cm)",),
    ),
    (
        "text in a double column",
        orjson.dumps(iris_split([["abc", 3.5, 1.4, 0.2]])),
        None,  # MLflow calls a failed cast BAD_REQUEST; either way, a 400 that names it
        ("sepal length (cm)",),
    ),
    ("split data not a list", orjson.dumps({"dataframe_split": {"columns": IRIS_COLUMNS, "data": 5}}), None, ()),
    ("records not records", orjson.dumps({"dataframe_records": [1, 2, 3]}), None, ()),
    ("split is a string", orjson.dumps({"dataframe_split": "nope"}), None, ()),
]


@pytest.mark.parametrize(("body", "code", "mentions"), [b[1:] for b in BAD_BODIES], ids=[b[0] for b in BAD_BODIES])
def test_bad_json_bodies_get_400(client: TestClient, body: bytes, code: str | None, mentions: tuple[str, ...]) -> None:
    assert_error(client.post(PREDICT, content=body, headers=JSON), 400, code, mentions=mentions)


def test_bad_csv_gets_400(client: TestClient) -> None:
    csv = {"content-type": "text/csv"}
    assert_error(client.post(PREDICT, content=b'a,b\n1,"unterminated\n', headers=csv), 400)
    assert_error(client.post(PREDICT, content=b"\xff\xfe\x00", headers=csv), 400, "BAD_REQUEST")
    response = client.post(PREDICT, content=b"a,b\n1,2\n", headers=csv)
    assert_error(response, 400, "INVALID_PARAMETER_VALUE", mentions=("sepal length (cm)",))


@pytest.mark.parametrize(
    "content_type", [None, "application/xml", "text/plain", "application/json; charset=latin-1", "multipart/form-data"]
)
def test_unsupported_content_types_get_415(client: TestClient, content_type: str | None) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = client.post(PREDICT, content=orjson.dumps(GOOD), headers=headers)
    assert_error(response, 415, mentions=("application/json", "text/csv"))


def test_a_body_over_the_limit_gets_413(client: TestClient) -> None:
    big = orjson.dumps(iris_split([[5.1, 3.5, 1.4, 0.2]] * 5000))
    assert len(big) > 64 * 1024
    assert_error(client.post(PREDICT, content=big, headers=JSON), 413, mentions=("GATEWAY_MAX_BODY_BYTES",))


def test_a_chunked_body_over_the_limit_gets_413(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(100):
            yield b" " * 1024  # no Content-Length: the limit is enforced while reading

    assert_error(client.post(PREDICT, content=chunks(), headers=JSON), 413)


@pytest.mark.parametrize(
    ("path", "status", "mentions"),
    [
        ("/models/no-such-model/predict", 404, ("no-such-model",)),
        ("/models/no-such-model/versions/1/predict", 404, ("no-such-model",)),
        (f"/models/{IRIS}/versions/99/predict", 404, ("99",)),
        (f"/models/{IRIS}/versions/gold/predict", 404, ("gold",)),
        (f"/models/{IRIS}/versions/0/predict", 400, ("'0'", "start at 1")),
        (f"/models/{IRIS}/versions/-1/predict", 400, ("'-1'", "start at 1", "no alias '-1'")),
        (f"/models/{IRIS}/versions/%20/predict", 400, ("empty",)),
        (f"/models/{IRIS}/versions/bad$alias/predict", 400, ("bad$alias",)),
        (f"/models/{IRIS}/versions/{'a' * 300}/predict", 400, ()),
    ],
)
def test_unknown_or_invalid_versions(client: TestClient, path: str, status: int, mentions: tuple[str, ...]) -> None:
    assert_error(client.post(path, json=GOOD), status, mentions=mentions)


@pytest.mark.parametrize(
    ("header", "mentions"),
    [("no spaces", ("no spaces", "only letters")), ("-1", ("'-1'", "start at 1")), ("", ("empty",))],
)
def test_bad_header_selector_gets_400(client: TestClient, header: str, mentions: tuple[str, ...]) -> None:
    for path in (f"/models/{IRIS}/predict", PREDICT):  # alone, or beside the path's
        response = client.post(path, json=GOOD, headers={"X-Model-Version": header})
        assert_error(response, 400, "INVALID_PARAMETER_VALUE", mentions=mentions)


def test_a_negative_version_in_the_metadata_path_gets_400(client: TestClient) -> None:
    response = client.get(f"/models/{IRIS}/versions/-1")
    assert_error(response, 400, "INVALID_PARAMETER_VALUE", mentions=("'-1'", "start at 1"))


def test_unknown_endpoints_and_methods_answer_json(client: TestClient) -> None:
    assert_error(client.get("/nope"), 404, "ENDPOINT_NOT_FOUND")
    response = client.get(PREDICT)
    assert_error(response, 405, "METHOD_NOT_ALLOWED", mentions=("GET", PREDICT, "POST"))
    assert response.headers["allow"] == "POST"


def _methods_of_every_route(client: TestClient) -> list[tuple[str, frozenset[str]]]:
    """Each route of the app as a path one can send to, and the methods it takes."""
    assert isinstance(client.app, GatewayApp)
    found = []
    for route in routes(client.app):
        if isinstance(getattr(route, "original_route", route), Mount):  # the /docs assets: StaticFiles
            found.append((f"{route.path}/swagger-ui.css", frozenset({"GET", "HEAD"})))
        else:
            path = route.path.replace("{name}", IRIS).replace("{version}", "1")
            found.append((path, frozenset(route.methods)))
    return found


def test_every_route_refuses_a_method_it_does_not_take_the_same_way(client: TestClient) -> None:
    """405 METHOD_NOT_ALLOWED with an Allow header naming what the route takes: the predict
    routes (answered on the bare-ASGI lane for POST) like every other; the OIP's routes in
    their own body shape."""
    every = _methods_of_every_route(client)
    assert any(path == PREDICT for path, _ in every) and any(path.endswith("/infer") for path, _ in every)
    for path, methods in every:
        for method in sorted({"GET", "POST", "PUT", "DELETE", "PATCH"} - methods):
            response = client.request(method, path)
            assert response.status_code == 405, (method, path, response.text)
            assert response.headers["allow"] == ", ".join(sorted(methods)), (method, path)
            body = response.json()
            if path.startswith("/v2"):
                assert set(body) == {"error"}, body
                message = body["error"]
            else:
                assert body["error_code"] == "METHOD_NOT_ALLOWED", (method, path, body)
                message = body["message"]
            assert f"Method {method} is not allowed on {path}" in message, message


@pytest.mark.parametrize("before", [str(2**63), str(-(2**70)), "0"])
def test_event_ids_out_of_range_get_400(client: TestClient, before: str) -> None:
    """Found by schemathesis: 2**63 reached sqlite, which raised (a 500)."""
    assert_error(client.get("/events", params={"before": before}), 400, "INVALID_PARAMETER_VALUE", mentions=("before",))


def test_unknown_model_metadata_is_404(client: TestClient) -> None:
    assert_error(client.get("/models/no-such-model"), 404, mentions=("no-such-model",))
    assert_error(client.get(f"/models/{IRIS}/versions/42"), 404, mentions=("42",))


@needs(torch_available(), "torch is not installed (the [torch] extra)")
def test_wrong_tensor_shapes_get_400(client: TestClient) -> None:
    path = f"/models/{TORCH}/versions/1/predict"
    assert_error(client.post(path, json={"inputs": [[1.0, 2.0]]}), 400, mentions=("shape",))
    assert_error(client.post(path, json={"inputs": [["a", "b", "c", "d"]]}), 400)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=20,
)
_bodies = st.one_of(
    _json_values,
    st.builds(
        lambda key, value: {key: value},
        st.sampled_from(["dataframe_split", "dataframe_records", "instances", "inputs"]),
        _json_values,
    ),
    st.builds(lambda data: {"dataframe_split": {"columns": IRIS_COLUMNS, "data": data}}, _json_values),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=_bodies)
def test_random_json_never_breaks_the_gateway(client: TestClient, body: Any) -> None:
    response = client.post(PREDICT, content=orjson.dumps(body), headers=JSON)
    assert response.status_code in (200, 400), response.text
    if response.status_code == 400:
        assert set(response.json()) == {"error_code", "message"}


def test_every_error_the_data_plane_raises_has_its_row_in_the_one_table() -> None:
    """Else it would answer a generic 500, and the README's table of errors (checked against
    that table, tests/test_readme.py) would not say when."""
    pending, unmapped = [errors.GatewayError], []
    while pending:
        kind = pending.pop()
        pending.extend(kind.__subclasses__())
        if kind is not errors.GatewayError and not any(issubclass(kind, row) for row, _ in http_errors._TABLE):
            unmapped.append(kind.__name__)
    assert not unmapped, f"no row in gateway/http/errors.py for {unmapped}"
