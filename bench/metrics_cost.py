"""What the Prometheus metrics cost one request, measured in process (issue 28).

The gateway has no switch to turn its metrics off (they count every request, and alerts and
dashboards read them), so their cost is measured where it is paid: the very calls one request
on the default route makes (``request_finished``, ``arm_finished`` (the canary guard's per-arm
counts), ``cache_hit``, its queue wait) and its share of one batch's (``batch_finished``,
``batch_timed``), with the labels the bench's requests carry, timed in a loop on a real
``GatewayMetrics``. bench/sections/observability.py divides that by the time a request takes
at 32 connections on one core (one over the default point's req/s in the same run): the share
of the lane's CPU the metrics take.

``python bench/metrics_cost.py`` prints the microseconds per request.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

BATCH = 16  # requests per batch at 32 connections (the bench's batches are of this order)


def microseconds_per_request(requests: int = 200_000) -> float:
    """The metric calls of one request and 1/BATCH of a batch's, best of three loops."""
    from gateway.metrics import GatewayMetrics

    metrics = GatewayMetrics()
    waits = [0.0002] * BATCH
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for index in range(requests):
            metrics.cache_hit("iris")
            metrics.request_finished(model="iris", version="1", status=200, seconds=0.003)
            metrics.arm_finished(model="iris", arm="default", ok=True, seconds=0.003)
            if index % BATCH == 0:
                metrics.batch_finished("iris", size=BATCH, fast=BATCH, on_loop=True)
                metrics.batch_timed("iris", 1, waits=waits, compute=0.0001, decode=0.0001, encode=0.00005)
        best = min(best, (time.perf_counter() - started) / requests * 1e6)
    return best


def share(microseconds: float, req_s: float) -> float:
    """The metrics' share of a request's time on one core serving ``req_s`` requests a second."""
    return microseconds / (1e6 / req_s)


if __name__ == "__main__":
    print(f"{microseconds_per_request():.3f}")
