"""Rate and concurrency limits of keys and models (429 naming the limit), shared through a
real Redis, failing open per process when Redis is gone; the budget of cold loads (503).

Token buckets are checked with a clock stepped by hand; over HTTP, rates are so low
(one request per 100 s) that no refill can happen within a test, so nothing depends on
how fast the machine is."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Callable

import pytest

from gateway.admission.limits import Limit, LoadBudget, LocalLimits, RedisLimits
from gateway.errors import LoadsThrottled, RateLimited
from gateway.metrics import GatewayMetrics
from gateway.settings import GatewaySettings
from tests.conftest import IRIS, Registry, iris_split
from tests.gateway.test_auth import metric
from tests.support import models as fault_models
from tests.support.clock import ManualClock
from tests.support.keys import add_key, bearer, keyed_gateway
from tests.support.redis import redis_client, redis_url
from tests.support.servers import free_port
from tests.support.waiting import until

pytestmark = pytest.mark.anyio

X = {"dataframe_records": [{"x": 1.5}]}
SLOW = 0.01  # requests a second: one now, the next in 100 s


@pytest.fixture(scope="session")
def registry(sqlite_registry: Registry) -> Registry:
    return sqlite_registry


# --- the buckets, by hand -------------------------------------------------------------------


def test_a_token_bucket_allows_a_burst_of_its_rate_then_its_rate() -> None:
    clock = ManualClock()
    limits = LocalLimits(clock)
    rate = [Limit("key", "ci", rate=3)]
    for _ in range(3):
        limits.acquire(rate).release()
    with pytest.raises(RateLimited) as refused:
        limits.acquire(rate)
    assert refused.value.limit == "key_rate" and refused.value.retry_after == 1
    assert "3 requests/s, bursts of 3" in str(refused.value) and "key 'ci'" in str(refused.value)
    clock.now += 1 / 3  # one token back
    limits.acquire(rate)
    with pytest.raises(RateLimited):
        limits.acquire(rate)
    clock.now += 60  # a long pause refills only up to the burst
    for _ in range(3):
        limits.acquire(rate)
    with pytest.raises(RateLimited):
        limits.acquire(rate)


def test_a_rate_below_one_has_a_burst_of_one_and_says_when_to_come_back() -> None:
    clock = ManualClock()
    limits = LocalLimits(clock)
    slow = [Limit("model", "iris", rate=0.1)]
    limits.acquire(slow)
    with pytest.raises(RateLimited) as refused:
        limits.acquire(slow)
    assert refused.value.retry_after == 10 and refused.value.limit == "model_rate"
    clock.now += 9.5
    with pytest.raises(RateLimited) as refused:
        limits.acquire(slow)
    assert refused.value.retry_after == 1


def test_a_concurrency_cap_counts_requests_in_flight() -> None:
    limits = LocalLimits(ManualClock())
    cap = [Limit("key", "ci", concurrency=2)]
    first, second = limits.acquire(cap), limits.acquire(cap)
    with pytest.raises(RateLimited) as refused:
        limits.acquire(cap)
    assert refused.value.limit == "key_concurrency" and "2 requests in flight" in str(refused.value)
    first.release()
    first.release()  # idempotent: gives back one slot, once
    assert limits.in_flight("key", "ci") == 1
    third = limits.acquire(cap)
    second.release()
    third.release()
    assert limits.in_flight("key", "ci") == 0


def test_a_request_refused_by_one_limit_counts_against_none() -> None:
    clock = ManualClock()
    limits = LocalLimits(clock)
    key = Limit("key", "ci", rate=1, concurrency=5)
    model = Limit("model", "iris", concurrency=1)
    held = limits.acquire([key, model])
    clock.now += 10
    with pytest.raises(RateLimited) as refused:
        limits.acquire([key, model])
    assert refused.value.limit == "model_concurrency"
    assert limits.in_flight("key", "ci") == 1  # the refused request took no key slot...
    held.release()
    limits.acquire([key, model])  # ...and no key token: the bucket still had one


def test_cold_loads_are_budgeted_per_minute() -> None:
    clock = ManualClock()
    metrics = GatewayMetrics()
    budget = LoadBudget(2, metrics, clock=clock)
    budget.take("iris", 1)
    budget.take("iris", 2)
    with pytest.raises(LoadsThrottled) as refused:
        budget.take("iris", 3)
    assert refused.value.retry_after == 30 and "GATEWAY_MAX_LOADS_PER_MINUTE" in str(refused.value)
    clock.now += 30
    budget.take("iris", 3)
    assert metrics.registry.get_sample_value("gateway_loads_throttled_total") == 1


# --- over HTTP ----------------------------------------------------------------------------------


async def test_a_keys_rate_is_429_with_retry_after_naming_the_limit(
    make_settings: Callable[..., GatewaySettings], registry: Registry
) -> None:
    settings = make_settings(auth="keys")
    slow = add_key(settings, "slow", "predict:*,read", rate=SLOW)
    other = add_key(settings, "other", "predict:*,read")
    async with keyed_gateway(settings, registry) as (gateway, _):
        client = gateway.client
        assert (await client.post("/models/doubler/predict", json=X, headers=bearer(slow))).status_code == 200
        for method, path in (("POST", "/models/doubler/predict"), ("GET", "/models")):  # every route of the key
            response = await client.request(method, path, json=X, headers=bearer(slow))
            assert response.status_code == 429, response.text
            assert 90 <= int(response.headers["retry-after"]) <= 100
            body = response.json()
            assert body["error_code"] == "REQUEST_LIMIT_EXCEEDED" and body["limit"] == "key_rate"
            assert "key 'slow'" in body["message"] and slow not in response.text
        # Another key is not limited by it.
        assert (await client.post("/models/doubler/predict", json=X, headers=bearer(other))).status_code == 200
        assert metric(gateway, "gateway_limited_total", limit="key_rate") == 2
        assert metric(gateway, "gateway_key_requests_total", key="slow", outcome="limited") == 2
        assert metric(gateway, "gateway_key_requests_total", key="slow", outcome="allowed") == 1


async def test_a_keys_concurrency_cap_and_a_models_both_hold_in_the_predict_lane(
    make_settings: Callable[..., GatewaySettings], registry: Registry
) -> None:
    settings = make_settings(auth="keys", model_concurrency=1)
    capped = add_key(settings, "capped", "predict:*", concurrency=1)
    free = add_key(settings, "free", "predict:*")
    url = "/models/gated-predict/versions/1/predict"
    async with keyed_gateway(settings, registry) as (gateway, _):
        client = gateway.client
        fault_models.PREDICT_GATE.clear()
        fault_models.PREDICT_ENTERED.clear()
        first = asyncio.create_task(client.post(url, json=X, headers=bearer(capped)))
        await until(fault_models.PREDICT_ENTERED.is_set, what="the first request to be inside predict")
        second = await client.post(url, json=X, headers=bearer(capped))
        assert second.status_code == 429 and second.json()["limit"] == "key_concurrency"
        assert second.headers["retry-after"] == "1"
        third = await client.post(url, json=X, headers=bearer(free))  # another key, the same model
        assert third.status_code == 429 and third.json()["limit"] == "model_concurrency"
        assert "model 'gated-predict'" in third.json()["message"]
        # Other models are not held up by this one's cap.
        assert (await client.post("/models/doubler/predict", json=X, headers=bearer(free))).status_code == 200
        fault_models.PREDICT_GATE.set()
        assert (await first).status_code == 200
        # The slots came back with the answer.
        assert (await client.post(url, json=X, headers=bearer(capped))).status_code == 200
        assert gateway.services.gate.limiter.local.in_flight("key", "capped") == 0


async def test_a_models_rate_holds_with_auth_off(
    make_settings: Callable[..., GatewaySettings], registry: Registry
) -> None:
    async with keyed_gateway(make_settings(model_rate=SLOW), registry) as (gateway, _):
        client = gateway.client
        assert (await client.post("/models/doubler/predict", json=X)).status_code == 200
        response = await client.post("/models/doubler/versions/1/predict", json=X)
        assert response.status_code == 429 and response.json()["limit"] == "model_rate"
        assert (
            await client.post(f"/models/{IRIS}/versions/1/predict", json=iris_split([[1, 2, 3, 4]]))
        ).status_code == 200
        # A model nobody registered is a 404 (one look at the registry), never a bucket.
        assert (await client.post("/models/not-registered/predict", json=X)).status_code == 404
        assert (await client.post("/models/not-registered/predict", json=X)).status_code == 404
        assert (await client.get("/models")).status_code == 200  # reads are not a model's traffic


async def test_cold_loads_past_the_budget_are_503_and_loaded_versions_still_serve(
    make_settings: Callable[..., GatewaySettings], registry: Registry
) -> None:
    async with keyed_gateway(make_settings(max_loads_per_minute=1), registry) as (gateway, _):
        client = gateway.client
        assert (await client.post("/models/doubler/versions/1/predict", json=X)).status_code == 200
        refused = await client.post(f"/models/{IRIS}/versions/1/predict", json=iris_split([[1, 2, 3, 4]]))
        assert refused.status_code == 503, refused.text
        assert refused.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
        assert "GATEWAY_MAX_LOADS_PER_MINUTE" in refused.json()["message"]
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert (await client.post("/models/doubler/versions/1/predict", json=X)).status_code == 200
        assert [key.name for key in gateway.services.cache.keys()] == ["doubler"]
        assert metric(gateway, "gateway_loads_throttled_total") == 1


# --- shared through Redis ----------------------------------------------------------------------

_namespaces = itertools.count()


def namespace() -> str:
    return f"test-{uuid.uuid4().hex[:8]}-{next(_namespaces)}"


async def test_the_redis_script_counts_rates_and_slots_atomically_on_redis() -> None:
    client = redis_client()
    space = namespace()
    limits = RedisLimits(redis_url(), namespace=space, lease_seconds=30)
    try:
        key = Limit("key", "ci", rate=SLOW, concurrency=5)
        model = Limit("model", "iris", concurrency=1)
        held = await limits.acquire([key, model])
        with pytest.raises(RateLimited) as refused:
            await limits.acquire([key])
        assert refused.value.limit == "key_rate" and 90 <= refused.value.retry_after <= 100
        with pytest.raises(RateLimited) as refused:
            await limits.acquire([Limit("key", "other"), model])
        assert refused.value.limit == "model_concurrency"
        names = sorted(k.decode() for k in client.keys(f"registry-gateway:{{{space}}}:*"))
        assert names == [
            f"registry-gateway:{{{space}}}:limit:key:ci:in-flight",
            f"registry-gateway:{{{space}}}:limit:key:ci:rate",
            f"registry-gateway:{{{space}}}:limit:model:iris:in-flight",
        ]
        assert all(0 < client.pttl(name) <= 101_000 for name in names)
        held.release()
        await until(lambda: client.zcard(names[2]) == 0, what="the slot to be given back in Redis")
        (await limits.acquire([model])).release()
    finally:
        await limits.close()
        for name in client.keys(f"registry-gateway:{{{space}}}:*"):
            client.delete(name)


async def test_two_replicas_share_a_keys_limits_through_redis(
    make_settings: Callable[..., GatewaySettings], registry: Registry
) -> None:
    redis_client()
    settings = make_settings(auth="keys", rate_limit_redis=redis_url(), role="gateway")
    leader_settings = settings.model_copy(update={"role": "all"})
    slow = add_key(settings, "slow", "predict:*", rate=SLOW)
    async with keyed_gateway(leader_settings, registry) as (one, _), keyed_gateway(settings, registry) as (two, _):
        assert (await one.client.post("/models/doubler/predict", json=X, headers=bearer(slow))).status_code == 200
        response = await two.client.post("/models/doubler/predict", json=X, headers=bearer(slow))
        assert response.status_code == 429 and response.json()["limit"] == "key_rate"  # the other replica's token
        assert metric(two, "gateway_limits_redis_errors_total") == 0


async def test_redis_down_fails_open_per_process_and_says_so(
    make_settings: Callable[..., GatewaySettings], registry: Registry
) -> None:
    port = free_port()  # nothing listens here: no other server of the run is given it
    settings = make_settings(auth="keys", rate_limit_redis=f"redis://127.0.0.1:{port}/0")
    slow = add_key(settings, "slow", "predict:*", rate=SLOW)
    async with keyed_gateway(settings, registry) as (gateway, _):
        assert (await gateway.client.post("/models/doubler/predict", json=X, headers=bearer(slow))).status_code == 200
        # Never a 500: the limit is counted in this process instead.
        response = await gateway.client.post("/models/doubler/predict", json=X, headers=bearer(slow))
        assert response.status_code == 429 and response.json()["limit"] == "key_rate"
        assert metric(gateway, "gateway_limits_redis_errors_total") >= 1
