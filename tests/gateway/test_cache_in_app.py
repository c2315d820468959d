"""The cache's promises with real MLflow models, through HTTP.

Sequenced with events set by the models themselves and polling with a deadline,
never with sleeps.
"""

from __future__ import annotations

import asyncio

import pytest

from gateway.demo import IRIS
from tests.conftest import Gateway, Registry, iris_split
from tests.support import models as fault_models
from tests.support.versions import entry, loaded, loaded_keys, loading
from tests.support.waiting import until

pytestmark = pytest.mark.anyio

ROW = iris_split([[5.1, 3.5, 1.4, 0.2]])
X = {"dataframe_records": [{"x": 2.0}]}


@pytest.fixture(scope="session")
def registry(sqlite_registry: Registry) -> Registry:
    return sqlite_registry


def metric(gateway: Gateway, name: str, **labels: str) -> float:
    value = gateway.services.metrics.registry.get_sample_value(name, labels)
    return value or 0.0


async def test_concurrent_requests_for_a_cold_version_cause_one_load(gateway: Gateway) -> None:
    fault_models.LOAD_GATE.clear()
    before = fault_models.LOADS.get("gated_load", 0)
    requests = [
        asyncio.create_task(gateway.client.post("/models/gated-load/versions/1/predict", json=X)) for _ in range(25)
    ]
    cache = gateway.services.cache
    await until(lambda: getattr(loading(cache, "gated-load", 1), "waiters", 0) == 25, "25 waiters")
    await until(lambda: fault_models.LOADS.get("gated_load", 0) > before, "the load to reach the model")
    fault_models.LOAD_GATE.set()
    responses = await asyncio.gather(*requests)
    assert [r.status_code for r in responses] == [200] * 25
    assert {r.json()["predictions"][0] for r in responses} == {4.0}
    assert fault_models.LOADS["gated_load"] - before == 1
    assert metric(gateway, "gateway_model_loads_total", model="gated-load", version="1", outcome="success") == 1
    assert metric(gateway, "gateway_cache_misses_total", model="gated-load") == 1


async def test_a_slow_load_does_not_hold_up_models_already_loaded(gateway: Gateway) -> None:
    assert (await gateway.client.post(f"/models/{IRIS}/versions/1/predict", json=ROW)).status_code == 200
    fault_models.LOAD_GATE.clear()
    slow = asyncio.create_task(gateway.client.post("/models/gated-load/versions/1/predict", json=X))
    await until(lambda: loading(gateway.services.cache, "gated-load", 1) is not None, "the slow load to start")
    for _ in range(10):
        response = await gateway.client.post(f"/models/{IRIS}/versions/1/predict", json=ROW)
        assert response.status_code == 200
    assert not slow.done()
    fault_models.LOAD_GATE.set()
    assert (await slow).status_code == 200


async def test_a_version_in_use_is_not_evicted_under_its_request(make_gateway) -> None:  # type: ignore[no-untyped-def]
    async with make_gateway(max_loaded_models=1) as gateway:
        cache = gateway.services.cache
        fault_models.PREDICT_GATE.clear()
        held = asyncio.create_task(gateway.client.post("/models/gated-predict/versions/1/predict", json=X))
        await until(fault_models.PREDICT_ENTERED.is_set, "the predict to start")
        # Another model needs the only slot; the one mid-predict must stay.
        response = await gateway.client.post(f"/models/{IRIS}/versions/1/predict", json=ROW)
        assert response.status_code == 200
        assert loaded_keys(cache) == [("gated-predict", 1)]
        assert loaded(cache, "gated-predict", 1).in_use == 1  # type: ignore[union-attr]
        fault_models.PREDICT_GATE.set()
        finished = await held
        assert finished.status_code == 200 and finished.json() == {"predictions": [4.0]}
        # Released, it is an ordinary LRU entry again and makes room for the next model.
        assert (await gateway.client.post(f"/models/{IRIS}/versions/1/predict", json=ROW)).status_code == 200
        assert loaded_keys(cache) == [(IRIS, 1)]
        assert metric(gateway, "gateway_cache_evictions_total", model="gated-predict") == 1


async def test_lru_by_count_under_traffic(make_gateway) -> None:  # type: ignore[no-untyped-def]
    async with make_gateway(max_loaded_models=2) as gateway:
        for path in ("iris/versions/1", "iris/versions/2", "iris/versions/1", "doubler/versions/1"):
            body = X if path.startswith("doubler") else ROW
            assert (await gateway.client.post(f"/models/{path}/predict", json=body)).status_code == 200
        assert loaded_keys(gateway.services.cache) == [(IRIS, 1), ("doubler", 1)]
        assert metric(gateway, "gateway_loaded_models") == 2


async def test_memory_budget_uses_measured_sizes(make_gateway) -> None:  # type: ignore[no-untyped-def]
    async with make_gateway() as probe:
        await probe.client.post(f"/models/{IRIS}/versions/1/predict", json=ROW)
        one_model = loaded(probe.services.cache, IRIS, 1).size_bytes  # type: ignore[union-attr]
    assert one_model > 1000  # a fitted LogisticRegression is not free
    budget_mb = 1.5 * one_model / 2**20  # room for one iris model, not two
    async with make_gateway(max_memory_mb=budget_mb) as gateway:
        for version in (1, 2):
            path = f"/models/{IRIS}/versions/{version}/predict"
            assert (await gateway.client.post(path, json=ROW)).status_code == 200
        assert loaded_keys(gateway.services.cache) == [(IRIS, 2)]
        assert gateway.services.cache.loaded_bytes <= budget_mb * 2**20
        assert metric(gateway, "gateway_loaded_bytes") == gateway.services.cache.loaded_bytes


async def test_a_model_bigger_than_the_budget_gets_503_and_others_serve(make_gateway) -> None:  # type: ignore[no-untyped-def]
    paths = {"iris": (f"/models/{IRIS}/versions/1/predict", ROW), "doubler": ("/models/doubler/versions/1/predict", X)}
    async with make_gateway() as probe:
        for path, body in paths.values():
            assert (await probe.client.post(path, json=body)).status_code == 200
        held = {name: loaded(probe.services.cache, key, 1) for name, key in (("iris", IRIS), ("doubler", "doubler"))}
        sizes = {name: entry.size_bytes for name, entry in held.items() if entry is not None}
    small, big = sorted(sizes, key=sizes.__getitem__)
    assert sizes[big] > 1.2 * sizes[small], sizes  # else no budget holds one and not the other
    budget_mb = (sizes[small] + sizes[big]) / 2 / 2**20
    async with make_gateway(max_memory_mb=budget_mb) as gateway:
        assert (await gateway.client.post(paths[small][0], json=paths[small][1])).status_code == 200
        response = await gateway.client.post(paths[big][0], json=paths[big][1])
        assert response.status_code == 503
        assert response.json()["error_code"] == "RESOURCE_EXHAUSTED"
        assert "version 1" in response.json()["message"] and big in response.json()["message"]
        # the other model still serves, and stayed loaded: the refused load evicted nothing
        assert (await gateway.client.post(paths[small][0], json=paths[small][1])).status_code == 200
        assert [name for name, _ in loaded_keys(gateway.services.cache)] == [IRIS if small == "iris" else "doubler"]


async def test_a_failed_load_is_503_naming_the_version_and_can_be_retried(gateway: Gateway) -> None:
    fault_models.FAIL_LOADS.set()
    response = await gateway.client.post("/models/flaky-load/versions/1/predict", json=X)
    assert response.status_code == 503
    assert response.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
    assert "'flaky-load' version 1" in response.json()["message"]
    assert "corrupt" in response.json()["message"]
    assert response.headers["retry-after"]
    # Other models keep serving meanwhile.
    assert (await gateway.client.post(f"/models/{IRIS}/versions/1/predict", json=ROW)).status_code == 200
    detail = (await gateway.client.get("/models/flaky-load/versions/1")).json()
    assert detail["loaded"] is None and "corrupt" in detail["last_load_error"]
    fault_models.FAIL_LOADS.clear()
    response = await gateway.client.post("/models/flaky-load/versions/1/predict", json=X)
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": [4.0]}


async def test_a_slow_predict_gets_504_and_keeps_its_lease_until_it_ends(make_gateway) -> None:  # type: ignore[no-untyped-def]
    async with make_gateway(predict_timeout_seconds=0.2) as gateway:
        fault_models.PREDICT_GATE.clear()
        response = await gateway.client.post("/models/gated-predict/versions/1/predict", json=X)
        assert response.status_code == 504
        assert response.json()["error_code"] == "DEADLINE_EXCEEDED"
        assert "'gated-predict' version 1" in response.json()["message"]
        entry = loaded(gateway.services.cache, "gated-predict", 1)
        assert entry is not None and entry.in_use == 1  # the thread still runs: not unloadable
        fault_models.PREDICT_GATE.set()
        await until(lambda: loaded(gateway.services.cache, "gated-predict", 1).in_use == 0, "the lease back")  # type: ignore[union-attr]
        # and the gateway serves on
        assert (await gateway.client.post(f"/models/{IRIS}/versions/1/predict", json=ROW)).status_code == 200


async def test_an_evicted_model_is_freed_at_once_without_a_garbage_collection(make_gateway) -> None:  # type: ignore[no-untyped-def]
    """No reference cycle of ours keeps an evicted version alive: with the cyclic collector
    off, its objects die as soon as the cache lets go of them (issue 15)."""
    import gc
    import weakref

    async with make_gateway(max_loaded_models=1) as gateway:
        cache = gateway.services.cache
        for _ in range(2):  # its queue made, batches run: everything a served version holds
            assert (await gateway.client.post(f"/models/{IRIS}/versions/1/predict", json=ROW)).status_code == 200
        first = entry(cache, IRIS, 1).model
        objects = [weakref.ref(first), weakref.ref(first.pyfunc), weakref.ref(first.queue)]
        del first
        gc.collect()
        gc.disable()
        try:
            assert (await gateway.client.post(f"/models/{IRIS}/versions/2/predict", json=ROW)).status_code == 200
            assert loaded_keys(cache) == [(IRIS, 2)]  # version 1 was evicted
            # At once: not after the collection the cache schedules for libraries' own cycles.
            assert [ref() for ref in objects] == [None, None, None]
        finally:
            gc.enable()
