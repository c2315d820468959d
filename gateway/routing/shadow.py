"""Shadow traffic: a copy of a default-route request, sent to another version after the
primary answered, its answer compared and thrown away.

Shadows wait in one bounded queue and run one at a time behind the primaries: when the
queue is full a shadow is dropped and counted, never waited for, so a slow or failing
shadow can neither delay, fail nor change a primary answer. A shadow runs only on a version
already warm here (never a load), and joins that version's own queue like any request, so
it never passes that queue's limit (a full queue fails the shadow, not a primary).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.dataplane.predictor import InferenceService
from gateway.metrics import GatewayMetrics
from gateway.routing.catalog import Resolved
from gateway.routing.traffic import TrafficSplit

log = logging.getLogger(__name__)

SHADOW = "shadow"


@dataclass(frozen=True, slots=True)
class ShadowRequest:
    target: Resolved
    body: bytes
    media_type: str
    primary: bytes  # the primary's answer, to compare with


def agree(primary: Any, shadow: Any, *, tolerance: float) -> bool:
    """Equal answers: the same structure and classes; floats within a relative tolerance."""
    if isinstance(primary, float) or isinstance(shadow, float):
        if isinstance(primary, bool) or isinstance(shadow, bool):
            return bool(primary == shadow)
        if not isinstance(primary, int | float) or not isinstance(shadow, int | float):
            return False
        return math.isclose(primary, shadow, rel_tol=tolerance, abs_tol=tolerance)
    if isinstance(primary, dict) and isinstance(shadow, dict):
        return primary.keys() == shadow.keys() and all(
            agree(primary[k], shadow[k], tolerance=tolerance) for k in primary
        )
    if isinstance(primary, list) and isinstance(shadow, list):
        return len(primary) == len(shadow) and all(
            agree(a, b, tolerance=tolerance) for a, b in zip(primary, shadow, strict=True)
        )
    return bool(primary == shadow)


class ShadowQueue:
    def __init__(
        self,
        inference: InferenceService,
        split: TrafficSplit,
        metrics: GatewayMetrics,
        *,
        size: int,
        tolerance: float,
    ) -> None:
        self._inference = inference
        self._split = split
        self._metrics = metrics
        self._tolerance = tolerance
        self._queue: asyncio.Queue[ShadowRequest] = asyncio.Queue(maxsize=size)
        self._worker: asyncio.Task[None] | None = None
        self.dropped = 0

    def start(self) -> None:
        self._worker = asyncio.create_task(self._run(), name="shadows")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)

    def submit(self, request: ShadowRequest) -> None:
        """Queue a shadow, or drop it (counted) if the queue is full: never waits."""
        if self._worker is None:
            return
        try:
            self._queue.put_nowait(request)
        except asyncio.QueueFull:
            self.dropped += 1
            self._metrics.shadow_dropped.labels(request.target.name).inc()

    async def drain(self) -> None:
        """Wait until every queued shadow ran (tests)."""
        await self._queue.join()

    async def _run(self) -> None:
        while True:
            request = await self._queue.get()
            try:
                await self._shadow(request)
            except Exception:  # a shadow must never take the worker down
                log.exception("shadow request to %s failed unexpectedly", request.target.id)
            finally:
                self._queue.task_done()

    async def _shadow(self, request: ShadowRequest) -> None:
        target = request.target
        if not self._split.ready(target.id):
            return  # unloaded since it was chosen: a shadow never loads a version
        started = time.perf_counter()
        try:
            # No await between the check above and the lease: it cannot be unloaded in between.
            prediction = await self._inference.predict(target, request.body, request.media_type)
        except Exception as exc:
            self._metrics.arm_finished(model=target.name, arm=SHADOW, ok=False, seconds=time.perf_counter() - started)
            log.debug("shadow request to %s failed: %s", target.id, exc)
            return
        self._metrics.arm_finished(model=target.name, arm=SHADOW, ok=True, seconds=time.perf_counter() - started)
        try:
            same = agree(orjson.loads(request.primary), orjson.loads(prediction.body), tolerance=self._tolerance)
        except orjson.JSONDecodeError:
            same = request.primary == prediction.body
        self._metrics.shadow_compared(target.name, agree=same)
