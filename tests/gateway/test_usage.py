"""Usage and quotas through a gateway (issue 53): each predict counted per caller, model,
version and day, ``GET /usage`` showing everyone's to a reader and one's own to anyone else,
and a quota answered 429 with its headers, reset at its period's end."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from gateway.demo import IRIS
from gateway.settings import GatewaySettings
from registry_sync.quotas import Quota
from tests.conftest import Gateway, Registry, iris_split
from tests.support.keys import add_key, add_quota, bearer, keyed_gateway

pytestmark = pytest.mark.anyio

TWO_ROWS = iris_split([[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3]])
THREE_ROWS = iris_split([[5.1, 3.5, 1.4, 0.2]] * 3)


@pytest.fixture(scope="session")
def registry(sqlite_registry: Registry) -> Registry:
    return sqlite_registry


async def flush(gateway: Gateway) -> None:
    meter = gateway.services.rooms.usage.meter
    assert meter is not None
    await meter.flush()


async def test_usage_per_caller_and_a_quota_answered_429_until_its_period_ends(
    make_settings: Callable[..., GatewaySettings], registry: Registry
) -> None:
    settings = make_settings(auth="keys", usage_flush_seconds=3600)  # flushed by hand below
    alice = add_key(settings, "alice", "predict:*")
    bob = add_key(settings, "bob", f"predict:{IRIS}")
    reader = add_key(settings, "reader", "read")
    add_quota(settings, Quota("alice-iris", "alice", "iris*", "day", "requests", 3))
    async with keyed_gateway(settings, registry) as (gateway, _):
        client = gateway.client
        for _ in range(3):
            answer = await client.post(f"/models/{IRIS}/predict", json=TWO_ROWS, headers=bearer(alice))
            assert answer.status_code == 200, answer.text
        refused = await client.post(f"/models/{IRIS}/predict", json=TWO_ROWS, headers=bearer(alice))
        assert refused.status_code == 429
        tomorrow = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT00:00:00Z")
        body = refused.json()
        assert body["error_code"] == "REQUEST_LIMIT_EXCEEDED"
        assert (body["limit"], body["quota"], body["resets_at"]) == ("quota", "alice-iris", tomorrow)
        assert "alice-iris" in body["message"] and tomorrow in body["message"]
        headers = refused.headers
        assert headers["X-RateLimit-Limit"] == "3" and headers["X-RateLimit-Remaining"] == "0"
        assert headers["Retry-After"] == headers["X-RateLimit-Reset"]
        assert 0 < int(headers["Retry-After"]) <= 86_400
        assert (await client.post(f"/models/{IRIS}/predict", json=THREE_ROWS, headers=bearer(bob))).status_code == 200
        garbage = await client.post(f"/models/{IRIS}/predict", json={"dataframe_split": 7}, headers=bearer(bob))
        assert garbage.status_code == 400
        await flush(gateway)

        everyone = await client.get("/usage", headers=bearer(reader))
        assert everyone.status_code == 200, everyone.text
        lines = {(u["caller"], u["model"], u["version"]): u for u in everyone.json()["usage"]}
        assert set(lines) == {("alice", IRIS, 1), ("bob", IRIS, 1)}
        assert (lines["alice", IRIS, 1]["requests"], lines["alice", IRIS, 1]["rows"]) == (3, 6)
        assert (lines["bob", IRIS, 1]["requests"], lines["bob", IRIS, 1]["errors"]) == (2, 1)
        assert lines["bob", IRIS, 1]["rows"] == 3
        assert lines["alice", IRIS, 1]["predict_seconds"] > 0
        (quota,) = everyone.json()["quotas"]
        assert (quota["name"], quota["used"], quota["amount"]) == ("alice-iris", 3, 3)

        own = (await client.get("/usage", headers=bearer(bob))).json()
        assert {u["caller"] for u in own["usage"]} == {"bob"} and own["quotas"] == []
        assert (await client.get("/usage?caller=alice", headers=bearer(bob))).json()["usage"] == []
        assert (await client.get("/usage?caller=alice", headers=bearer(reader))).json()["usage"] != []
        for query in ("since=yesterday", "until=2026-13-01", f"since={'9' * 50}"):
            bad = await client.get(f"/usage?{query}", headers=bearer(reader))
            assert bad.status_code in (400, 422) and "error_code" in bad.json(), (query, bad.text)
        assert (await client.get("/usage")).status_code == 401

        # The period's end: the gate's quota clock moved to tomorrow, the quota is whole again.
        quotas = gateway.services.gate.quotas
        assert quotas is not None
        midnight = datetime.strptime(tomorrow, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
        quotas.clock = lambda: midnight
        again = await client.post(f"/models/{IRIS}/predict", json=TWO_ROWS, headers=bearer(alice))
        assert again.status_code == 200, again.text
