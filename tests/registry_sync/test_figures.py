"""A fleet's figures per version: what each process publishes adds up, its p99 comes from the
summed buckets, and each write-back's window holds what was answered since the last."""

from __future__ import annotations

import bisect

import numpy as np
import pytest
from sqlalchemy import Engine

from gateway.fleet.figures import FiguresPublisher
from gateway.metrics import _LATENCY_BUCKETS, GatewayMetrics
from registry_sync.figures import FiguresStore
from registry_sync.writeback import OperationalFigures

pytestmark = pytest.mark.anyio


def _answer(metrics: GatewayMetrics, seconds: list[float], *, status: int = 200, version: str = "1") -> None:
    for value in seconds:
        metrics.request_finished(model="iris", version=version, status=status, seconds=value)


def _bucket(value: float) -> int:
    return bisect.bisect_left(_LATENCY_BUCKETS, value)


async def test_a_fleets_p99_comes_from_summed_buckets_and_each_window_holds_only_what_is_new(engine: Engine) -> None:
    store = FiguresStore(engine)
    fast, mixed = GatewayMetrics(), GatewayMetrics()  # two processes of a fleet
    rng = np.random.default_rng(3)
    fast_seconds = list(rng.uniform(0.0006, 0.0009, 100))
    mixed_seconds = list(rng.uniform(0.0006, 0.0009, 97)) + [1.5, 1.8, 2.2]
    _answer(fast, fast_seconds)
    _answer(mixed, mixed_seconds)
    _answer(mixed, [0.003] * 4, status=503)  # answered 5xx: errors
    _answer(mixed, [0.002] * 2, status=400)  # a caller's mistake: not an error of the version
    _answer(fast, [0.001] * 5, version="2")
    for number, metrics in enumerate((fast, mixed)):
        publisher = FiguresPublisher(metrics, store, replica=f"host:{number}", interval_seconds=1)
        assert await publisher.publish()
        assert not await publisher.publish()  # unchanged: nothing written
    operational = OperationalFigures(store)
    assert operational.refresh() == [("iris", 1), ("iris", 2)]
    figures = operational("iris", "1")
    everything = fast_seconds + mixed_seconds + [0.003] * 4 + [0.002] * 2
    assert figures["requests"] == len(everything) == 206
    assert figures["error_rate"] == 4 / 206
    # The fleet's p99 lies in the bucket of the exact p99 of every answer; the mean of the two
    # processes' own p99s (one fast, one slow) does not.
    exact = float(np.percentile(everything, 99))
    assert _bucket(figures["p99_ms"] / 1000) == _bucket(exact) and exact > 1
    own = [float(np.percentile(fast_seconds, 99)), float(np.percentile(mixed_seconds + [0.003] * 4 + [0.002] * 2, 99))]
    assert _bucket(sum(own) / 2) != _bucket(exact)
    assert operational("iris", "2")["requests"] == 5

    operational.logged("iris", 1)  # written: the next window starts here
    _answer(fast, [0.0007] * 3)
    await FiguresPublisher(fast, store, replica="host:0", interval_seconds=1).publish()
    operational.refresh()
    # Three answers in the (0.5 ms, 1 ms] bucket: its p99 is read 99% of the way up it.
    p99 = pytest.approx(0.5 + 0.5 * 0.99, rel=4 * float(np.finfo(np.float64).eps))
    assert operational("iris", "1") == {"requests": 3.0, "error_rate": 0.0, "p99_ms": p99}
    assert operational("iris", "2")["requests"] == 5  # never logged: still all of it
    operational.refresh()
    operational.logged("iris", 1)
    assert operational("iris", "1") == {}  # nothing new: nothing to log
