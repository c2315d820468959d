"""Shadow traffic: a copy of a default-route request, sent to another version after the
primary answered, its answer compared and thrown away.

Shadows wait in one bounded queue (``GATEWAY_SHADOW_QUEUE_SIZE``) and up to
``GATEWAY_SHADOW_CONCURRENCY`` of them run at once, behind the primaries: those in flight
together join their version's queue and share its batches like any request, so a shadow
version that batches answers its shadows a batch at a time, not one by one. Nothing ever
waits for a shadow: when the queue is full a shadow is dropped and counted; a shadow joins
its version's own queue only while that is less than half full (else it is dropped too), so
the requests callers wait for always keep the other half; a version that does not batch runs
one shadow at a time (each would hold an inference thread the primaries need). A version
whose shadows keep failing pauses (``GATEWAY_SHADOW_PAUSE_AFTER_FAILURES`` in a row): its
copies are dropped for a second, then for twice as long each time the first shadow after a
pause fails too, up to a minute; one that answers ends it, and a failure a minute or more
after a pause ended counts from one again. A failure costs about as much CPU as an answer (a
pyfunc version that raised on every request took 2 ms of the core each, one after another,
and the primaries' p99 went from 5 to 17 ms): the pause keeps a broken shadow from spending
the primaries' CPU on errors nobody reads. So a slow or failing shadow can neither delay,
fail nor change a primary answer. A shadow runs only on a version already warm here (never a
load).

Any protocol's default route copies its requests here: the request is run again, in that
protocol, on the shadow version (``ShadowRequest.run``), and both answers are decoded into
values (``ShadowRequest.decode``: the MLflow protocol's JSON, the Open Inference Protocol's
outputs) and compared by :func:`agree`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from gateway.dataplane.predictor import InferenceService, Prediction
from gateway.errors import Overloaded
from gateway.metrics import GatewayMetrics
from gateway.observability.context import current
from gateway.observability.records.record import Exchange, InferenceRecord
from gateway.observability.records.recorder import Recorder
from gateway.routing.catalog import Resolved
from gateway.routing.traffic import CANARY, DEFAULT, SHADOW, TrafficSplit
from registry_sync.identity import VersionId

log = logging.getLogger(__name__)

Run = Callable[[Resolved], Awaitable[Prediction]]
"""The primary's request, run on another version (a ``route="shadow"`` Resolved)."""
Decode = Callable[[bytes], Any]
"""An answer of the request's protocol as plain values, to compare."""


class ErrorAnswer(Protocol):
    """How a protocol answers an error: gateway.http.errors.HttpError."""

    @property
    def status(self) -> int: ...

    @property
    def code(self) -> str: ...


@dataclass(frozen=True, slots=True)
class ShadowRecord:
    """What a shadow's inference record takes from its primary (whose record was sampled): the
    request as received, who asked, and how the protocol would have answered a failure
    (``classify``: gateway.http.errors', handed down by the adapter). The shadow's row has
    the primary's request id, with arm ``shadow``."""

    exchange: Exchange
    request_id: str
    key_id: str | None
    route: str | None
    classify: Callable[[BaseException], ErrorAnswer]

    @staticmethod
    def of(exchange: Exchange, classify: Callable[[BaseException], ErrorAnswer]) -> ShadowRecord | None:
        """For the request being served, when its own record was sampled; else None."""
        request = current()
        if request is None or not request.recorded:
            return None
        return ShadowRecord(exchange, request.request_id, request.key_id, request.path, classify)


@dataclass(frozen=True, slots=True)
class ShadowRequest:
    target: Resolved
    run: Run
    primary: bytes  # the primary's answer, to compare with
    decode: Decode = orjson.loads
    record: ShadowRecord | None = None


@dataclass(slots=True)
class ShadowCounts:
    """One shadow version's copies in this process since start."""

    ran: int = 0  # answered or failed
    failed: int = 0
    agreed: int = 0
    differed: int = 0
    dropped: int = 0  # never ran: the shadow queue or half its version's queue was full, it was unloaded, or paused


FIRST_PAUSE_SECONDS = 1.0
LONGEST_PAUSE_SECONDS = 60.0


@dataclass(slots=True)
class _Failing:
    """A shadow version's failures in a row, and its pause."""

    in_a_row: int = 0
    pause: float = 0.0  # the last pause's length: doubled if the first shadow after it fails too
    until: float = 0.0  # its copies are dropped until then (the queue's clock)


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
        concurrency: int = 1,
        pause_after_failures: int = 0,
        records: Recorder | None = None,
    ) -> None:
        self._inference = inference
        self._records = records  # a table sink's: shadows are rows of the inference tables
        self._split = split
        self._metrics = metrics
        self._tolerance = tolerance
        self._concurrency = concurrency
        self._queue: asyncio.Queue[ShadowRequest] = asyncio.Queue(maxsize=size)
        self._workers: list[asyncio.Task[None]] = []
        # One shadow at a time for each version that does not batch (see the module's doc).
        self._lanes: dict[VersionId, asyncio.Lock] = {}
        self.counts: dict[tuple[str, int], ShadowCounts] = {}
        self.dropped = 0
        self._pause_after = pause_after_failures  # 0: never pause
        self._clock = time.monotonic  # the pauses' clock
        self._failing: dict[VersionId, _Failing] = {}

    def start(self) -> None:
        self._workers = [asyncio.create_task(self._run(), name=f"shadows {i}") for i in range(self._concurrency)]

    async def stop(self) -> None:
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []

    def copy(
        self,
        primary: Resolved,
        answer: bytes,
        run: Run,
        decode: Decode = orjson.loads,
        *,
        record: ShadowRecord | None = None,
    ) -> None:
        """After a default-route answer (``primary``, answered ``answer``): send the same
        request to each shadow the split chooses for it. Never waits. ``record``: the
        primary's, when it was recorded (its shadows then are too, where the sink takes them)."""
        if (primary.route != DEFAULT and primary.route != CANARY) or not self._workers:
            return  # a request that named its version is never copied; stopped, nothing is
        if self._records is None or not self._records.tables:
            record = None
        for target in self._split.shadows(primary):
            if self.paused_for(target.id) is not None:
                self._drop(target)
            else:
                self.submit(ShadowRequest(target, run, answer, decode, record))

    def paused_for(self, version: VersionId) -> float | None:
        """Seconds left of this version's pause, or None when its shadows run."""
        failing = self._failing.get(version)
        if failing is None:
            return None
        left = failing.until - self._clock()
        return left if left > 0 else None

    def submit(self, request: ShadowRequest) -> None:
        """Queue a shadow, or drop it (counted) if the queue is full: never waits."""
        if not self._workers:
            return
        try:
            self._queue.put_nowait(request)
        except asyncio.QueueFull:
            self._drop(request.target)

    async def drain(self) -> None:
        """Wait until every queued shadow ran (tests)."""
        await self._queue.join()

    def _counts(self, target: Resolved) -> ShadowCounts:
        counts = self.counts.get((target.name, target.version))
        if counts is None:
            counts = self.counts[(target.name, target.version)] = ShadowCounts()
        return counts

    def _drop(self, target: Resolved) -> None:
        self.dropped += 1
        self._counts(target).dropped += 1
        self._metrics.shadow_was_dropped(target.name)

    async def _run(self) -> None:
        while True:
            request = await self._queue.get()
            try:
                await self._shadow(request)
            except Exception:  # a shadow must never take a worker down
                log.exception("shadow request to %s failed unexpectedly", request.target.id)
            finally:
                self._queue.task_done()

    async def _shadow(self, request: ShadowRequest) -> None:
        target = request.target
        if self._inference.batches(target.id):
            await self._predict(request)
            return
        lane = self._lanes.setdefault(target.id, asyncio.Lock())
        async with lane:
            await self._predict(request)

    async def _predict(self, request: ShadowRequest) -> None:
        target = request.target
        if not self._split.ready(target.id) or self.paused_for(target.id) is not None:
            # unloaded since it was chosen (a shadow never loads a version), or paused since
            # it was queued (the queue and the version's lane may hold hundreds)
            self._drop(target)
            return
        counts = self._counts(target)
        started, began, now = time.perf_counter(), self._clock(), time.time()
        try:
            # No await between the check above and the lease: it cannot be unloaded in between.
            prediction = await request.run(target)
        except Overloaded:  # its version's queue is half full: the rest is the callers'
            self._drop(target)
            return
        except Exception as exc:
            counts.ran += 1
            counts.failed += 1
            seconds = time.perf_counter() - started
            self._metrics.arm_finished(model=target.name, arm=SHADOW, ok=False, seconds=seconds)
            log.debug("shadow request to %s failed: %s", target.id, exc)
            self._failed(target, started=began)
            if request.record is not None:
                self._record(request.record, target, None, exc, now, seconds)
            return
        self._answered(target, started=began)
        if request.record is not None:
            self._record(request.record, target, prediction.body, None, now, time.perf_counter() - started)
        counts.ran += 1
        self._metrics.arm_finished(model=target.name, arm=SHADOW, ok=True, seconds=time.perf_counter() - started)
        try:
            same = agree(request.decode(request.primary), request.decode(prediction.body), tolerance=self._tolerance)
        except Exception:  # an answer the decoder cannot read: equal bytes or not
            same = request.primary == prediction.body
        if same:
            counts.agreed += 1
        else:
            counts.differed += 1
        self._metrics.shadow_compared(target.name, agree=same)

    def _record(
        self,
        record: ShadowRecord,
        target: Resolved,
        answer: bytes | None,
        error: BaseException | None,
        at: float,
        seconds: float,
    ) -> None:
        """The shadow's row of the inference tables: its answer (or its failure, as the
        primary's protocol would have answered it), never compared here."""
        assert self._records is not None
        exchange = record.exchange
        failed = record.classify(error) if error is not None else None
        if answer is not None and exchange.answer_json is not None:
            answer = exchange.answer_json(answer)
        model = self._inference.loaded(target.id)
        self._records.offer(
            InferenceRecord(
                model=target.name,
                version=target.version,
                alias=None,
                arm=SHADOW,
                request_id=record.request_id,
                route_key=exchange.route_key,
                protocol=exchange.protocol,
                media_type=exchange.media_type,
                request=exchange.request,
                response=answer or b"",
                status=failed.status if failed is not None else 200,
                latency_seconds=seconds,
                time=at,
                route=record.route,
                error_code=failed.code if failed is not None else None,
                error=type(error).__name__ if error is not None else None,
                key_id=record.key_id,
                signature=model.metadata.signature if model is not None else None,
            )
        )

    def _answered(self, target: Resolved, *, started: float) -> None:
        """An answer ends the version's failures in a row and its pauses (the next pause would
        be a second again), unless it was already running when the current pause began."""
        failing = self._failing.get(target.id)
        if failing is not None and started >= failing.until:
            del self._failing[target.id]

    def _failed(self, target: Resolved, *, started: float) -> None:
        """Count a failure in a row; pause the version's shadows once there are enough (one,
        right after a pause). A shadow already running when a pause began does not count, and
        a failure long after the last pause (a new tag, say) starts the count afresh."""
        if not self._pause_after:
            return
        failing = self._failing.setdefault(target.id, _Failing())
        if started < failing.until:
            return
        if failing.pause and started >= failing.until + LONGEST_PAUSE_SECONDS:
            failing.in_a_row, failing.pause = 0, 0.0
        failing.in_a_row += 1
        if failing.in_a_row < (1 if failing.pause else self._pause_after):
            return
        failing.pause = min(failing.pause * 2 or FIRST_PAUSE_SECONDS, LONGEST_PAUSE_SECONDS)
        failing.until = self._clock() + failing.pause
        failing.in_a_row = 0
        self._metrics.shadow_paused(target.name)
        log.warning(
            "shadows of %s version %d keep failing: paused for %.0f s (its copies are dropped meanwhile)",
            target.name,
            target.version,
            failing.pause,
        )
