"""Batching, backpressure and the prediction cache, through HTTP with real MLflow models.

Sequenced with events the models set themselves (PREDICT_ENTERED / PREDICT_GATE), never
with sleeps: a request held inside predict keeps the version's worker busy, so what
arrives meanwhile queues, deterministically.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

import pytest

from gateway.demo import IRIS
from tests.conftest import Gateway, Registry, iris_split
from tests.support import models as fault_models
from tests.support.models import GatedPredict, log_pyfunc
from tests.support.numeric import assert_far_from_ties
from tests.support.redis import redis_client, redis_url
from tests.support.servers import free_port
from tests.support.versions import entry
from tests.support.waiting import until

pytestmark = pytest.mark.anyio

ROW = iris_split([[5.1, 3.5, 1.4, 0.2]])
_names = itertools.count()


@pytest.fixture(scope="session")
def registry(sqlite_registry: Registry) -> Registry:
    return sqlite_registry


def metric(gateway: Gateway, name: str, **labels: str) -> float:
    return gateway.services.metrics.registry.get_sample_value(name, labels) or 0.0


def x(value: float) -> dict[str, Any]:
    return {"dataframe_records": [{"x": value}]}


async def held_first(gateway: Gateway, url: str) -> asyncio.Task[Any]:
    """Send one request and wait until it is inside predict, holding the version's worker."""
    fault_models.PREDICT_GATE.clear()
    fault_models.PREDICT_ENTERED.clear()
    first = asyncio.create_task(gateway.client.post(url, json=x(1.0)))
    await until(fault_models.PREDICT_ENTERED.is_set, what="the first request to enter predict")
    return first


def gated_model(registry: Registry, **tags: str) -> tuple[str, int]:
    name = f"gated-batch-{next(_names)}"
    version = registry.log(log_pyfunc, name, GatedPredict())
    for key, value in tags.items():
        registry.client.set_model_version_tag(name, str(version), key, value)
    return name, version


async def test_requests_that_arrive_together_share_one_predict_call(
    registry: Registry, make_gateway: Callable[..., Any]
) -> None:
    name, version = gated_model(registry, **{"gateway.batching": "true"})
    url = f"/models/{name}/versions/{version}/predict"
    async with make_gateway(batch_max_wait_ms=0) as gateway:
        first = await held_first(gateway, url)
        bodies = [x(2.0), x(3.0), {"dataframe_records": [{"y": 1.0}]}, x(4.0), {"dataframe_split": "garbage"}]
        rest = [asyncio.create_task(gateway.client.post(url, json=body)) for body in bodies]
        await until(
            lambda: entry(gateway.services.cache, name, version).model.queue.waiting == len(bodies),
            what="the rest to queue",
        )
        fault_models.PREDICT_GATE.set()
        answers = await asyncio.gather(first, *rest)
        assert [a.status_code for a in answers] == [200, 200, 200, 400, 200, 400]
        assert [a.json()["predictions"] for a in answers if a.status_code == 200] == [[2.0], [4.0], [6.0], [8.0]]
        assert "x" in answers[3].json()["message"]  # the bad request failed alone, saying why
        # Two predict calls answered six requests: the held one, then everything that queued.
        assert metric(gateway, "gateway_batch_size_count", model=name) == 2
        assert metric(gateway, "gateway_batch_size_sum", model=name) == 6


async def test_generic_pyfunc_does_not_batch_unless_tagged(
    registry: Registry, make_gateway: Callable[..., Any]
) -> None:
    name, version = gated_model(registry)
    url = f"/models/{name}/versions/{version}/predict"
    async with make_gateway(inference_threads=1) as gateway:
        first = await held_first(gateway, url)
        rest = [asyncio.create_task(gateway.client.post(url, json=x(float(i)))) for i in range(3)]
        await until(
            lambda: entry(gateway.services.cache, name, version).model.queue.waiting == 3, what="three to queue"
        )
        fault_models.PREDICT_GATE.set()
        answers = await asyncio.gather(first, *rest)
        assert all(a.status_code == 200 for a in answers)
        assert metric(gateway, "gateway_batch_size_count", model=name) == 4  # one call each


async def test_a_full_queue_answers_503_with_retry_after_and_loses_nothing_queued(
    registry: Registry, make_gateway: Callable[..., Any]
) -> None:
    name, version = gated_model(registry)
    url = f"/models/{name}/versions/{version}/predict"
    async with make_gateway(inference_threads=1, max_queue=2) as gateway:
        first = await held_first(gateway, url)
        queued = [asyncio.create_task(gateway.client.post(url, json=x(float(i)))) for i in (2, 3)]
        await until(lambda: entry(gateway.services.cache, name, version).model.queue.waiting == 2, what="two to queue")
        refused = await gateway.client.post(url, json=x(9.0))
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
        assert "GATEWAY_MAX_QUEUE" in refused.json()["message"]
        assert metric(gateway, "gateway_rejected_total", model=name) == 1
        fault_models.PREDICT_GATE.set()
        answers = await asyncio.gather(first, *queued)
        assert [a.json()["predictions"] for a in answers] == [[2.0], [4.0], [6.0]]
        assert (await gateway.client.post(url, json=x(5.0))).status_code == 200  # and it recovers


async def test_sklearn_takes_the_fast_path_and_batches_by_default(gateway: Gateway, registry: Registry) -> None:
    rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]] * 10
    answers = await asyncio.gather(
        *(gateway.client.post(f"/models/{IRIS}/versions/2/predict", json=iris_split([row])) for row in rows)
    )
    import pandas as pd

    from tests.conftest import IRIS_COLUMNS

    reference = registry.pyfunc(IRIS, 2)
    assert_far_from_ties(reference.get_raw_model(), rows)  # so batched labels equal single ones exactly
    expected = reference.predict(pd.DataFrame(rows, columns=IRIS_COLUMNS)).tolist()
    assert [a.json()["predictions"][0] for a in answers] == expected
    assert metric(gateway, "gateway_predictions_by_path_total", model=IRIS, path="fast") == len(rows)
    assert metric(gateway, "gateway_batch_size_sum", model=IRIS) == len(rows)


# --- the prediction cache -------------------------------------------------------------------


async def test_memory_cache_answers_a_repeated_request_of_a_deterministic_version(
    make_gateway: Callable[..., Any],
) -> None:
    async with make_gateway(prediction_cache="memory") as gateway:
        url = f"/models/{IRIS}/versions/1/predict"
        first, again = [await gateway.client.post(url, json=ROW) for _ in range(2)]
        assert first.status_code == again.status_code == 200 and first.content == again.content
        assert metric(gateway, "gateway_prediction_cache_lookups_total", result="hit") == 1
        assert metric(gateway, "gateway_batch_size_count", model=IRIS) == 1  # the model ran once
        assert entry(gateway.services.cache, IRIS, 1).in_use == 0  # a hit returns its lease too
        other = await gateway.client.post(f"/models/{IRIS}/versions/2/predict", json=ROW)
        assert other.status_code == 200  # another version: another digest, a miss
        assert metric(gateway, "gateway_prediction_cache_lookups_total", result="miss") == 2
        # A generic pyfunc model is not assumed deterministic: never looked up.
        lookups = metric(gateway, "gateway_prediction_cache_lookups_total", result="miss")
        assert (await gateway.client.post("/models/doubler/versions/1/predict", json=x(1.0))).status_code == 200
        assert metric(gateway, "gateway_prediction_cache_lookups_total", result="miss") == lookups


async def test_redis_cache_is_shared_by_replicas(make_gateway: Callable[..., Any]) -> None:
    client = redis_client()
    body = iris_split([[6.1, 2.8, 4.7, 1.2 + next(_names) / 1000]])  # a request no earlier run cached
    url = f"/models/{IRIS}/versions/2/predict"
    async with make_gateway(prediction_cache=redis_url()) as one:
        computed = await one.client.post(url, json=body)
        assert computed.status_code == 200
        await one.services.inference._answers.flush()  # the write is in the background
        assert metric(one, "gateway_prediction_cache_lookups_total", result="miss") == 1
    keys = client.keys("registry-gateway:prediction:*")
    assert keys and all(0 < client.ttl(key) <= 3600 for key in keys)
    async with make_gateway(prediction_cache=redis_url()) as other:  # another replica, same Redis
        served = await other.client.post(url, json=body)
        assert served.content == computed.content
        assert metric(other, "gateway_prediction_cache_lookups_total", result="hit") == 1
        assert metric(other, "gateway_batch_size_count", model=IRIS) == 0  # never ran the model


async def test_an_unreachable_redis_is_a_miss_not_an_error(make_gateway: Callable[..., Any]) -> None:
    port = free_port()  # nothing listens here: no other server of the run is given it
    async with make_gateway(prediction_cache=f"redis://127.0.0.1:{port}/0") as gateway:
        for _ in range(2):
            response = await gateway.client.post(f"/models/{IRIS}/versions/1/predict", json=ROW)
            assert response.status_code == 200
        await gateway.services.inference._answers.flush()
        assert metric(gateway, "gateway_prediction_cache_lookups_total", result="error") >= 2
        assert metric(gateway, "gateway_batch_size_count", model=IRIS) == 2


async def test_garbage_settings_for_the_cache_are_refused() -> None:
    from pydantic import ValidationError

    from gateway.settings import GatewaySettings

    with pytest.raises(ValidationError, match="redis"):
        GatewaySettings(prediction_cache="memcached://x")


async def test_a_request_to_a_process_still_starting_waits_for_it_then_503s(make_gateway: Callable[..., Any]) -> None:
    """Held until the catalog is read (``serving``; the warm-up may go on: see
    tests/gateway/test_serving_while_warming.py), then answered; 503 past the timeout."""
    async with make_gateway(registry_timeout_seconds=0.3) as gateway:
        services = gateway.services
        stage = "waiting for the sync leader's first pass over the registry"
        services.ready, services.serving, services.stage = False, False, stage
        try:
            waiting = asyncio.create_task(gateway.client.post(f"/models/{IRIS}/versions/1/predict", json=ROW))
            await until(lambda: services.held_until_ready == 1, what="the request to wait for startup")
            assert not waiting.done()  # held, not answered from a catalog not yet read
            services.serving = True
            assert (await waiting).status_code == 200
            services.serving = False  # and one that stays unready past the timeout
            response = await gateway.client.post(f"/models/{IRIS}/versions/1/predict", json=ROW)
        finally:
            services.ready = services.serving = True
        assert response.status_code == 503 and response.headers["retry-after"] == "1"
        assert stage in response.json()["message"]


async def test_a_request_given_up_while_queued_is_never_run_and_its_lease_comes_back(
    registry: Registry, make_gateway: Callable[..., Any]
) -> None:
    """A queued job holds its version's lease; a caller that stops waiting (here its timeout)
    before any worker took the job leaves it to be dropped, unrun, by the next worker to look,
    which returns that lease; a running one keeps its lease until its predict ends."""
    name, version = gated_model(registry, **{"gateway.batching": "true"})
    url = f"/models/{name}/versions/{version}/predict"
    async with make_gateway(batch_max_wait_ms=0, predict_timeout_seconds=0.5) as gateway:
        first = await held_first(gateway, url)  # holds the version's only worker, inside predict
        queued = await gateway.client.post(url, json=x(3.0))
        assert queued.status_code == 504 and queued.json()["error_code"] == "DEADLINE_EXCEEDED"
        assert (await first).status_code == 504  # its predict still runs, past the same timeout
        held = entry(gateway.services.cache, name, version)
        assert held.in_use == 2 and held.model.queue.waiting == 1
        fault_models.PREDICT_GATE.set()
        await until(lambda: held.in_use == 0, what="both leases back")
        assert held.model.queue.waiting == 0
        assert metric(gateway, "gateway_batch_size_count", model=name) == 1  # the queued one never ran
        assert (await gateway.client.post(url, json=x(4.0))).json() == {"predictions": [8.0]}


async def test_a_request_queued_as_the_last_worker_finishes_is_still_answered() -> None:
    """The worker leaves the pool in the same step as its last look at the queue; a
    done-callback ran later, so a request queued just then waited for its timeout."""
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path

    from gateway.dataplane.batching import Stages, VersionQueue
    from gateway.dataplane.loader import LoadedModel
    from gateway.metrics import GatewayMetrics
    from tests.support.versions import vid

    def run(
        model: LoadedModel, requests: list[tuple[bytes, str]], stages: Stages
    ) -> tuple[list[bytes | Exception], int]:
        return [body for body, _ in requests], 0

    model = LoadedModel(
        id=vid("m", 1), pyfunc=None, metadata=None, path=Path("."), size_bytes=0, load_seconds=0.0, flavor="t"
    )  # type: ignore[arg-type]
    with ThreadPoolExecutor(max_workers=1) as pool:
        queue = VersionQueue(model, run, pool, GatewayMetrics(), max_batch=8, max_wait=0.0, max_queue=8, max_workers=1)
        for n in range(20):
            async with asyncio.timeout(5):
                # Awaited directly, this resumes as soon as the answer is set: before anything
                # the worker's end schedules, so the next submit meets a worker just finishing.
                assert await queue.submit((b"%d" % n, "x")).future == b"%d" % n


async def test_a_background_request_takes_at_most_half_the_queue_and_is_not_counted_as_rejected() -> None:
    """Shadows are background requests: they leave half of their version's queue to the
    requests callers wait for, and their refusal is not a caller's 503."""
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path

    from gateway.dataplane.batching import Stages, VersionQueue
    from gateway.dataplane.loader import LoadedModel
    from gateway.errors import Overloaded
    from gateway.metrics import GatewayMetrics
    from tests.support.versions import vid

    def run(
        model: LoadedModel, requests: list[tuple[bytes, str]], stages: Stages
    ) -> tuple[list[bytes | Exception], int]:
        return [body for body, _ in requests], 0

    model = LoadedModel(
        id=vid("m", 1), pyfunc=None, metadata=None, path=Path("."), size_bytes=0, load_seconds=0.0, flavor="t"
    )  # type: ignore[arg-type]
    metrics = GatewayMetrics()
    with ThreadPoolExecutor(max_workers=1) as pool:
        queue = VersionQueue(model, run, pool, metrics, max_batch=8, max_wait=0.0, max_queue=4, max_workers=1)
        # nothing runs until this coroutine awaits: every submit below finds the queue as left
        jobs = [queue.submit((b"shadow", "x"), background=True) for _ in range(2)]
        with pytest.raises(Overloaded):
            queue.submit((b"shadow", "x"), background=True)
        jobs += [queue.submit((b"caller", "x")) for _ in range(2)]
        assert metrics.registry.get_sample_value("gateway_rejected_total", {"model": "m"}) is None
        with pytest.raises(Overloaded):
            queue.submit((b"caller", "x"))
        assert metrics.registry.get_sample_value("gateway_rejected_total", {"model": "m"}) == 1
        async with asyncio.timeout(5):
            assert [await job.future for job in jobs] == [b"shadow"] * 2 + [b"caller"] * 2


async def test_a_jobs_batch_runs_aside_and_a_request_arriving_meanwhile_is_answered_before_it_ends() -> None:
    """A version's requests are batched by one worker at a time: a job's batch of rows taken
    by that worker would hold every request arriving while it runs. Aside, it runs in a lane
    of its own, the request goes at once (and is never batched with it), and the job's batch
    still counts against the background half of the queue."""
    import threading
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path

    from gateway.dataplane.batching import Stages, VersionQueue
    from gateway.dataplane.loader import LoadedModel
    from gateway.errors import Overloaded
    from gateway.metrics import GatewayMetrics
    from tests.support.versions import vid

    entered, gate = threading.Event(), threading.Event()
    batches: list[list[bytes]] = []

    def run(
        model: LoadedModel, requests: list[tuple[bytes, str]], stages: Stages
    ) -> tuple[list[bytes | Exception], int]:
        batches.append([body for body, _ in requests])
        if requests[0][0] == b"job":
            entered.set()
            assert gate.wait(10), "the test never let the job's batch go"
        return [body for body, _ in requests], 0

    model = LoadedModel(
        id=vid("m", 1), pyfunc=None, metadata=None, path=Path("."), size_bytes=0, load_seconds=0.0, flavor="t"
    )  # type: ignore[arg-type]
    with ThreadPoolExecutor(max_workers=2) as pool:
        queue = VersionQueue(model, run, pool, GatewayMetrics(), max_batch=8, max_wait=0.0, max_queue=4, max_workers=1)
        job = queue.submit((b"job", "x"), aside=True)
        queued = queue.submit((b"job", "x"), aside=True)  # waits for the first: one job's batch at a time (max_workers)
        with pytest.raises(Overloaded):  # two aside take the background half of a queue of four
            queue.submit((b"shadow", "x"), background=True)
        try:
            await until(entered.is_set, what="the job's batch to begin")
            assert queue.waiting == 0  # a job's batch is not a request waiting
            async with asyncio.timeout(5):
                assert await queue.submit((b"caller", "x")).future == b"caller"
            assert not job.future.done()
        finally:
            gate.set()
        async with asyncio.timeout(5):
            assert [await job.future, await queued.future] == [b"job", b"job"]
    assert sorted(batches) == [[b"caller"], [b"job"], [b"job"]]


# --- where a batch runs: the event loop or the inference pool --------------------------------


def _queue_recording_threads(
    *, fast: bool, inline_cpu: float, pool: Any, on_cpu: bool = True
) -> tuple[Any, list[tuple[str, int]], dict[str, float]]:
    """A VersionQueue whose runner notes the thread each batch ran on and its size, spins for
    ``cost["seconds"]`` of CPU and then sleeps ``cost["waiting"]``."""
    import threading
    import time
    from pathlib import Path
    from types import SimpleNamespace

    from gateway.dataplane.batching import Stages, VersionQueue
    from gateway.dataplane.loader import LoadedModel
    from gateway.metrics import GatewayMetrics
    from tests.support.versions import vid

    ran: list[tuple[str, int]] = []
    cost = {"seconds": 0.0, "waiting": 0.0}

    def run(
        model: LoadedModel, requests: list[tuple[bytes, str]], stages: Stages
    ) -> tuple[list[bytes | Exception], int]:
        started = time.thread_time()
        while time.thread_time() - started < cost["seconds"]:
            pass
        time.sleep(cost["waiting"])  # time that costs no CPU, like a GPU kernel waited on
        ran.append((threading.current_thread().name, len(requests)))
        return [body for body, _ in requests], len(requests)

    model = LoadedModel(
        id=vid("m", 1), pyfunc=None, metadata=None, path=Path("."), size_bytes=0, load_seconds=0.0, flavor="t"
    )  # type: ignore[arg-type]
    model.fast = SimpleNamespace(on_cpu=on_cpu) if fast else None  # type: ignore[assignment]
    queue = VersionQueue(
        model,
        run,
        pool,
        GatewayMetrics(),
        max_batch=8,
        max_wait=0.0,
        max_queue=16,
        max_workers=1,
        inline_cpu=inline_cpu,
    )
    return queue, ran, cost


async def _batch(queue: Any, size: int) -> None:
    """Submit ``size`` requests at once (they form one batch) and wait for their answers."""
    jobs = [queue.submit((b"%d" % n, "x")) for n in range(size)]
    async with asyncio.timeout(5):
        assert [await job.future for job in jobs] == [b"%d" % n for n in range(size)]


async def test_a_fast_path_batch_runs_on_the_loop_only_up_to_the_largest_size_seen_cheap() -> None:
    import threading
    from concurrent.futures import ThreadPoolExecutor

    loop_thread = threading.current_thread().name
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pool") as pool:
        queue, ran, cost = _queue_recording_threads(fast=True, inline_cpu=0.002, pool=pool)
        await _batch(queue, 3)  # a version's first batch: nothing measured yet, so the pool
        await _batch(queue, 3)  # measured cheap at 3: on the loop
        await _batch(queue, 2)
        await _batch(queue, 5)  # larger than any seen: the pool, and measured there
        await _batch(queue, 5)
        cost["seconds"] = 0.004  # now costlier than inline_cpu (2 ms)
        await _batch(queue, 4)  # still within the bound: on the loop, where it costs too much...
        await _batch(queue, 4)  # ...so 4 is no longer cheap: the pool
        await _batch(queue, 3)  # smaller ones still may run on the loop
        where = [("loop" if name == loop_thread else "pool", size) for name, size in ran]
        assert where == [
            ("pool", 3),
            ("loop", 3),
            ("loop", 2),
            ("pool", 5),
            ("loop", 5),
            ("loop", 4),
            ("pool", 4),
            ("loop", 3),
        ]


async def test_a_batch_held_up_without_using_cpu_stays_on_the_loop_and_a_device_model_never_comes() -> None:
    """Cost is the thread's CPU: a batch the VM's scheduler paused (time on the clock, none
    on the CPU) is no dearer for it, on the loop or in the pool. A fast path that computes on
    a device (a torch model on a GPU) waits there without using the CPU: never on the loop."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    loop_thread = threading.current_thread().name
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pool") as pool:
        queue, ran, cost = _queue_recording_threads(fast=True, inline_cpu=0.002, pool=pool)
        cost["waiting"] = 0.004  # twice the budget on the clock, nothing on the CPU
        for _ in range(4):
            await _batch(queue, 2)
        assert ["loop" if name == loop_thread else "pool" for name, _ in ran] == ["pool", "loop", "loop", "loop"]

        queue, ran, cost = _queue_recording_threads(fast=True, inline_cpu=0.002, pool=pool, on_cpu=False)
        for _ in range(3):
            await _batch(queue, 2)
        assert all(name != loop_thread for name, _ in ran)


async def test_the_loop_gets_its_turn_between_two_batches_it_runs_itself() -> None:
    import threading
    from concurrent.futures import ThreadPoolExecutor

    loop_thread = threading.current_thread().name
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pool") as pool:
        queue, ran, _ = _queue_recording_threads(fast=True, inline_cpu=0.002, pool=pool)
        await _batch(queue, 8)  # measured in the pool: batches of up to 8 may run on the loop
        jobs = [queue.submit((b"%d" % n, "x")) for n in range(16)]  # two batches of 8 (max_batch)

        async def other() -> None:
            ran.append(("other", 0))

        await asyncio.gather(other(), *(job.future for job in jobs))
        where = [("loop" if name == loop_thread else name if name == "other" else "pool", n) for name, n in ran]
        assert where == [("pool", 8), ("loop", 8), ("other", 0), ("loop", 8)]


@pytest.mark.parametrize("fast, inline_cpu", [(False, 0.002), (True, 0.0)], ids=["no-fast-path", "setting-0"])
async def test_a_version_without_a_fast_path_or_with_the_setting_0_always_runs_in_the_pool(
    fast: bool, inline_cpu: float
) -> None:
    """A pyfunc model may do I/O in predict (call another service): on the loop it would
    stall every request, however cheap its CPU."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pool") as pool:
        queue, ran, _ = _queue_recording_threads(fast=fast, inline_cpu=inline_cpu, pool=pool)
        for size in (1, 1, 2, 1):
            await _batch(queue, size)
        assert [name for name, _ in ran] != [] and threading.current_thread().name not in {name for name, _ in ran}


async def test_an_sklearn_versions_small_batches_run_on_the_loop_and_a_pyfunc_versions_never(
    registry: Registry, make_gateway: Callable[..., Any]
) -> None:
    name, version = gated_model(registry, **{"gateway.batching": "true"})
    fault_models.PREDICT_GATE.set()  # never held here
    # What is judged is which versions may run on the loop, not what a batch costs: a budget
    # no CPU's single-row predict reaches (a slow VM's first one took over the default 1 ms).
    async with make_gateway(inline_predict_ms=100) as gateway:
        for _ in range(3):
            assert (await gateway.client.post(f"/models/{IRIS}/versions/2/predict", json=ROW)).status_code == 200
            assert (
                await gateway.client.post(f"/models/{name}/versions/{version}/predict", json=x(1.0))
            ).status_code == 200
        assert metric(gateway, "gateway_batches_total", model=IRIS, runs_on="pool") == 1  # the first, measured
        assert metric(gateway, "gateway_batches_total", model=IRIS, runs_on="loop") == 2
        assert metric(gateway, "gateway_batches_total", model=name, runs_on="pool") == 3
        assert metric(gateway, "gateway_batches_total", model=name, runs_on="loop") == 0
