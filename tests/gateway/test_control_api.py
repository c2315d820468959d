"""The control plane over HTTP: MLflow's webhooks, /admin/sync and the event history.

In-process app on the sqlite registry. Webhooks are signed here the way MLflow signs them;
the webhook is only a hint, so each test makes the change in MLflow for real first and
then checks that the gateway read it. Waiting is polling with a deadline, never sleeping.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, TypeVar

import httpx
import pytest
from mlflow.exceptions import MlflowException

from gateway.demo import IRIS
from gateway.settings import GatewaySettings
from tests.conftest import Gateway, Registry, running_gateway
from tests.support.models import Doubler, log_pyfunc
from tests.support.servers import free_port
from tests.support.waiting import eventually

pytestmark = pytest.mark.anyio

SECRET = "s3cret"
TOKEN = "t0ken"
HINTED = "control-api-hinted"  # a model of this file's own: its aliases come and go here
SYNCED = "control-api-synced"  # ditto, for /admin/sync
X = {"dataframe_records": [{"x": 2.0}]}
SYNC_FIELDS = {
    "models",
    "new_versions",
    "alias_moves",
    "verified",
    "refused",
    "failed",
    "seconds",
    "generation",
    "error",
    "fleet_behind",
}
EVENT_FIELDS = {"id", "at", "model", "version", "alias", "kind", "reason", "actor"}

T = TypeVar("T")
MakeGateway = Callable[..., AbstractAsyncContextManager[Gateway]]


@pytest.fixture(scope="session")
def registry(sqlite_registry: Registry) -> Registry:
    return sqlite_registry


@pytest.fixture(scope="module")
def own_models(registry: Registry) -> dict[str, list[int]]:
    """Two versions each of two Doublers only this file touches (no aliases to start with)."""
    made = {}
    for name in (HINTED, SYNCED):
        made[name] = [registry.log(log_pyfunc, name, Doubler()) for _ in range(2)]
    return made


@pytest.fixture
async def hooked(make_gateway: MakeGateway) -> AsyncIterator[Gateway]:
    """A gateway with webhooks and /admin/sync on."""
    async with make_gateway(webhook_secret=SECRET, admin_token=TOKEN) as running:
        yield running


# --- helpers ---------------------------------------------------------------------------


def alias_payload(name: str, alias: str, version: int | None, action: str = "created") -> dict[str, Any]:
    data: dict[str, Any] = {"name": name, "alias": alias}
    if version is not None:
        data["version"] = str(version)
    return {"entity": "model_version_alias", "action": action, "timestamp": "2025-10-09T08:53:20+00:00", "data": data}


def signed(
    body: dict[str, Any] | bytes,
    *,
    secret: str = SECRET,
    delivery_id: str | None = None,
    timestamp: int | None = None,
) -> tuple[bytes, dict[str, str]]:
    """A body and MLflow's three headers, signed as MLflow's webhook delivery signs them."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    delivery_id = delivery_id or str(uuid.uuid4())
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    content = f"{delivery_id}.{stamp}.".encode() + raw
    signature = "v1," + base64.b64encode(hmac.new(secret.encode(), content, hashlib.sha256).digest()).decode()
    return raw, {
        "Content-Type": "application/json",
        "X-MLflow-Delivery-Id": delivery_id,
        "X-MLflow-Timestamp": stamp,
        "X-MLflow-Signature": signature,
    }


async def deliver(gateway: Gateway, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return await gateway.client.post("/webhooks/mlflow", content=body, headers=headers)


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error_code", "message"}, body
    assert body["error_code"] == code
    assert isinstance(body["message"], str) and body["message"]
    return body  # type: ignore[no-any-return]


async def events(gateway: Gateway, **params: Any) -> list[dict[str, Any]]:
    response = await gateway.client.get("/events", params=params)
    assert response.status_code == 200, response.text
    return response.json()["events"]  # type: ignore[no-any-return]


def drop_alias(registry: Registry, name: str, alias: str) -> None:
    try:
        registry.client.delete_registered_model_alias(name, alias)
    except MlflowException:
        pass  # already gone


# --- /webhooks/mlflow ------------------------------------------------------------------


async def test_webhooks_are_off_without_a_secret(gateway: Gateway) -> None:
    body, headers = signed(alias_payload(IRIS, "champion", 1))
    answer = assert_error(await deliver(gateway, body, headers), 404, "ENDPOINT_NOT_FOUND")
    assert "GATEWAY_WEBHOOK_SECRET" in answer["message"]


async def test_unsigned_or_badly_signed_deliveries_are_401(hooked: Gateway) -> None:
    body, good = signed(alias_payload(IRIS, "champion", 1))
    attempts = {
        "no headers": (body, {"Content-Type": "application/json"}),
        "no signature": (body, {k: v for k, v in good.items() if k != "X-MLflow-Signature"}),
        "no delivery id": (body, {k: v for k, v in good.items() if k != "X-MLflow-Delivery-Id"}),
        "no timestamp": (body, {k: v for k, v in good.items() if k != "X-MLflow-Timestamp"}),
        "wrong secret": signed(body, secret="not-" + SECRET, delivery_id=good["X-MLflow-Delivery-Id"]),
        "body altered": (body.replace(b'"1"', b'"2"'), good),
        "garbage signature": (body, {**good, "X-MLflow-Signature": "v1,AAAA"}),
        "unversioned signature": (body, {**good, "X-MLflow-Signature": good["X-MLflow-Signature"][3:]}),
    }
    for what, (sent, headers) in attempts.items():
        answer = assert_error(await deliver(hooked, sent, headers), 401, "UNAUTHENTICATED")
        assert answer["message"].startswith("Webhook refused"), what
    # A refused delivery does not use up its id: the genuine one is still taken.
    assert (await deliver(hooked, body, good)).status_code == 202


# The exact ±300 s boundary is checked without a clock in test_webhooks.py; over HTTP a
# margin keeps a busy machine from moving the answer.
@pytest.mark.parametrize("offset", [-600, -310, 310, 600])
async def test_a_stale_or_future_timestamp_is_401(hooked: Gateway, offset: int) -> None:
    body, headers = signed(alias_payload(IRIS, "champion", 1), timestamp=int(time.time()) + offset)
    answer = assert_error(await deliver(hooked, body, headers), 401, "UNAUTHENTICATED")
    assert "X-MLflow-Timestamp" in answer["message"]


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'[{"entity": "model_version_alias", "action": "created", "data": {"name": "iris"}}]',
        b'{"action": "created", "data": {"name": "iris"}}',
        b'{"entity": "model_version_alias", "data": {"name": "iris"}}',
        b'{"entity": "model_version_alias", "action": "created"}',
    ],
    ids=["not-json", "json-list", "no-entity", "no-action", "no-data"],
)
async def test_a_signed_but_malformed_payload_is_400(hooked: Gateway, body: bytes) -> None:
    answer = assert_error(await deliver(hooked, *signed(body)), 400, "BAD_REQUEST")
    assert "payload" in answer["message"]


async def test_an_oversized_delivery_is_413(hooked: Gateway) -> None:
    body = json.dumps({**alias_payload(IRIS, "champion", 1), "padding": "x" * (1024 * 1024)}).encode()
    assert_error(await deliver(hooked, *signed(body)), 413, "REQUEST_LIMIT_EXCEEDED")


async def test_a_valid_delivery_is_202_and_its_replay_409(hooked: Gateway) -> None:
    body, headers = signed(alias_payload(IRIS, "champion", 1))
    first = await deliver(hooked, body, headers)
    assert first.status_code == 202, first.text
    assert first.json() == {"accepted": True, "delivery_id": headers["X-MLflow-Delivery-Id"], "model": IRIS}
    # MLflow retries with the same delivery id and timestamp: taken once only.
    answer = assert_error(await deliver(hooked, body, headers), 409, "RESOURCE_ALREADY_EXISTS")
    assert headers["X-MLflow-Delivery-Id"] in answer["message"]
    # The same event under a new delivery id is a new delivery.
    again = await deliver(hooked, *signed(body))
    assert again.status_code == 202


async def test_a_delivery_naming_no_model_is_accepted(hooked: Gateway) -> None:
    body = {"entity": "model_version_alias", "action": "created", "data": {"alias": "x"}}
    response = await deliver(hooked, *signed(body))
    assert response.status_code == 202 and response.json()["model"] is None


async def test_a_webhook_makes_the_gateway_read_that_model_now(
    hooked: Gateway, registry: Registry, own_models: dict[str, list[int]]
) -> None:
    second = own_models[HINTED][1]
    before = (await hooked.client.get(f"/models/{HINTED}")).json()
    assert before["aliases"] == {} and before["registry_aliases"] == {}
    newest = (await events(hooked, limit=1))[0]["id"]
    try:
        registry.client.set_registered_model_alias(HINTED, "x", str(second))
        # Polling is hourly here: only the webhook can make the gateway see this.
        response = await deliver(hooked, *signed(alias_payload(HINTED, "x", second)))
        assert response.status_code == 202, response.text

        async def alias_set() -> dict[str, Any] | None:
            fresh = [e for e in await events(hooked, model=HINTED) if e["id"] > newest]
            return next((e for e in fresh if e["kind"] == "alias_set" and e["alias"] == "x"), None)

        event = await eventually(alias_set, f"the webhook's sync to see {HINTED}@x")
        assert event["version"] == second and event["reason"] == f"x -> {second}"
        assert event["actor"].endswith(":webhook model_version_alias.created")

        async def shown() -> dict[str, Any] | None:
            detail = (await hooked.client.get(f"/models/{HINTED}")).json()
            return detail if detail["aliases"] == {"x": second} else None

        detail = await eventually(shown, f"GET /models/{HINTED} to show x -> {second}")
        assert detail["registry_aliases"] == {"x": second}
        answer = await hooked.client.post(f"/models/{HINTED}/versions/x/predict", json=X)
        assert answer.status_code == 200 and answer.headers["x-model-version"] == str(second)
        assert answer.json() == {"predictions": [4.0]}

        # alias.deleted carries the model and alias only.
        registry.client.delete_registered_model_alias(HINTED, "x")
        deleted = alias_payload(HINTED, "x", None, action="deleted")
        assert (await deliver(hooked, *signed(deleted))).status_code == 202

        async def gone() -> dict[str, Any] | None:
            detail = (await hooked.client.get(f"/models/{HINTED}")).json()
            return detail if detail["aliases"] == {} else None

        await eventually(gone, f"{HINTED}@x to go")
        kinds = [(e["kind"], e["alias"]) for e in await events(hooked, model=HINTED, limit=2)]
        assert ("alias_deleted", "x") in kinds
    finally:
        drop_alias(registry, HINTED, "x")


async def test_the_other_models_are_not_synced_by_a_webhook(
    hooked: Gateway, registry: Registry, own_models: dict[str, list[int]]
) -> None:
    """The hint names one model; the sync reads that one, not every model."""
    try:
        registry.client.set_registered_model_alias(SYNCED, "w", str(own_models[SYNCED][0]))
        registry.client.set_registered_model_alias(HINTED, "w", str(own_models[HINTED][0]))
        newest = (await events(hooked, limit=1))[0]["id"]
        assert (await deliver(hooked, *signed(alias_payload(HINTED, "w", 1)))).status_code == 202

        async def hinted_seen() -> list[dict[str, Any]] | None:
            fresh = [e for e in await events(hooked) if e["id"] > newest]
            return fresh if any(e["kind"] == "alias_set" for e in fresh) else None

        fresh = await eventually(hinted_seen, f"the sync of {HINTED}")
        assert {(e["model"], e["alias"]) for e in fresh if e["kind"] == "alias_set"} == {(HINTED, "w")}
        models = {m["name"]: m for m in (await hooked.client.get("/models")).json()["models"]}
        assert models[SYNCED]["registry_aliases"] == {}
    finally:
        drop_alias(registry, SYNCED, "w")
        drop_alias(registry, HINTED, "w")


# --- /admin/sync -----------------------------------------------------------------------


async def test_admin_sync_is_off_without_a_token(gateway: Gateway) -> None:
    response = await gateway.client.post("/admin/sync", headers={"Authorization": f"Bearer {TOKEN}"})
    answer = assert_error(response, 404, "ENDPOINT_NOT_FOUND")
    assert "GATEWAY_ADMIN_TOKEN" in answer["message"]


async def test_admin_sync_wants_the_bearer_token(hooked: Gateway) -> None:
    for authorization in (None, "", f"Bearer not-{TOKEN}", f"Basic {TOKEN}", TOKEN, "Bearer", f"Bearer {TOKEN}x"):
        headers = {"Authorization": authorization} if authorization is not None else {}
        response = await hooked.client.post("/admin/sync", headers=headers)
        answer = assert_error(response, 401, "UNAUTHENTICATED")
        assert "Bearer" in answer["message"], authorization


async def test_admin_sync_reports(hooked: Gateway, registry: Registry) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    response = await hooked.client.post("/admin/sync", headers=auth)
    assert response.status_code == 200, response.text
    report = response.json()
    assert set(report) == SYNC_FIELDS
    assert report["models"] == len(registry.client.search_registered_models(max_results=1000))
    assert report["error"] is None and report["failed"] == 0 and report["refused"] == 0
    # The startup sync already saw (and verified) everything.
    assert report["new_versions"] == 0 and report["alias_moves"] == 0 and report["verified"] == 0
    assert isinstance(report["seconds"], float) and report["seconds"] >= 0
    assert report["generation"] >= 1
    # The scheme is case-insensitive.
    assert (await hooked.client.post("/admin/sync", headers={"Authorization": f"bearer {TOKEN}"})).status_code == 200

    only = await hooked.client.post("/admin/sync", params={"model": IRIS}, headers=auth)
    assert only.status_code == 200 and only.json()["models"] == 1
    two = await hooked.client.post("/admin/sync", params=[("model", IRIS), ("model", "doubler")], headers=auth)
    assert two.status_code == 200 and two.json()["models"] == 2


async def test_admin_sync_picks_up_a_change_and_serves_it_when_it_answers(
    hooked: Gateway, registry: Registry, own_models: dict[str, list[int]]
) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    first, second = own_models[SYNCED]
    try:
        registry.client.set_registered_model_alias(SYNCED, "y", str(second))
        response = await hooked.client.post("/admin/sync", params={"model": SYNCED}, headers=auth)
        assert response.status_code == 200, response.text
        assert response.json()["models"] == 1 and response.json()["alias_moves"] == 1
        # wait=true (the default): served as soon as the answer comes.
        detail = (await hooked.client.get(f"/models/{SYNCED}")).json()
        assert detail["aliases"] == {"y": second}
        answer = await hooked.client.post(f"/models/{SYNCED}/predict", json=X, headers={"X-Model-Version": "y"})
        assert answer.status_code == 200 and answer.headers["x-model-version"] == str(second)

        registry.client.set_registered_model_alias(SYNCED, "y", str(first))
        moved = await hooked.client.post("/admin/sync", params={"model": SYNCED}, headers=auth)
        assert moved.json()["alias_moves"] == 1
        latest = (await events(hooked, model=SYNCED, limit=1))[0]
        assert (latest["kind"], latest["alias"], latest["version"]) == ("alias_set", "y", first)
        assert latest["reason"] == f"y {second} -> {first}" and latest["actor"].endswith(":admin")

        # A sync of another model does not see this one's change.
        registry.client.delete_registered_model_alias(SYNCED, "y")
        other = await hooked.client.post("/admin/sync", params={"model": IRIS}, headers=auth)
        assert other.json()["alias_moves"] == 0
        assert (await hooked.client.get(f"/models/{SYNCED}")).json()["aliases"] == {"y": first}
        await hooked.client.post("/admin/sync", params={"model": SYNCED}, headers=auth)
        assert (await hooked.client.get(f"/models/{SYNCED}")).json()["aliases"] == {}
    finally:
        drop_alias(registry, SYNCED, "y")


async def test_admin_sync_with_mlflow_down_answers_an_error_body(make_settings: Callable[..., GatewaySettings]) -> None:
    settings = make_settings(webhook_secret=SECRET, admin_token=TOKEN)
    async with running_gateway(settings, f"http://127.0.0.1:{free_port()}") as down:
        # A webhook is only a hint: accepted even though the sync it starts cannot reach MLflow.
        response = await deliver(down, *signed(alias_payload(IRIS, "champion", 1)))
        assert response.status_code == 202, response.text
        answer = await down.client.post("/admin/sync", headers={"Authorization": f"Bearer {TOKEN}"})
        assert answer.status_code == 503
        assert "MLflow registry unavailable" in answer.text
        assert_error(answer, 503, "TEMPORARILY_UNAVAILABLE")


# --- /events ---------------------------------------------------------------------------


async def test_events_newest_first_with_every_field(gateway: Gateway) -> None:
    listed = await events(gateway)
    assert listed, "the startup sync records what it saw"
    assert len(listed) <= 100  # the default limit
    ids = [e["id"] for e in listed]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == len(ids)
    for event in listed:
        assert set(event) == EVENT_FIELDS
        assert isinstance(event["model"], str) and isinstance(event["kind"], str)
        assert isinstance(event["reason"], str) and isinstance(event["actor"], str)
        assert event["version"] is None or isinstance(event["version"], int)
        datetime.fromisoformat(event["at"])


async def test_events_for_one_model(gateway: Gateway) -> None:
    iris = await events(gateway, model=IRIS)
    assert iris and {e["model"] for e in iris} == {IRIS}
    seen = {(e["kind"], e["version"], e["alias"]) for e in iris}
    assert {("detected", 1, None), ("detected", 2, None)} <= seen  # pinned when first served, not at sync
    assert {("alias_set", 1, "champion"), ("alias_set", 2, "challenger")} <= seen
    assert all(e["actor"].endswith(":startup") for e in iris)
    assert await events(gateway, model="no-such-model") == []


async def test_events_limit_and_paging(gateway: Gateway) -> None:
    everything = await events(gateway, model=IRIS, limit=1000)
    assert len(everything) >= 4
    assert await events(gateway, model=IRIS, limit=2) == everything[:2]
    assert len(await events(gateway, limit=1)) == 1
    pages: list[dict[str, Any]] = []
    before: int | None = None
    while True:
        params: dict[str, Any] = {"model": IRIS, "limit": 3}
        if before is not None:
            params["before"] = before
        page = await events(gateway, **params)
        if not page:
            break
        assert len(page) <= 3
        assert before is None or all(e["id"] < before for e in page)
        pages.extend(page)
        before = page[-1]["id"]
    assert pages == everything
    assert await events(gateway, before=min(e["id"] for e in everything), model=IRIS) == []


@pytest.mark.parametrize(
    "params",
    [{"limit": 0}, {"limit": 5000}, {"limit": -1}, {"limit": "many"}, {"before": "yesterday"}],
    ids=["limit-0", "limit-5000", "limit-negative", "limit-not-int", "before-not-int"],
)
async def test_events_bad_parameters_are_400(gateway: Gateway, params: dict[str, Any]) -> None:
    response = await gateway.client.get("/events", params=params)
    answer = assert_error(response, 400, "INVALID_PARAMETER_VALUE")
    assert next(iter(params)) in answer["message"]
