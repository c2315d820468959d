"""One queue per loaded version: requests wait there, and a worker takes them a batch at a time.

Adaptive: a worker takes whatever is waiting when it is free, so a lone request goes at
once and a burst coalesces while the previous batch runs. Only while requests arrive
together does a batch also wait up to ``max_wait`` for more. The queue is bounded:
past ``max_queue`` waiting requests the answer is :class:`Overloaded` (503, Retry-After),
so a slow model sheds load instead of piling up memory and latency.

All bookkeeping runs on the event loop; the batch itself runs in the inference pool, except
a small one of a version whose predict is pure computation (see :meth:`VersionQueue.on_loop`).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from gateway.dataplane.loader import LoadedModel
from gateway.errors import Overloaded, ShuttingDown
from gateway.metrics import GatewayMetrics
from gateway.observability.context import RequestContext, current
from gateway.observability.tracing import BatchTiming, Member, Tracing

Scoring = tuple[bytes, str]  # an MLflow scoring body and its media type: batched, fast path
Call = Callable[[LoadedModel], bytes]
"""Another protocol's request, as its adapter's own decode-predict-encode: run in the
inference thread against the leased version, one at a time (gateway.protocols)."""


@dataclass(frozen=True, slots=True)
class TensorCall:
    """Another protocol's request that can join a batch on the fast path: ``tensors`` gives
    its inputs as named arrays, or as rows already laid out as the model's fast path says
    (``FastPath.columns``), or None (or raises the adapter's own error for a bad request);
    ``encode`` turns its rows of the batch's predictions into its answer; ``alone`` is the
    whole request through pyfunc, for when the fast path cannot take it."""

    tensors: Callable[[LoadedModel], dict[str, Any] | np.ndarray | None]
    encode: Callable[[LoadedModel, Any], bytes]
    alone: Call
    trickles: bool = False
    """It comes from a transport that hands the event loop one request per turn however many
    its clients have sent (grpc.aio: see :class:`~gateway.protocols.oip_grpc.GrpcServer`):
    such requests never find company in the queue, so a batch of them waits for the next ones
    while clients are seen to send concurrently (:meth:`VersionQueue.gather`)."""


Request = Scoring | Call | TensorCall
Outcome = bytes | Exception

# Gathering requests that trickle in (TensorCall.trickles): a batch waits for the next one at
# most a few recent gaps between such arrivals, and never longer than this. A wait that
# found no company makes the next ones rarer (every 2nd batch, 4th, ... up to every 1024th),
# so a lone client's requests almost never wait; one that found company resets that.
GATHER_MAX_WAIT = 0.002
GATHER_GAPS = 4  # a wait for the next arrival: this many recent gaps between arrivals (at most GATHER_MAX_WAIT)
# ... and only at a batch size where waits have lately brought one more (see gather): the share
# of them that did (a moving average, _EWMA_COMPANY the newest wait's weight), below which a
# batch of that size goes without waiting; each batch that went without waiting at a size
# adds a little back, so the size is tried again now and then (callers come and go).
_COMPANY_SIZES = 65
_COMPANY_FLOOR = 0.25
_EWMA_COMPANY = 0.25
_COMPANY_BACK = 0.002
_MAX_GATHER_SKIP = 1023
_EWMA = 0.2  # weight of the newest arrival in the moving averages below


@dataclass(slots=True)
class Stages:
    """Seconds a batch spent in each stage, added up by the runner as it goes (the latency
    split: gateway_codec_seconds, gateway_compute_seconds, and the batch's child spans)."""

    decode: float = 0.0
    compute: float = 0.0  # the model's own predict
    encode: float = 0.0
    rows: dict[int, int] = field(default_factory=dict)  # a request's index in the batch -> its input rows, where known


BatchRunner = Callable[[LoadedModel, list[Request], Stages], tuple[list[Outcome], int]]  # outcomes, fast count


class Held(Protocol):
    """What a job holds while its work may still run: the lease on its version (returned once,
    however often this is called: gateway.dataplane.cache.Lease)."""

    def release(self) -> None: ...


@dataclass(eq=False, slots=True)
class Job:
    """A request in its version's queue. ``future`` is the one its caller awaits: the answer,
    or the error, set by the worker; done before that when the caller stopped waiting (a
    timeout fails it, a caller that is cancelled cancels it), and then a worker that has not
    taken the job yet drops it, and one that runs it discards the outcome. Either way the
    worker returns ``held`` once the job's work is over, never sooner: a version is not
    unloaded under a predict still running."""

    request: Request
    future: asyncio.Future[bytes]
    queued_ns: int  # time.perf_counter_ns() when it was queued
    held: Held | None = None
    trace: Any = None  # the request's span (open), when tracing samples it
    trickles: bool = False  # TensorCall.trickles
    context: RequestContext | None = None  # its request's, told its latency split once the batch ran


@dataclass(eq=False)
class VersionQueue:
    model: LoadedModel
    run: BatchRunner
    executor: Executor
    metrics: GatewayMetrics
    max_batch: int
    max_wait: float  # seconds
    max_queue: int
    max_workers: int
    inline_cpu: float = 0.0  # seconds; 0: every batch runs in the pool (see on_loop)
    tracing: Tracing = field(default_factory=Tracing.off)
    _loop: asyncio.AbstractEventLoop | None = None  # the event loop of its first request
    _cheap_up_to: int = 0  # the largest batch size seen costing less than inline_cpu
    _waiting: deque[Job] = field(default_factory=deque)
    _workers: set[asyncio.Task[None]] = field(default_factory=set)
    _aside: deque[Job] = field(default_factory=deque)  # jobs' batches (submit's ``aside``)
    _aside_workers: set[asyncio.Task[None]] = field(default_factory=set)
    _together: bool = False  # the last batch found company: worth waiting for more
    # Requests that trickle in (TensorCall.trickles): the moving average of the gap between two
    # arrivals, the batches to let go before the next wait for company (and the streak of waits
    # that found none), the future a gathering worker waits on for the next arrival.
    _gap: float = GATHER_MAX_WAIT
    _last_trickle: float = 0.0
    _skip: int = 0
    _misses: int = 0
    _arrival: asyncio.Future[bool] | None = None
    _company: list[float] = field(default_factory=lambda: [1.0] * _COMPANY_SIZES)
    last_request_ns: int = 0
    """When the last request a caller waits for (not ``background``) was queued
    (time.perf_counter_ns): a job's chunk predicts in small batches while it is recent."""
    waits_in_vain: int = 0
    """Batches that waited for company and found none (a lone client's cost, for tests)."""
    waits_timed_out: int = 0
    """Waits for one more request that ran out after the batch had found company (for tests)."""

    def submit(
        self, request: Request, held: Held | None = None, *, background: bool = False, aside: bool = False
    ) -> Job:
        """Queue a request, with what it holds until its work is over (see :class:`Job`); past
        ``max_queue`` waiting, :class:`Overloaded` (and ``held`` stays the caller's). A
        ``background`` request (a shadow) may take only half the queue, and its refusal is not
        counted as a rejected request: the rest is kept for the requests callers wait for.

        ``aside`` (a job's batch of rows, always background): it runs in a lane of its own, in
        the pool, beside the requests' batches rather than as one of them, as many at once as
        the requests' (``max_workers``: one for a batched version). A batched version's requests
        are batched by one worker at a time, so a job's batch taken by that worker would hold
        every request that arrives while it runs (milliseconds of rows); aside, a request goes
        at once, sharing the cores with it instead."""
        if (background or aside) and len(self._waiting) + len(self._aside) >= max(1, self.max_queue // 2):
            raise Overloaded(self.model.name, self.model.version, len(self._waiting))
        if aside:
            return self._submit_aside(request, held)
        if len(self._waiting) >= self.max_queue:
            self.metrics.queue_full(self.model.name)
            raise Overloaded(self.model.name, self.model.version, len(self._waiting))
        loop = self._loop
        if loop is None:  # the loop this version serves on, looked up once: each look is a getpid()
            loop = self._loop = asyncio.get_running_loop()
        job = Job(request, loop.create_future(), time.perf_counter_ns(), held, context=current())
        if not background:
            self.last_request_ns = job.queued_ns
        if self.tracing.enabled and job.context is not None:
            job.trace = job.context.span  # set only while a sampled span records the request (RequestContext.traced)
        self._waiting.append(job)
        if isinstance(request, TensorCall) and request.trickles:
            job.trickles = True
            now = time.perf_counter()
            if self._last_trickle:
                self._gap += _EWMA * (min(now - self._last_trickle, GATHER_MAX_WAIT) - self._gap)
            self._last_trickle = now
        if self._arrival is not None:  # a worker gathers a batch: this one joins it
            if not self._arrival.done():
                self._arrival.set_result(True)
        elif len(self._workers) < self.max_workers:
            task = loop.create_task(self._work(), name=f"batch {self.model.name} v{self.model.version}")
            self._workers.add(task)
        return job

    def _submit_aside(self, request: Request, held: Held | None) -> Job:
        loop = asyncio.get_running_loop()
        job = Job(request, loop.create_future(), time.perf_counter_ns(), held, context=current())
        self._aside.append(job)
        if len(self._aside_workers) < self.max_workers:
            task = loop.create_task(self._work_aside(), name=f"jobs' batches {self.model.name} v{self.model.version}")
            self._aside_workers.add(task)
        return job

    async def _work_aside(self) -> None:
        try:
            while self._aside:
                batch = self._take(1, self._aside)
                if batch:  # never on the loop, nor measured for it: a request's batch is what on_loop sizes
                    await self._run_batch(batch, functools.partial(self.run, self.model), on_loop=False)
        finally:  # in the same step as the last look at the lane (see _work)
            if (me := asyncio.current_task()) is not None:
                self._aside_workers.discard(me)

    @property
    def waiting(self) -> int:
        """Requests waiting for the batch worker (jobs' batches aside are not counted)."""
        return len(self._waiting)

    async def _work(self) -> None:
        try:
            await self._drain()
        finally:
            # Leave the set in the same step as the last look at the queue: a done-callback
            # would run later, and a request queued in between would find every worker "busy"
            # and wait for its timeout (a missed wake-up).
            if (me := asyncio.current_task()) is not None:
                self._workers.discard(me)

    async def _drain(self) -> None:
        while self._waiting:
            batch = self._take(self.max_batch)
            try:
                if self._together and len(batch) < self.max_batch and self.max_wait > 0:
                    await asyncio.sleep(self.max_wait)
                    batch += self._take(self.max_batch - len(batch))
                if batch and batch[0].trickles and len(batch) < self.max_batch:
                    await self.gather(batch)
            except asyncio.CancelledError:  # the worker stopped (the loop closing) before any work began
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(ShuttingDown())
                    if job.held is not None:
                        job.held.release()
                raise
            if not batch:
                continue
            self._together = len(batch) > 1 or bool(self._waiting)
            on_loop = self.on_loop(len(batch))
            await self._run_batch(batch, self._measured, on_loop=on_loop)
            if on_loop and self._waiting:
                await asyncio.sleep(0)  # the loop's other work between two batches it ran itself

    async def gather(self, batch: list[Job]) -> None:
        """Requests that trickle in one per loop turn (``TensorCall.trickles``) joining a
        batch: it waits for each next one up to ``GATHER_GAPS`` recent gaps between arrivals (at
        most ``GATHER_MAX_WAIT``) and goes as soon as one is late or it is full. When concurrent
        clients have sent more (16 threads on one tritonclient), they come and share the
        batch; when a wait finds none (a lone client), the next waits get exponentially rarer,
        and one that finds company makes them regular again. Nor does a batch wait at a size
        where waits have lately brought no one (``_company``): a caller waits for one answer at
        a time, so four clients' batch of four waits in vain for a fifth. What comes joins
        ``batch`` as it comes (a worker stopped meanwhile still holds every job it took)."""
        if self._skip:
            self._skip -= 1
            return
        if self._arrival is not None:  # another worker is gathering (it waits on that future)
            return  # the arrivals are its: two would wake each other's waits
        had = len(batch)
        loop = asyncio.get_running_loop()
        company, waited = self._company, False
        while len(batch) < self.max_batch:
            size = min(len(batch), _COMPANY_SIZES - 1)
            if company[size] < _COMPANY_FLOOR:
                company[size] += _COMPANY_BACK
                break
            waited = True
            arrival: asyncio.Future[bool] = loop.create_future()
            self._arrival = arrival
            timer = loop.call_later(min(GATHER_GAPS * self._gap, GATHER_MAX_WAIT), _settle, arrival)
            try:
                arrived = await arrival
            finally:
                timer.cancel()
                self._arrival = None
            more = self._take(self.max_batch - len(batch))
            batch += more
            company[size] += _EWMA_COMPANY * ((1.0 if more else 0.0) - company[size])
            if not arrived and not more:
                self.waits_timed_out += 1 if len(batch) > had else 0
                break
        if len(batch) > had:
            self._misses = 0
        elif waited:
            self.waits_in_vain += 1
            self._misses += 1
            self._skip = min(2**self._misses - 1, _MAX_GATHER_SKIP)

    def on_loop(self, size: int) -> bool:
        """Whether a batch of ``size`` requests runs right here on the event loop instead of in
        the inference pool. Handing a batch to a thread and its answers back costs two thread
        switches and, on a busy core, the GIL passed back and forth inside predict: about as
        much again as a small sklearn predict (see docs/performance.md). On the loop the batch
        holds the GIL throughout, which a thread mostly does as well.

        Only for a version with a fast path (the flavor's own predict on an array, sklearn or
        pytorch: computation, never I/O, which would stall every request), and only up to the
        largest batch of it seen to cost less than ``inline_cpu``: nothing is extrapolated. A
        version's first batch, and any batch larger than that, runs in the pool and is measured
        there; a batch that cost more lowers the bound below its own size."""
        fast = self.model.fast
        return self.inline_cpu > 0 and fast is not None and fast.on_cpu and size <= self._cheap_up_to

    def _observe(self, batch: list[Job], stages: Stages, started: int, *, fast: int, on_loop: bool) -> None:
        """The batch's metrics (size, the latency split) and, when tracing, its spans."""
        model, version = self.model.name, self.model.version
        self.metrics.batch_finished(model, size=len(batch), fast=fast, on_loop=on_loop)
        waits = [(started - job.queued_ns) / 1e9 for job in batch]
        for index, (job, wait) in enumerate(zip(batch, waits, strict=True)):
            if job.context is not None:  # for its inference record, and its usage
                job.context.queue_seconds, job.context.predict_seconds = wait, stages.compute
                job.context.rows = stages.rows.get(index, 0)
        self.metrics.batch_timed(
            model, version, waits=waits, compute=stages.compute, decode=stages.decode, encode=stages.encode
        )
        if self.tracing.enabled and any(job.trace is not None for job in batch):  # most batches: none sampled
            timing = BatchTiming(started, time.perf_counter_ns(), stages.decode, stages.compute, stages.encode)
            members = [Member(job.trace, job.queued_ns) for job in batch]
            self.tracing.batch_ran(model=model, version=version, members=members, timing=timing)

    def _measured(self, requests: list[Request], stages: Stages) -> tuple[list[Outcome], int]:
        """Run a batch and measure it by the thread's CPU time, on the loop and in the pool
        alike: a batch that cost more than ``inline_cpu`` lowers the bound below its size, a
        cheaper one raises it to its size. Not by the clock: in the pool it counts the waits
        for the GIL the busy loop holds, and anywhere the moments a VM's scheduler pauses the
        whole process; neither is the batch's cost (by the clock, on a shared VM, a version
        drifted into the pool batch by batch). What a clock would catch, a wait on a device,
        is ruled out before: only fast paths that compute on the CPU run on the loop."""
        cpu = time.thread_time()
        try:
            return self.run(self.model, requests, stages)
        finally:
            size = len(requests)
            if time.thread_time() - cpu < self.inline_cpu:
                self._cheap_up_to = max(self._cheap_up_to, size)
            else:
                self._cheap_up_to = min(self._cheap_up_to, size - 1)

    async def _run_batch(
        self,
        batch: list[Job],
        run: Callable[[list[Request], Stages], tuple[list[Outcome], int]],
        *,
        on_loop: bool,
    ) -> None:
        """Run a batch here on the loop or in the pool, then settle it (:meth:`_settle`)."""
        requests = [job.request for job in batch]
        stages = Stages()
        started = time.perf_counter_ns()
        try:
            if on_loop:
                outcomes, fast = run(requests, stages)
            else:
                outcomes, fast = await asyncio.get_running_loop().run_in_executor(self.executor, run, requests, stages)
        except Exception as exc:  # the runner answers per request; this is the pool itself failing
            outcomes, fast = [exc] * len(batch), 0
        except BaseException:  # the worker cancelled (the loop closing) while the batch ran
            self._release(batch)
            raise
        self._settle(batch, outcomes, stages, started, fast=fast, on_loop=on_loop)

    def _settle(
        self, batch: list[Job], outcomes: list[Outcome], stages: Stages, started: int, *, fast: int, on_loop: bool
    ) -> None:
        """A batch ran: its metrics, each caller's answer (or error), and what its jobs held returned."""
        try:
            self._observe(batch, stages, started, fast=fast, on_loop=on_loop)
            for job, outcome in zip(batch, outcomes, strict=True):
                if job.future.done():  # its caller stopped waiting while it ran
                    continue
                if isinstance(outcome, Exception):
                    job.future.set_exception(outcome)
                else:
                    job.future.set_result(outcome)
        finally:
            self._release(batch)

    @staticmethod
    def _release(batch: list[Job]) -> None:
        """The batch's work is over (or its worker was cancelled): what its jobs held goes back."""
        for job in batch:
            if job.held is not None:
                job.held.release()

    def _take(self, limit: int, lane: deque[Job] | None = None) -> list[Job]:
        waiting = self._waiting if lane is None else lane
        batch: list[Job] = []
        while waiting and len(batch) < limit:
            job = waiting.popleft()
            if not job.future.done():
                batch.append(job)
            elif job.held is not None:  # its caller gave up before any work began
                job.held.release()
        return batch


def _settle(arrival: asyncio.Future[bool]) -> None:
    """A gathering worker's wait ran out: no request arrived in time."""
    if not arrival.done():
        arrival.set_result(False)
