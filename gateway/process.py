"""One gateway process: its rooms composed, started and closed in order.

Each concern builds, starts and stops its own collaborators in a room (``gateway.rooms``):
observability, state, runtimes, models, fleet, routing, sync, admission, traffic, records,
quality, drift, write-back, jobs and usage.
This module builds the rooms in the order their collaborators need each other, lays out the
``Services`` the protocol adapters and routes are handed, and keeps the order of the start
(lease, first sync, warm-up, ready) and of the close. A new capability adds a room there, and
here a field of ``Rooms`` and its place in each of the three orders (build, start, close).
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import anyio.to_thread

from gateway.admission.gate import Gate
from gateway.dataplane import frozen, heap
from gateway.dataplane.cache import ModelCache
from gateway.dataplane.predictor import InferenceService
from gateway.dataplane.priming import Primer
from gateway.dataplane.streaming import Streams
from gateway.drift.monitor import DriftMonitor
from gateway.errors import NotReady
from gateway.fleet.drain import Drain
from gateway.fleet.membership import Membership
from gateway.fleet.warming import StartPlan
from gateway.jobs.service import JobService
from gateway.metrics import UNKNOWN, GatewayMetrics
from gateway.observability.context import current
from gateway.observability.logs import AccessLog
from gateway.observability.records.record import Exchange
from gateway.observability.records.recorder import Recorder
from gateway.observability.tracing import Tracing
from gateway.quality.capture import Answered, PredictionKeeper
from gateway.quality.feedback import FeedbackService
from gateway.quality.monitor import QualityMonitor
from gateway.rooms.admission import AdmissionRoom
from gateway.rooms.drift import DriftRoom
from gateway.rooms.fleet import FleetRoom
from gateway.rooms.jobs import JobsRoom
from gateway.rooms.models import ModelsRoom
from gateway.rooms.observability import ObservabilityRoom
from gateway.rooms.quality import QualityRoom
from gateway.rooms.records import RecordsRoom
from gateway.rooms.routing import RoutingRoom
from gateway.rooms.runtimes import RuntimesRoom
from gateway.rooms.state import StateRoom
from gateway.rooms.sync import SyncRoom
from gateway.rooms.traffic import TrafficRoom
from gateway.rooms.usage import UsageRoom
from gateway.rooms.writeback import WritebackRoom
from gateway.routing.catalog import Catalog, Resolved
from gateway.routing.counts import TrafficCounts
from gateway.routing.guard import Guard, failure_of
from gateway.routing.inventory import Inventory
from gateway.routing.reconciler import Reconciler
from gateway.routing.shadow import ShadowQueue
from gateway.routing.traffic import TrafficSplit
from gateway.routing.traffic_report import TrafficReport
from gateway.runtimes.placement import Placer
from gateway.settings import GatewaySettings
from registry_sync.artifacts import ArtifactStore
from registry_sync.errors import RegistryError
from registry_sync.fleet import DRAINING, READY, FleetStore
from registry_sync.lease import Lease
from registry_sync.poller import Poller
from registry_sync.registry import RegistryReader
from registry_sync.repository import StateStore
from registry_sync.usage import UsageStore

log = logging.getLogger(__name__)

_DEFAULT_GC_THRESHOLDS = gc.get_threshold()
_SERVING_GC_THRESHOLDS = (50_000, 50, 100)


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    reason: str | None
    role: str
    leader: bool


@dataclass(frozen=True, slots=True)
class Rooms:
    """The rooms of one process, in the order they are built."""

    observability: ObservabilityRoom
    state: StateRoom
    runtimes: RuntimesRoom
    models: ModelsRoom
    fleet: FleetRoom
    routing: RoutingRoom
    sync: SyncRoom
    admission: AdmissionRoom
    traffic: TrafficRoom
    records: RecordsRoom
    quality: QualityRoom
    drift: DriftRoom
    writeback: WritebackRoom
    jobs: JobsRoom
    usage: UsageRoom

    @classmethod
    def build(cls, settings: GatewaySettings, *, reader: RegistryReader | None) -> Rooms:
        actor = f"{socket.gethostname()}:{os.getpid()}"
        if settings.tune_allocator:
            heap.tune()  # before the loader threads allocate: arenas are per thread

        async def look_again(name: str) -> None:  # a catalog miss; the sync room is built below
            await sync.look_again(name)

        seen = ObservabilityRoom.build(settings)
        state = StateRoom.build(settings, reader=reader, look_again=look_again)
        runtimes = RuntimesRoom.build(settings, seen.tracing)
        models = ModelsRoom.build(settings, state=state, runtimes=runtimes, seen=seen, actor=actor)
        fleet = FleetRoom.build(settings, state=state, cache=models.cache)
        routing = RoutingRoom.build(
            settings, state=state, runtimes=runtimes, models=models, fleet=fleet, seen=seen, actor=actor
        )
        sync = SyncRoom.build(
            settings, state=state, models=models, reconciler=routing.reconciler, seen=seen, actor=actor
        )
        admission = AdmissionRoom.build(settings, state.engine, seen.metrics, known_model=state.catalog.knows)
        usage = UsageRoom.build(settings, UsageStore(state.engine), seen.metrics, quotas=admission.gate.quotas)
        log.info(
            "following the MLflow registry %s; role %s; state %s; artifacts in %s; warm aliases %s",
            state.source.uri,
            settings.role,
            state.engine.url.render_as_string(hide_password=True),
            settings.artifact_cache_dir,
            ", ".join(settings.warm_aliases) or "none",
        )
        if (warning := state.source.default_warning()) is not None:
            log.warning("%s", warning)
        records = RecordsRoom.build(settings, seen.metrics, reader=state.reader)
        traffic = TrafficRoom.build(settings, state=state, routing=routing, seen=seen, records=records, actor=actor)
        quality = QualityRoom.build(
            settings, state=state, models=models, routing=routing, traffic=traffic, records=records, seen=seen
        )
        drift = DriftRoom.build(settings, state=state, models=models, sync=sync, seen=seen, actor=actor)
        writeback = WritebackRoom.build(settings, state=state, sync=sync, seen=seen, drift=drift)
        jobs = JobsRoom.build(settings, state=state, models=models, routing=routing, seen=seen, actor=actor)
        # When the drain's delay is over, uvicorn waits --graceful-timeout for requests in flight:
        # open streams get their end event now, so their clients reconnect elsewhere at once.
        fleet.drain.on_stop(models.streams.ending)
        return cls(
            seen,
            state,
            runtimes,
            models,
            fleet,
            routing,
            sync,
            admission,
            traffic,
            records,
            quality,
            drift,
            writeback,
            jobs,
            usage,
        )


@dataclass(eq=False)
class Services:
    """What the protocol adapters and routes are handed: the collaborators of one process
    (each built by its room), its start-up state, and the seams they call."""

    settings: GatewaySettings
    reader: RegistryReader
    metrics: GatewayMetrics
    store: StateStore
    catalog: Catalog
    artifacts: ArtifactStore
    cache: ModelCache
    inference: InferenceService
    inventory: Inventory
    poller: Poller
    reconciler: Reconciler
    executor: ThreadPoolExecutor
    loaders: ThreadPoolExecutor
    placer: Placer
    lease: Lease
    gate: Gate
    split: TrafficSplit
    guard: Guard
    shadows: ShadowQueue
    counts: TrafficCounts
    traffic_report: TrafficReport
    tracing: Tracing
    access_log: AccessLog | None
    records: Recorder | None  # GATEWAY_RECORDS_SINK's; None when unset
    membership: Membership
    drain: Drain
    fleet: FleetStore
    streams: Streams  # predict_stream's open streams (gateway.dataplane.streaming)
    feedback: FeedbackService  # POST /feedback (gateway.quality.feedback)
    quality: QualityMonitor  # live quality per version and arm, read at an interval
    keeper: PredictionKeeper | None  # answers kept for labels; None: GATEWAY_FEEDBACK_SAMPLE=0
    drift: DriftMonitor  # the fleet's drift figures per version, read at an interval
    jobs: JobService  # asynchronous predictions and batch jobs (gateway.jobs)
    rooms: Rooms = field(repr=False)
    ready: bool = False
    serving: bool = False  # requests are answered: the catalog is read, though warming may go on
    stage: str = "starting"  # what startup is doing, for /health/ready
    held_until_ready: int = 0  # requests waiting for startup to finish
    primer: Primer | None = None  # the registry's libraries, imported once ready (serving processes)
    _starting: asyncio.Task[None] | None = field(default=None, repr=False)
    _priming: asyncio.Task[None] | None = field(default=None, repr=False)
    _reaping: asyncio.Task[None] | None = field(default=None, repr=False)

    @classmethod
    def build(cls, settings: GatewaySettings, *, reader: RegistryReader | None = None) -> Services:
        rooms = Rooms.build(settings, reader=reader)
        state, models, routing, traffic = rooms.state, rooms.models, rooms.routing, rooms.traffic
        return cls(
            settings=settings,
            reader=state.reader,
            metrics=rooms.observability.metrics,
            store=state.store,
            catalog=state.catalog,
            artifacts=state.artifacts,
            cache=models.cache,
            inference=routing.inference,
            inventory=routing.inventory,
            poller=rooms.sync.poller,
            reconciler=routing.reconciler,
            executor=models.executor,
            loaders=models.loaders,
            placer=rooms.runtimes.placer,
            lease=state.lease,
            gate=rooms.admission.gate,
            split=routing.split,
            guard=traffic.guard,
            shadows=traffic.shadows,
            counts=traffic.counts,
            traffic_report=traffic.report,
            tracing=rooms.observability.tracing,
            access_log=rooms.records.access_log,
            records=rooms.records.records,
            membership=rooms.fleet.membership,
            drain=rooms.fleet.drain,
            fleet=rooms.fleet.fleet,
            streams=models.streams,
            feedback=rooms.quality.feedback,
            quality=rooms.quality.monitor,
            keeper=rooms.quality.keeper,
            drift=rooms.drift.monitor,
            jobs=rooms.jobs.service,
            rooms=rooms,
            primer=routing.primer,
        )

    def predict_finished(
        self,
        served: Resolved | None,
        *,
        status: int,
        started: float,
        error: BaseException | None = None,
        exchange: Exchange | None = None,
    ) -> None:
        """One predict request ended, whatever its protocol: counted by what served it (a
        canary unloaded meanwhile is answered by its default version: pass that one), and
        a default-route answer shown to the canary guard. ``served`` None: it failed before
        a version was chosen. ``error``: what it raised, which tells the guard a model's
        exception from a caller's mistake (both answer 400). ``exchange``: an answered request's
        body and answer, for the inference records (sampled here, written off the request path)."""
        seconds = time.perf_counter() - started
        model, version = (served.name, str(served.version)) if served is not None else (UNKNOWN, UNKNOWN)
        self.metrics.request_finished(model=model, version=version, status=status, seconds=seconds)
        if served is not None:
            self.guard.observe(served, failure=failure_of(status, error), seconds=seconds)
            request = current()
            self.rooms.usage.finished(served, status, request)
            if request is not None:  # for the access log and the request's span
                request.model, request.version, request.arm = served.name, served.version, served.route
            if (self.records is not None or self.rooms.records.traces is not None) and exchange is not None:
                self.rooms.records.record(
                    served,
                    exchange,
                    status=status,
                    seconds=seconds,
                    request=request,
                    loaded=self.cache.peek(served.id),
                    error=error,
                )
            if (
                self.keeper is not None
                and exchange is not None
                and request is not None
                and status < 400
                and exchange.protocol == "mlflow"
                and exchange.answer_json is None  # a stream's answer is its chunks: no row to label
            ):
                self.rooms.quality.keep(
                    Answered(request.request_id, served.id, served.route or "named", exchange.response, request.time)
                )
            if exchange is not None and error is None:
                self.rooms.drift.offer(served, exchange, status)  # a draw, then an append: never raises

    @functools.cached_property
    def route_key_header(self) -> bytes:
        """The route key's header name as ASGI gives it (lower case bytes)."""
        return self.settings.route_key_header.lower().encode("latin-1")

    @functools.cached_property
    def replica_header(self) -> bytes:
        """This process's replica id as the X-Gateway-Replica header carries it."""
        return self.settings.replica.encode("latin-1", "replace")

    @property
    def serves_models(self) -> bool:
        return self.settings.serves_models

    async def start(self) -> None:
        """Lead the sync if the lease is free (then sync once), else wait for the leader's first
        pass; warm what the database says is served; then take traffic."""
        rooms = self.rooms
        rooms.records.start()
        rooms.admission.start()
        await rooms.fleet.start()  # in the fleet view while it starts
        self.stage = "taking the sync lease"
        leading = await self.poller.campaign()
        self.poller.keep_campaigning()  # renewed from now on, however long the warm-up takes
        synced = False
        if leading:
            self.stage = "syncing with the registry"
            synced = await rooms.sync.sync_while_starting("startup")
        elif self.serves_models:
            self.stage = "waiting for the sync leader's first pass over the registry"
            await rooms.sync.first_pass(rooms.state)
        if self.serves_models:
            self.stage = "warming what this replica serves"
            rule = await rooms.fleet.warm_rule(self.settings)
            plan = await self.reconciler.plan_start(rule, await self.membership.history())
            # The catalog is read: requests are answered from here on, what is warm at once and
            # the rest as a cold load would be, while /health/ready stays 503 until the warm set
            # is warm (a balancer sends nothing here meanwhile; a lone serve is not kept idle).
            self.serving = True
            await self.reconciler.warm_start()
            self.membership.warm_rule = f"{self.reconciler.rule.describe()}; at start, {plan.summary}"
            rooms.traffic.start()
            rooms.quality.start()
            rooms.writeback.start_publishing()
            await rooms.usage.start()  # the quotas read, then this process's usage counted and flushed
            if (idle := self.settings.env_worker_idle_seconds) > 0:
                self._reaping = asyncio.create_task(rooms.models.reap_idle_workers(idle), name="idle workers")
        if synced:
            # What moved while the first pass read and the warm-up ran is applied before ready,
            # not a poll interval later (a pass after the first reads only what changed: cheap).
            self.stage = "syncing what moved during start-up"
            await rooms.sync.sync_while_starting("after startup")
            if self.serves_models:
                await self.catalog.refresh()
                await self.reconciler.reconcile(wait=True)
        self.poller.start()
        rooms.writeback.start_writing()
        rooms.drift.start()  # the leader's references; every process's drift figures, sampled and read
        rooms.jobs.start()  # claims chunks once the catalog is read (a serving process), keeps the queue tidy
        # Everything alive now (the imported libraries, the warm models) lives as long as the
        # process: keep it out of the cyclic GC's reach, or each full collection walks millions
        # of objects and stalls every request for 100-400 ms (measured: bench/README.md).
        frozen.freeze()
        # Requests allocate many short-lived containers: with the default 700, a young
        # collection ran every request or two; 50,000 made 32 connections ~7% faster (bench).
        gc.set_threshold(*_SERVING_GC_THRESHOLDS)
        self.ready = True
        self.stage = "ready"
        if not self.drain.draining:
            self.membership.set_state(READY)
        if self.serves_models and self.primer is not None:
            self._priming = asyncio.create_task(self.primer.run(), name="priming imports")

    @property
    def start_plan(self) -> StartPlan | None:
        """What this process warmed at start, and why (None: still starting, or a sync-only process)."""
        return self.reconciler.plan

    def begin_drain(self) -> None:
        """SIGTERM (gateway.fleet.drain): not ready from now on, and said so to the fleet."""
        self.membership.set_state(DRAINING)

    def start_soon(self) -> None:
        """Start in the background: the server answers /health/live (and /health/ready 503,
        saying why) while the lease, the first sync and the warm-up go on."""

        async def starting() -> None:
            try:
                await self.start()
            except Exception as exc:
                self.stage = f"startup failed: {type(exc).__name__}: {exc}"
                log.exception("startup failed")

        self._starting = asyncio.create_task(starting(), name="startup")

    async def until_ready(self) -> None:
        """Hold a request that reached a process still starting (a new replica, a worker uvicorn
        just restarted) until its catalog is read, rather than answer from a half-read one; it is
        served while the warm set warms (``serving``). Past GATEWAY_REGISTRY_TIMEOUT_SECONDS, or
        when stopping, NotReady (503, Retry-After)."""
        deadline = time.monotonic() + self.settings.registry_timeout_seconds
        self.held_until_ready += 1
        try:
            while not (self.ready or self.serving):
                if self.stage == "shutting down" or time.monotonic() >= deadline:
                    raise NotReady(self.stage)
                await asyncio.sleep(0.05)
        finally:
            self.held_until_ready -= 1

    def sandbox_summary(self) -> str | None:
        """What confines isolated workers on this host, in a line (gateway.runtimes.sandbox)."""
        return self.rooms.runtimes.sandbox_summary()

    def worker_memory(self) -> tuple[int, int]:
        """Isolated worker processes running, and their own memory (gateway.runtimes.isolated)."""
        return self.rooms.runtimes.worker_memory()

    async def readiness(self) -> Readiness:
        """Ready once started and warm; a sync-only process also needs its database."""
        role, leader = self.settings.role, self.poller.leading
        if self.drain.draining:
            return Readiness(False, "draining: stopping soon, finishing the requests sent here", role, leader)
        if not self.ready:
            reason = self.stage
            if self.stage.startswith("warming") and (waiting := self.reconciler.unwarmed()):
                reason = f"warming {', '.join(waiting)}"
            return Readiness(False, reason, role, leader)
        if not self.serves_models:
            try:
                await anyio.to_thread.run_sync(self.store.generation)
            except RegistryError as exc:
                return Readiness(False, str(exc), role, leader)
        return Readiness(True, None, role, leader)

    async def close(self) -> None:
        """Every room stopped, in the order that lets each finish what the next still needs:
        nothing new comes in (keys, fleet, sync, reconciler), then traffic settles, then the
        data plane unloads, and what records and traces it all goes last."""
        self.ready = self.serving = False
        self.streams.end_all()  # streams still open (no drain ran) end with an event, not a cut
        if self._reaping is not None:
            self._reaping.cancel()
        self.stage = "shutting down"
        frozen.forget()  # what this process kept may be garbage now (tests start many gateways)
        gc.set_threshold(*_DEFAULT_GC_THRESHOLDS)
        if self._starting is not None:
            self._starting.cancel()
            await asyncio.gather(self._starting, return_exceptions=True)
        if self._priming is not None:
            self._priming.cancel()  # an import under way in its thread finishes there, unwaited
            await asyncio.gather(self._priming, return_exceptions=True)
        rooms = self.rooms
        await rooms.admission.stop()  # the keys are no longer followed
        await rooms.fleet.stop()  # reported stopped; its replica's history stays
        await rooms.writeback.stop()  # the leader's write-back, this process's figures
        await rooms.drift.stop()  # the leader's references (a predict under way finishes unwaited); what was
        # sampled is binned and the last windows published
        await rooms.sync.stop()
        await rooms.routing.stop()  # the reconciler
        await rooms.jobs.stop()  # chunks held here go back to the queue before the queues close
        await rooms.quality.stop()  # the monitor, then the answers kept for labels still queued
        await rooms.traffic.stop()  # counts, shadows, the guard's last rollbacks
        await rooms.routing.close()  # the inference service's queues
        await rooms.usage.stop()  # the last requests' usage flushed
        await rooms.models.stop()  # streams, then every loaded version
        await rooms.runtimes.stop()  # every worker process
        await rooms.admission.close()  # the limiter's Redis connection
        rooms.models.close()  # the thread pools, unwaited
        rooms.state.close()  # the state database's engine
        await rooms.records.close()  # the access log, then what records it can write within its timeout
        await rooms.observability.close()  # exports the spans still buffered
