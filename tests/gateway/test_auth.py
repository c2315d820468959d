"""GATEWAY_AUTH=keys: every route declares what it needs, and one check in front of both
lanes (the bare-ASGI predict lane and FastAPI) enforces it, before any registry lookup or
model load. Keys live in the state database and are followed without a restart."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.responses import PlainTextResponse

from gateway.admission import auth
from gateway.admission.access import Access, AccessMap, UndeclaredRoute, declared, routes
from gateway.admission.auth import KeyRing, admin_token_key
from gateway.app import create_app
from gateway.cli import is_loopback, main
from gateway.settings import GatewaySettings
from tests.conftest import Gateway, Registry
from tests.support.keys import add_key, bearer, keyed_gateway, revoke_key
from tests.support.waiting import until

pytestmark = pytest.mark.anyio

X = {"dataframe_records": [{"x": 1.5}]}
TOKEN = "auth-admin-t0ken"


@pytest.fixture(scope="session")
def registry(sqlite_registry: Registry) -> Registry:
    return sqlite_registry


def metric(gateway: Gateway, name: str, **labels: str) -> float:
    return gateway.services.metrics.registry.get_sample_value(name, labels) or 0.0


# --- every route declares its access ------------------------------------------------------

EXPECTED = {
    # usage per caller and model (issue 53): everyone's with read or admin, else one's own
    ("GET", "/usage"): Access.CALLER,
    # ground truth and live quality (issue 50): labels have a scope of their own
    ("POST", "/feedback"): Access.FEEDBACK,
    ("GET", "/quality"): Access.READ,
    ("GET", "/models/{name}/versions/{version}/quality"): Access.READ,
    # drift (issue 51): figures anyone who may read the models may read
    ("GET", "/drift"): Access.READ,
    ("GET", "/models/{name}/versions/{version}/drift"): Access.READ,
    # jobs (issue 52): submitting is predicting; reading a job takes read, or the key that submitted it
    ("POST", "/models/{name}/jobs"): Access.PREDICT,
    ("POST", "/models/{name}/versions/{version}/jobs"): Access.PREDICT,
    ("GET", "/jobs"): Access.LIST,
    ("GET", "/jobs/{job_id}"): Access.LIST,
    ("DELETE", "/jobs/{job_id}"): Access.LIST,
    ("GET", "/jobs/{job_id}/result"): Access.LIST,
    ("POST", "/models/{name}/versions/{version}/predict"): Access.PREDICT,
    ("POST", "/models/{name}/predict"): Access.PREDICT,
    # mlflow models serve's own routes: /invocations serves GATEWAY_DEFAULT_MODEL
    ("POST", "/invocations"): Access.PREDICT,
    ("POST", "/models/{name}/invocations"): Access.PREDICT,
    ("POST", "/models/{name}/versions/{version}/invocations"): Access.PREDICT,
    ("GET", "/ping"): Access.PROBE,
    ("GET", "/health"): Access.PROBE,
    ("GET", "/version"): Access.PROBE,
    ("GET", "/models"): Access.READ,
    ("GET", "/models/{name}"): Access.READ,
    ("GET", "/models/{name}/versions/{version}"): Access.READ,
    ("GET", "/models/{name}/traffic"): Access.READ,
    ("GET", "/events"): Access.READ,
    ("GET", "/fleet"): Access.READ,
    ("GET", "/status"): Access.READ,
    ("POST", "/admin/sync"): Access.ADMIN,
    ("POST", "/webhooks/mlflow"): Access.WEBHOOK,
    ("GET", "/health/live"): Access.PROBE,
    ("GET", "/health/ready"): Access.PROBE,
    ("GET", "/metrics"): Access.PROBE,
    ("GET", "/openapi.json"): Access.PUBLIC,
    ("GET", "/docs"): Access.PUBLIC,
    ("GET", "/redoc"): Access.PUBLIC,
    ("*", "/docs/assets"): Access.PUBLIC,
    # the Open Inference Protocol: a model's metadata and readiness are for whoever may infer on it
    ("GET", "/v2"): Access.PROBE,
    ("GET", "/v2/health/live"): Access.PROBE,
    ("GET", "/v2/health/ready"): Access.PROBE,
    ("GET", "/v2/models/{name}"): Access.PREDICT,
    ("GET", "/v2/models/{name}/versions/{version}"): Access.PREDICT,
    ("GET", "/v2/models/{name}/ready"): Access.PREDICT,
    ("GET", "/v2/models/{name}/versions/{version}/ready"): Access.PREDICT,
    ("POST", "/v2/models/{name}/infer"): Access.PREDICT,
    ("POST", "/v2/models/{name}/versions/{version}/infer"): Access.PREDICT,
    # OpenAI's routes: the model is in the body; their lane asks the gate once it has read it
    ("POST", "/v1/responses"): Access.PREDICT,
    ("POST", "/v1/chat/completions"): Access.PREDICT,
    ("GET", "/v1/models"): Access.LIST,
}


@pytest.mark.parametrize("role", ["all", "sync"])
def test_every_route_of_the_app_declares_its_access(make_settings: Callable[..., GatewaySettings], role: str) -> None:
    app = create_app(make_settings(auth="keys", role=role))
    found = {}
    every = routes(app)  # app.routes, with included routers opened up
    assert len(every) >= len(app.routes)
    for route in every:
        access = declared(route, openapi_url=app.openapi_url)
        assert access is not None, f"{getattr(route, 'path', route)} declares no access"
        methods = getattr(route, "methods", None) or {"*"}
        for method in methods - {"HEAD"}:
            found[(method, route.path)] = access
    # what a sync-only process does not serve (it answers nothing a label could be for)
    served = ("/models", "/v2", "/invocations", "/v1", "/feedback", "/quality", "/drift", "/jobs")
    expected = {k: v for k, v in EXPECTED.items() if role == "all" or not k[1].startswith(served)}
    assert found == expected  # a new route is a decision: add it here with the access it needs


async def test_a_route_added_without_a_declaration_stops_the_app(make_settings: Callable[..., GatewaySettings]) -> None:
    app = create_app(make_settings(auth="keys"))

    async def predict_like() -> PlainTextResponse:  # e.g. a /score someone adds later
        return PlainTextResponse("unchecked")

    app.add_api_route("/score", predict_like, methods=["POST"])
    with pytest.raises(UndeclaredRoute, match="/score"):
        AccessMap.of(app)
    with pytest.raises(UndeclaredRoute, match="/score"):
        async with app.router.lifespan_context(app):
            pass


# --- 401 and 403 -----------------------------------------------------------------------------


async def test_without_a_valid_key_every_route_but_the_open_ones_is_401(
    make_settings: Callable[..., GatewaySettings], registry: Registry
) -> None:
    settings = make_settings(auth="keys", admin_token=TOKEN)
    secret = add_key(settings, "ci", "predict:*,read")
    async with keyed_gateway(settings, registry) as (gateway, _):
        client = gateway.client
        closed = [
            ("POST", "/models/doubler/predict"),
            ("POST", "/models/doubler/versions/1/predict"),
            ("GET", "/models"),
            ("GET", "/models/doubler"),
            ("GET", "/models/doubler/versions/1"),
            ("GET", "/events"),
            ("POST", "/admin/sync"),
            ("GET", "/no/such/endpoint"),
            ("GET", "/models/doubler/predict"),  # the route exists, the method does not: still a key first
        ]
        sent: list[dict[str, str]] = [{}, bearer("rgw_not-a-key"), {"X-API-Key": "rgw_not-a-key"}]
        sent += [{"Authorization": f"Basic {secret}"}, bearer(secret[:-1])]  # a key is sent whole, as a bearer
        for headers in sent:
            for method, path in closed:
                response = await client.request(method, path, json=X, headers=headers)
                assert response.status_code == 401, (method, path, headers, response.text)
                assert response.headers["www-authenticate"].startswith("Bearer")
                body = response.json()
                assert body["error_code"] == "UNAUTHENTICATED" and set(body) == {"error_code", "message"}
                assert secret[:-1] not in response.text and "not-a-key" not in response.text
        # No header and a Basic one send no key; the other three send a wrong one.
        assert metric(gateway, "gateway_auth_failures_total", reason="missing") == 2 * len(closed)
        assert metric(gateway, "gateway_auth_failures_total", reason="unknown") == 3 * len(closed)
        assert gateway.services.cache.keys() == []  # nothing was loaded for anyone
        # Probes, the API's description and webhooks (their own signature) need no key.
        for path in ("/health/live", "/health/ready", "/metrics", "/openapi.json", "/docs", "/docs/assets/favicon.png"):
            assert (await client.get(path)).status_code == 200, path
        assert (await client.post("/webhooks/mlflow", content=b"{}")).status_code == 404  # off: no secret set
        # With the key, in either header, the same routes answer.
        for headers in (bearer(secret), {"X-API-Key": secret}, {"authorization": f"bearer  {secret} "}):
            response = await client.post("/models/doubler/predict", json=X, headers=headers)
            assert response.status_code == 200 and response.json() == {"predictions": [3.0]}
        assert (await client.get("/models", headers=bearer(secret))).status_code == 200
        missing = await client.get("/no/such/endpoint", headers=bearer(secret))
        assert missing.status_code == 404 and missing.json()["error_code"] == "ENDPOINT_NOT_FOUND"


async def test_a_scope_the_key_lacks_is_403_before_any_lookup_or_load(
    make_settings: Callable[..., GatewaySettings], registry: Registry
) -> None:
    settings = make_settings(auth="keys")
    iris_only = add_key(settings, "iris-only", "predict:iris*")
    everything = add_key(settings, "everything", "predict:*")
    async with keyed_gateway(settings, registry) as (gateway, reader):
        client = gateway.client
        for path in (
            "/models/doubler/predict",
            "/models/doubler/versions/1/predict",
            "/models/no-such-model/predict",  # 403, not 404: a key cannot learn what exists outside its scope
        ):
            response = await client.post(path, json=X, headers=bearer(iris_only))
            assert response.status_code == 403, (path, response.text)
            body = response.json()
            assert body["error_code"] == "PERMISSION_DENIED" and "'iris-only'" in body["message"]
            assert iris_only not in response.text
        for method, path in (("GET", "/models"), ("GET", "/models/iris"), ("GET", "/events"), ("POST", "/admin/sync")):
            response = await client.request(method, path, headers=bearer(iris_only))
            assert response.status_code == 403, (path, response.text)
        assert reader.named_reads == []  # the unknown model was never looked up in MLflow
        assert (
            gateway.services.cache.keys() == [] and metric(gateway, "gateway_cache_misses_total", model="doubler") == 0
        )
        # The same requests with a key that may: the checks above could have failed.
        response = await client.post("/models/no-such-model/predict", json=X, headers=bearer(everything))
        assert response.status_code == 404 and reader.named_reads == ["no-such-model"]
        assert (await client.post("/models/doubler/predict", json=X, headers=bearer(everything))).status_code == 200
        assert [key.name for key in gateway.services.cache.keys()] == ["doubler"]
        metrics = (await client.get("/metrics")).text
        assert 'gateway_key_requests_total{key="iris-only",outcome="forbidden"} 7.0' in metrics
        assert 'gateway_key_requests_total{key="everything",outcome="allowed"} 2.0' in metrics
        assert iris_only not in metrics and everything not in metrics


async def test_the_open_inference_protocol_passes_the_same_gate_and_answers_in_its_own_shape(
    make_settings: Callable[..., GatewaySettings], registry: Registry
) -> None:
    settings = make_settings(auth="keys")
    iris_only = add_key(settings, "iris-only", "predict:iris*")
    doubler = add_key(settings, "doubler", "predict:doubler")
    body = {"inputs": [{"name": "x", "datatype": "FP64", "shape": [1], "data": [1.5]}]}
    async with keyed_gateway(settings, registry) as (gateway, _):
        client = gateway.client
        for method, path in [
            ("POST", "/v2/models/doubler/infer"),
            ("POST", "/v2/models/doubler/versions/1/infer"),
            ("GET", "/v2/models/doubler"),
            ("GET", "/v2/models/doubler/ready"),
        ]:
            missing = await client.request(method, path, json=body)
            assert missing.status_code == 401 and set(missing.json()) == {"error"}, (path, missing.text)
            other = await client.request(method, path, json=body, headers=bearer(iris_only))
            assert other.status_code == 403 and "iris-only" in other.json()["error"], (path, other.text)
            allowed = await client.request(method, path, json=body, headers=bearer(doubler))
            assert allowed.status_code == 200, (path, allowed.text)
        assert (await client.get("/v2/health/ready")).json() == {"ready": True}  # a probe: no key
        assert (await client.get("/v2")).status_code == 200


async def test_read_and_admin_scopes_and_the_admin_token(
    make_settings: Callable[..., GatewaySettings], registry: Registry
) -> None:
    settings = make_settings(auth="keys", admin_token=TOKEN)
    reader_key = add_key(settings, "reader", "read")
    admin_key = add_key(settings, "ops", "admin")
    async with keyed_gateway(settings, registry) as (gateway, _):
        client = gateway.client
        for path in ("/models", "/models/doubler", "/models/doubler/versions/1", "/events?limit=5"):
            assert (await client.get(path, headers=bearer(reader_key))).status_code == 200, path
        assert (await client.post("/models/doubler/predict", json=X, headers=bearer(reader_key))).status_code == 403
        assert (await client.post("/admin/sync", headers=bearer(reader_key))).status_code == 403
        assert (await client.get("/models", headers=bearer(admin_key))).status_code == 403  # admin is not read
        assert (await client.post("/admin/sync", headers=bearer(admin_key))).status_code == 200
        # GATEWAY_ADMIN_TOKEN still works for /admin/sync (CI pipelines), and for nothing else.
        assert (await client.post("/admin/sync", headers=bearer(TOKEN))).status_code == 200
        assert (await client.get("/models", headers=bearer(TOKEN))).status_code == 403


async def test_metrics_auth_on_closes_health_and_metrics_to_callers_without_read(
    make_settings: Callable[..., GatewaySettings], registry: Registry
) -> None:
    settings = make_settings(auth="keys", metrics_auth="on")
    scraper = add_key(settings, "scraper", "read")
    caller = add_key(settings, "caller", "predict:*")
    async with keyed_gateway(settings, registry) as (gateway, _):
        for path in ("/metrics", "/health/ready", "/health/live"):
            assert (await gateway.client.get(path)).status_code == 401
            assert (await gateway.client.get(path, headers=bearer(caller))).status_code == 403
            assert (await gateway.client.get(path, headers=bearer(scraper))).status_code == 200
        assert (await gateway.client.get("/docs")).status_code == 200


def test_the_headers_of_a_found_key_are_remembered_and_no_others() -> None:
    """A request's key is found from its headers' bytes once; an unknown key's are never kept,
    and a key's holder varying the header it does not use cannot grow what is kept."""
    ring = KeyRing(store=None, follow_interval_seconds=60, fixed=[admin_token_key(TOKEN)])  # type: ignore[arg-type]
    sent = [(b"authorization", f"Bearer {TOKEN}".encode())]
    found, carried = ring.identify(sent)
    assert found is not None and found.name == auth.ADMIN_TOKEN_KEY and carried
    assert ring.identify(sent) == (found, True)
    assert len(ring._remembered[1]) == 1
    for n in range(3 * auth._REMEMBERED):
        assert ring.identify([(b"x-api-key", f"rgw_guess-{n}".encode())]) == (None, True)
        assert ring.identify([*sent, (b"x-api-key", f"other-{n}".encode())])[0] is found
        assert len(ring._remembered[1]) <= auth._REMEMBERED
    assert ring.identify([(b"authorization", f"Basic {TOKEN}".encode())]) == (None, False)
    assert ring.identify([(b"x-api-key", b"  ")]) == (None, False)
    assert ring.identify([(b"x-api-key", f" {TOKEN} ".encode())])[0] is found
    # Padded headers still carry the key, but are not kept: what is kept stays small.
    ring._remembered[1].clear()
    padded = [(b"authorization", f"Bearer {TOKEN}".encode() + b" " * auth._REMEMBERED_BYTES)]
    assert ring.identify(padded) == (found, True)
    assert not ring._remembered[1]


def test_the_first_authorization_and_the_first_x_api_key_header_are_read() -> None:
    """As Starlette's Headers.get: a second header of either name is not looked at."""
    ring = KeyRing(store=None, follow_interval_seconds=60, fixed=[admin_token_key(TOKEN)])  # type: ignore[arg-type]
    bearer_second = [(b"authorization", b"Basic abc"), (b"authorization", f"Bearer {TOKEN}".encode())]
    assert ring.identify(bearer_second) == (None, False)
    key_second = [(b"x-api-key", b" "), (b"x-api-key", TOKEN.encode())]
    assert ring.identify(key_second) == (None, False)
    # A bearer wins over X-API-Key; a non-bearer Authorization leaves X-API-Key to be read.
    assert ring.identify([(b"x-api-key", b"rgw_wrong"), (b"authorization", f"Bearer {TOKEN}".encode())])[0] is not None
    assert ring.identify([(b"authorization", b"Basic abc"), (b"x-api-key", TOKEN.encode())])[0] is not None


# --- keys change without a restart ------------------------------------------------------------


async def test_a_new_and_a_revoked_key_count_from_the_next_follow(
    make_settings: Callable[..., GatewaySettings], registry: Registry
) -> None:
    settings = make_settings(auth="keys", follow_interval_seconds=0.05)
    first = add_key(settings, "first", "predict:*")
    async with keyed_gateway(settings, registry) as (gateway, _):
        client = gateway.client

        async def status(secret: str) -> int:
            return (await client.post("/models/doubler/predict", json=X, headers=bearer(secret))).status_code

        assert await status(first) == 200
        second = add_key(settings, "second", "predict:doubler")  # as `keys create` does, while it runs
        revoke_key(settings, "first")
        keys = gateway.services.gate.keys
        assert keys is not None
        await until(lambda: keys.names() == ["second"], what="the follower to see the new and the revoked key")
        assert await status(first) == 401 and await status(second) == 200
        events = (await client.get("/events", headers=bearer(second))).status_code
        assert events == 403  # a predict key reads no events


async def test_the_keys_commands_and_a_running_gateway_share_the_database(
    make_settings: Callable[..., GatewaySettings], registry: Registry
) -> None:
    # The test refreshes as the follower would; the follower itself is kept out of its way (every
    # second by default: on a busy machine it took the revocation first, and refresh() saw none).
    settings = make_settings(auth="keys", follow_interval_seconds=3600)
    add_key(settings, "placeholder", "read")
    env = {"GATEWAY_DATABASE_URL": settings.database_url}
    async with keyed_gateway(settings, registry) as (gateway, _):
        created = CliRunner().invoke(main, ["keys", "create", "cli-made", "--scopes", "predict:doub*"], env=env)
        assert created.exit_code == 0, created.output
        secret = created.output.splitlines()[-1]
        keys = gateway.services.gate.keys
        assert keys is not None and await keys.refresh()  # what the follower does each interval
        response = await gateway.client.post("/models/doubler/predict", json=X, headers=bearer(secret))
        assert response.status_code == 200
        assert CliRunner().invoke(main, ["keys", "revoke", "cli-made"], env=env).exit_code == 0
        assert await keys.refresh()
        response = await gateway.client.post("/models/doubler/predict", json=X, headers=bearer(secret))
        assert response.status_code == 401


async def test_with_auth_off_nothing_asks_for_a_key(
    make_settings: Callable[..., GatewaySettings], registry: Registry
) -> None:
    settings = make_settings()
    async with keyed_gateway(settings, registry) as (gateway, _):
        assert not gateway.services.gate.active and gateway.services.gate.keys is None
        assert (await gateway.client.post("/models/doubler/predict", json=X)).status_code == 200
        assert (await gateway.client.get("/models")).status_code == 200


# --- serve binds only loopback without auth ----------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.0.0.2", True), ("localhost", True), ("::1", True), ("[::1]", True)]
    + [("0.0.0.0", False), ("::", False), ("10.1.2.3", False), ("gateway.example", False), ("", False)],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_serve_refuses_a_public_address_with_auth_off_and_says_why(tmp_path: Any) -> None:
    env = {"GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path / 'state.db'}", "GATEWAY_AUTH": "off"}
    result = CliRunner().invoke(main, ["serve", "--host", "0.0.0.0"], env=env)
    assert result.exit_code != 0
    assert (
        "GATEWAY_AUTH=off" in result.output and "--insecure" in result.output and "GATEWAY_AUTH=keys" in result.output
    )
    assert not (tmp_path / "state.db").exists()  # refused before anything else
    assert "--insecure" in CliRunner().invoke(main, ["serve", "--help"]).output
