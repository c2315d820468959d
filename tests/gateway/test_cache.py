"""ModelCache on its own: single-flight, leases, eviction order, failures.

The load function here is a stand-in whose timing the test controls with events; the
same behaviours are checked with real MLflow models in test_cache_in_app.py.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gateway.dataplane import frozen
from gateway.dataplane.cache import ModelCache, Reserve
from gateway.dataplane.loader import LoadedModel
from gateway.errors import ModelLoadFailed, ModelTooLarge
from gateway.metrics import GatewayMetrics
from registry_sync.identity import VersionId
from tests.support.versions import loaded_keys, vid
from tests.support.waiting import until

pytestmark = pytest.mark.anyio


class Loads:
    """Counts loads and can hold each one until released."""

    def __init__(self, size: int = 100, *, estimate: int | None = None) -> None:
        self.size = size
        self.estimate = size if estimate is None else estimate  # what the files on disk suggest
        self.calls: Counter[tuple[str, int]] = Counter()
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.fail: set[tuple[str, int]] = set()
        self.gated: set[tuple[str, int]] | None = None  # the loads the gate holds (None: every one)

    def __call__(self, key: VersionId, reserve: Reserve) -> LoadedModel:
        name, version = key.name, key.version
        self.calls[(name, version)] += 1
        reserve(self.estimate)  # as the loader does once the files are verified, before loading them
        self.entered.set()
        if self.gated is None or (name, version) in self.gated:
            assert self.gate.wait(timeout=30)
        if (name, version) in self.fail:
            raise ModelLoadFailed(name, version, "injected")
        return LoadedModel(
            id=key,
            pyfunc=None,
            metadata=None,  # type: ignore[arg-type]
            path=Path("."),
            size_bytes=self.size,
            load_seconds=0.0,
            flavor="test",
        )


def make_cache(loads: Loads, *, max_models: int = 10, max_bytes: int = 10_000, retry: float = 0.0) -> ModelCache:
    return ModelCache(
        loads,
        max_models=max_models,
        max_bytes=max_bytes,
        metrics=GatewayMetrics(),
        executor=ThreadPoolExecutor(max_workers=4),
        load_retry_seconds=retry,
    )


async def test_many_concurrent_acquires_of_a_cold_version_load_it_once() -> None:
    loads = Loads()
    loads.gate.clear()
    cache = make_cache(loads)
    tasks = [asyncio.create_task(cache.acquire(vid("m", 1))) for _ in range(50)]
    await until(lambda: cache._pending.get(vid("m", 1)) is not None and cache._pending[vid("m", 1)].waiters == 50, "50")
    loads.gate.set()
    leases = await asyncio.gather(*tasks)
    assert loads.calls[("m", 1)] == 1
    assert {id(lease.model) for lease in leases} == {id(leases[0].model)}
    assert cache.get(vid("m", 1)).in_use == 50  # type: ignore[union-attr]
    for lease in leases:
        lease.release()
        lease.release()  # idempotent
    assert cache.get(vid("m", 1)).in_use == 0  # type: ignore[union-attr]


async def test_lru_order_decides_what_goes() -> None:
    cache = make_cache(Loads(), max_models=2)
    for version in (1, 2):
        (await cache.acquire(vid("m", version))).release()
    (await cache.acquire(vid("m", 1))).release()  # 1 is now the most recently used
    (await cache.acquire(vid("m", 3))).release()
    assert loaded_keys(cache) == [("m", 1), ("m", 3)]


async def test_byte_budget_evicts_until_it_fits() -> None:
    cache = make_cache(Loads(size=400), max_bytes=1000)
    for version in (1, 2, 3):
        (await cache.acquire(vid("m", version))).release()
    assert loaded_keys(cache) == [("m", 2), ("m", 3)]
    assert cache.loaded_bytes == 800


async def test_a_leased_version_is_never_evicted_and_goes_once_released() -> None:
    cache = make_cache(Loads(), max_models=1)
    held = await cache.acquire(vid("m", 1))
    (await cache.acquire(vid("m", 2))).release()  # over budget: 2 goes, since 1 is in use
    assert loaded_keys(cache) == [("m", 1)]
    held2 = await cache.acquire(vid("m", 2))  # loaded again; both in use: over budget for now
    assert loaded_keys(cache) == [("m", 1), ("m", 2)]
    held.release()  # the last lease on 1 returns: eviction resumes
    assert loaded_keys(cache) == [("m", 2)]
    held2.release()


async def test_a_waiter_that_gives_up_returns_its_share_of_the_lease() -> None:
    loads = Loads()
    loads.gate.clear()
    cache = make_cache(loads, max_models=1)
    staying = asyncio.create_task(cache.acquire(vid("m", 1)))
    leaving = asyncio.create_task(cache.acquire(vid("m", 1)))
    await until(lambda: vid("m", 1) in cache._pending and cache._pending[vid("m", 1)].waiters == 2, "two waiters")
    leaving.cancel()
    loads.gate.set()
    lease = await staying
    with pytest.raises(asyncio.CancelledError):
        await leaving
    assert cache.get(vid("m", 1)).in_use == 1  # type: ignore[union-attr]
    lease.release()
    assert cache.get(vid("m", 1)).in_use == 0  # type: ignore[union-attr]


async def test_a_slow_load_blocks_neither_hits_nor_other_loads() -> None:
    loads = Loads()
    cache = make_cache(loads)
    (await cache.acquire(vid("fast", 1))).release()
    loads.gated = {("slow", 1)}
    loads.gate.clear()
    loads.entered.clear()
    slow = asyncio.create_task(cache.acquire(vid("slow", 1)))
    await until(loads.entered.is_set, "the slow load to start")
    lease = await cache.acquire(vid("fast", 1))  # a hit, while the slow load is held
    lease.release()
    other = await cache.acquire(vid("other", 1))  # another version's load, start to end meanwhile
    other.release()
    assert loads.calls[("other", 1)] == 1 and ("other", 1) in loaded_keys(cache)
    assert not slow.done()
    loads.gate.set()
    (await slow).release()


async def test_a_failed_load_is_not_cached_and_is_retried() -> None:
    loads = Loads()
    loads.fail.add(("m", 1))
    cache = make_cache(loads)
    with pytest.raises(ModelLoadFailed):
        await cache.acquire(vid("m", 1))
    assert loaded_keys(cache) == []
    assert cache.last_failure(vid("m", 1)) is not None
    loads.fail.clear()
    (await cache.acquire(vid("m", 1))).release()
    assert loads.calls[("m", 1)] == 2
    assert loaded_keys(cache) == [("m", 1)]
    assert cache.last_failure(vid("m", 1)) is None


async def test_failures_fail_fast_within_the_retry_window() -> None:
    loads = Loads()
    loads.fail.add(("m", 1))
    cache = make_cache(loads, retry=60)
    for _ in range(3):
        with pytest.raises(ModelLoadFailed):
            await cache.acquire(vid("m", 1))
    assert loads.calls[("m", 1)] == 1


async def test_a_model_larger_than_the_whole_budget_is_refused() -> None:
    cache = make_cache(Loads(size=5000), max_bytes=1000)
    with pytest.raises(ModelTooLarge, match="GATEWAY_MAX_MEMORY_MB"):
        await cache.acquire(vid("m", 1))
    assert loaded_keys(cache) == [] and cache.loaded_bytes == 0


async def test_a_refused_model_is_not_kept_alive_by_its_remembered_failure() -> None:
    import gc
    import weakref

    loads = Loads(size=5000, estimate=10)  # small on disk, too large once loaded and measured
    returned: list[weakref.ref[LoadedModel]] = []
    original = loads.__call__

    def load(key: VersionId, reserve: Reserve) -> LoadedModel:
        model = original(key, reserve)
        returned.append(weakref.ref(model))
        return model

    cache = make_cache(loads, max_bytes=1000, retry=60)
    cache._load = load
    with pytest.raises(ModelTooLarge):
        await cache.acquire(vid("m", 1))

    def collected() -> bool:  # the loader thread lets go of its work item just after it answers
        gc.collect()
        return returned[0]() is None

    await until(collected, "the refused model to be collected")
    assert len(returned) == 1
    for _ in range(2):  # fast failures from memory neither load again nor grow anything
        with pytest.raises(ModelTooLarge) as caught:
            await cache.acquire(vid("m", 1))
    assert len(returned) == 1
    assert len(list(_frames(caught.value.__traceback__))) < 10


def _frames(tb):  # type: ignore[no-untyped-def]
    while tb is not None:
        yield tb.tb_frame
        tb = tb.tb_next


async def test_close_fails_waiters_of_loads_that_never_finish() -> None:
    from gateway.errors import ShuttingDown

    loads = Loads()
    loads.gate.clear()
    cache = make_cache(loads)
    waiter = asyncio.create_task(cache.acquire(vid("m", 1)))
    await until(lambda: vid("m", 1) in cache._pending and cache._pending[vid("m", 1)].waiters == 1, "a waiter")
    await cache.close()
    with pytest.raises(ShuttingDown):
        await waiter
    loads.gate.set()


async def test_cold_loads_make_room_before_they_load_not_after() -> None:
    loads = Loads(size=100)
    cache = make_cache(loads, max_bytes=250)  # room for two
    for version in (1, 2):
        (await cache.acquire(vid("m", version))).release()
    loads.gate.clear()  # the next loads are held after they reserved, before they "load"
    cold = [asyncio.create_task(cache.acquire(vid("m", version))) for version in (3, 4)]
    await until(lambda: loaded_keys(cache) == [], "both idle versions evicted for the two loads coming")
    assert cache.loaded_bytes == 0  # while 200 bytes are reserved: never 400 at once
    loads.gate.set()
    for lease in await asyncio.gather(*cold):
        lease.release()
    assert sorted(loaded_keys(cache)) == [("m", 3), ("m", 4)] and cache.loaded_bytes == 200


async def test_a_version_bigger_than_the_whole_budget_is_refused_before_it_loads() -> None:
    loads = Loads(size=5000)
    cache = make_cache(loads, max_bytes=1000)
    with pytest.raises(ModelTooLarge):
        await cache.acquire(vid("m", 1))
    assert not loads.entered.is_set()  # refused at its reservation, never loaded
    assert loaded_keys(cache) == [] and cache._reserved_bytes == 0


class _Cyclic:
    """A model's object graph with a cycle of its own, as torch.export's programs have."""

    def __init__(self) -> None:
        self.me = self


@pytest.mark.parametrize("case", ["loaded-after-freeze", "alive-at-freeze", "alive-at-a-refreeze"])
async def test_an_unloaded_models_own_cycles_are_collected_soon(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cycles inside a model's libraries die in the collection the cache runs after unloading,
    also for a model alive when startup froze everything (gc.freeze): a warm alias that later
    moves must not leave its old version in the permanent generation for good. Nor a model
    alive when such a collection froze everything again (``alive-at-a-refreeze``)."""
    import gc
    import weakref

    import gateway.dataplane.cache

    monkeypatch.setattr(gateway.dataplane.cache, "_COLLECT_SPACING", 0.5)
    loads = Loads()
    made: list[weakref.ref[_Cyclic]] = []
    original = loads.__call__

    def load(key: VersionId, reserve: Reserve) -> LoadedModel:
        model = original(key, reserve)
        graph = _Cyclic()
        model.pyfunc = graph
        made.append(weakref.ref(graph))
        return model

    cache = make_cache(loads, max_models=1)
    cache._load = load
    gc.disable()  # only the cache's own collections may free the cycles
    try:
        if case == "loaded-after-freeze":
            frozen.freeze()
            (await cache.acquire(vid("m", 1))).release()
        else:
            (await cache.acquire(vid("m", 1))).release()
            frozen.freeze()
            if case == "alive-at-a-refreeze":
                # evicting v1 thaws, collects, and freezes what is alive again: v2 with it
                (await cache.acquire(vid("m", 2))).release()
                await until(lambda: made[0]() is None, "v1's cycle to be collected")
        watched = made[-1]
        (await cache.acquire(vid("m", 9))).release()  # evicts the model whose cycle is watched
        await until(lambda: watched() is None, "the unloaded model's cycle to be collected", timeout=20)
    finally:
        gc.enable()
        frozen.forget()
        await cache.close()


async def test_a_model_unloaded_while_collections_are_spaced_out_is_collected_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Collections are spaced out; a model unloaded in the pause (too small to call for one
    out of turn) is collected when the pause ends, not left until some later unload."""
    import gc
    import weakref

    import gateway.dataplane.cache

    # long enough that the test still sees the pause on a machine that stalls for a moment
    monkeypatch.setattr(gateway.dataplane.cache, "_COLLECT_SPACING", 2.0)
    loads = Loads()
    made: list[weakref.ref[_Cyclic]] = []
    original = loads.__call__

    def load(key: VersionId, reserve: Reserve) -> LoadedModel:
        model = original(key, reserve)
        model.pyfunc = graph = _Cyclic()
        made.append(weakref.ref(graph))
        return model

    cache = make_cache(loads, max_models=1)  # 100 bytes a model, 10,000 budget: never urgent
    cache._load = load
    gc.disable()
    try:
        for version in (1, 2):  # evicts v1: a collection in _COLLECT_DELAY, then the pause
            (await cache.acquire(vid("m", version))).release()
        await until(lambda: made[0]() is None, "the first collection")
        assert cache._collecting  # in the pause
        (await cache.acquire(vid("m", 3))).release()  # evicts v2 in the pause
        await until(lambda: made[1]() is None, "v2's cycle collected once the pause ends", timeout=20)
    finally:
        gc.enable()
        await cache.close()
