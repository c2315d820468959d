"""The collaborators of one gateway process, built from settings, started and closed in order."""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import os
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import anyio.to_thread
import mlflow.tracing as mlflow_tracing
from sqlalchemy import Engine

from gateway.admission.auth import KeyRing, admin_token_key
from gateway.admission.gate import Gate
from gateway.admission.limits import Limiter, LoadBudget, RedisLimits
from gateway.dataplane import frozen, heap
from gateway.dataplane.cache import LoadFn, ModelCache, Reserve
from gateway.dataplane.inference import check_fast_path
from gateway.dataplane.loader import LoadedModel, ModelLoader
from gateway.dataplane.policy import LoadingPolicy
from gateway.dataplane.prediction_cache import make_cache
from gateway.dataplane.predictor import BatchPolicy, InferenceService
from gateway.dataplane.priming import Primer
from gateway.dataplane.streaming import Streams
from gateway.errors import NotReady
from gateway.fleet.drain import Drain
from gateway.fleet.membership import Membership
from gateway.fleet.warming import StartPlan, WarmRule
from gateway.metrics import UNKNOWN, GatewayMetrics
from gateway.observability.context import RequestContext, current, new_request_id
from gateway.observability.logs import AccessLog
from gateway.observability.records.record import Exchange, InferenceRecord
from gateway.observability.records.recorder import Recorder, recorder_for
from gateway.observability.tracing import Tracing, tracing_for
from gateway.registry_source import RegistrySource
from gateway.routing.catalog import Catalog, Resolved
from gateway.routing.counts import TrafficCounts
from gateway.routing.guard import Guard, GuardLimits, failure_of
from gateway.routing.inventory import Inventory
from gateway.routing.reconciler import Reconciler
from gateway.routing.shadow import ShadowQueue
from gateway.routing.traffic import TrafficSplit
from gateway.routing.traffic_report import TrafficReport
from gateway.runtimes.environments import BuildOptions, EnvironmentStore
from gateway.runtimes.placement import EnvironmentPolicy, Placer
from gateway.runtimes.sandbox import SandboxPolicy, check_host
from gateway.runtimes.sandbox import summary as sandbox_summary
from gateway.runtimes.worker import devices
from gateway.settings import GatewaySettings
from gateway.wire.mlflow_scoring import BodyLimits
from registry_sync.artifacts import ArtifactStore
from registry_sync.database import check_schema, is_sqlite, make_engine
from registry_sync.errors import RegistryError, RegistryUnavailable
from registry_sync.fleet import DRAINING, READY, FleetStore
from registry_sync.identity import VersionId
from registry_sync.keys import KeyStore
from registry_sync.lease import Lease, lease_timing, new_holder_id
from registry_sync.poller import Poller
from registry_sync.registry import RegistryReader
from registry_sync.repository import StateStore
from registry_sync.sync import Synchronizer, SyncReport

log = logging.getLogger(__name__)

_DEFAULT_GC_THRESHOLDS = gc.get_threshold()
_SERVING_GC_THRESHOLDS = (50_000, 50, 100)


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    reason: str | None
    role: str
    leader: bool


@dataclass(eq=False)
class Services:
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
        actor = f"{socket.gethostname()}:{os.getpid()}"
        chosen = reader is not None
        reader = reader or RegistryReader()
        source = RegistrySource.of(reader, chosen=chosen)
        if settings.tune_allocator:
            heap.tune()  # before the loader threads allocate: arenas are per thread
        if not settings.mlflow_traces:
            mlflow_tracing.disable()  # GATEWAY_MLFLOW_TRACES: no trace per call to the registry's server
        metrics = GatewayMetrics()
        metrics.memory_budget.set(settings.max_memory_bytes)
        tracing = tracing_for(settings.tracing, spans=settings.tracing_spans)
        engine = make_engine(settings.database_url)
        check_schema(engine, auto_upgrade=is_sqlite(settings.database_url))
        store = StateStore(engine)
        store.claim(reader.registry_uri)
        artifacts = ArtifactStore(
            reader,
            settings.artifact_cache_dir,
            max_bytes=settings.artifact_cache_max_bytes,
            allowed_uris=settings.allowed_artifact_uris,
        )
        ttl, renew = lease_timing(
            poll_interval_seconds=settings.poll_interval_seconds, lease_seconds=settings.lease_seconds
        )
        lease = Lease(engine, ttl_seconds=ttl, holder=new_holder_id())
        loaders = ThreadPoolExecutor(max_workers=settings.load_threads, thread_name_prefix="load")
        placer = placer_for(settings, tracing)
        loader = ModelLoader(
            artifacts,
            store,
            actor=f"gateway@{actor}",
            policy=LoadingPolicy.of(settings.allowed_flavors, allow_pickle=settings.allow_pickle),
            body_limits=BodyLimits(settings.max_body_rows, settings.max_decoded_bytes),
            placer=placer,
        )
        cache = ModelCache(
            _checked(loader, tracing),
            max_models=settings.max_loaded_models,
            max_bytes=settings.max_memory_bytes,
            metrics=metrics,
            executor=loaders,
            load_retry_seconds=settings.load_retry_seconds,
        )
        artifacts.in_use = cache.digests
        executor = ThreadPoolExecutor(max_workers=settings.inference_threads, thread_name_prefix="predict")

        async def look_again(name: str) -> None:  # a miss: maybe registered a moment ago
            # here if this process leads, else the leader looks (one reader of MLflow)
            wait = settings.registry_timeout_seconds
            report = await poller.run([name], reason="miss", timeout=wait)
            if report is None:
                raise RegistryUnavailable(f"no sync leader looked '{name}' up within {wait:g} s")
            if report.error is not None:
                raise RegistryUnavailable(report.error)

        catalog = Catalog(store, warm_aliases=settings.warm_aliases, look_again=look_again)
        fleet = FleetStore(engine)
        # Its member id is the one it campaigns for the sync lease with (the fleet view names the leader).
        membership = Membership(
            fleet,
            cache if settings.serves_models else None,
            member=lease.holder,
            replica=settings.replica,
            role=settings.role,
            heartbeat_seconds=settings.heartbeat_seconds,
            recent_seconds=settings.warm_recent_seconds,
            served_aliases=catalog.served_aliases,
        )
        load_budget = (
            LoadBudget(settings.max_loads_per_minute, metrics) if settings.max_loads_per_minute is not None else None
        )

        def served_models() -> set[str]:
            return {key.name for key in cache.keys()} | {route.name for route in catalog.warm_routes()}

        synchronizer = Synchronizer(
            reader,
            store,
            artifacts,
            verify_interval_seconds=settings.verify_interval_seconds,
            actor=f"sync@{actor}",
            fence=lease,
            loaded=cache.keys,  # their bytes are checked too, like those routes point at
            watched=served_models,  # read every pass: their tags matter now
            full_read_interval_seconds=settings.full_sync_interval_seconds,
        )

        split = TrafficSplit(catalog, cache)
        reconciler = Reconciler(
            catalog,
            cache,
            store,
            split=split,
            executor=executor,
            metrics=metrics,
            follow_interval_seconds=settings.follow_interval_seconds,
            actor=f"gateway@{actor}",
            tracing=tracing,
            membership=membership,
            load_budget=load_budget,
        )

        def on_synced(report: SyncReport) -> None:
            metrics.sync_finished(
                outcome="success" if report.ok else "failure", seconds=report.seconds, refused=report.refused
            )
            reconciler.poke()

        poller = Poller(
            synchronizer,
            interval_seconds=settings.poll_interval_seconds,
            on_synced=on_synced,
            lease=lease,
            store=store,
            campaign=settings.role != "gateway",  # a gateway replica never polls MLflow
            renew_seconds=renew,
            requests_interval_seconds=settings.follow_interval_seconds,
            actor=f"{settings.role}@{actor}",
            span=tracing.span,
        )
        metrics.follow_leadership(lambda: poller.leading)
        metrics.follow_downloads(lambda: artifacts.downloaded_bytes)
        inference = InferenceService(
            catalog,
            cache,
            default_alias=settings.default_alias,
            predict_timeout_seconds=settings.predict_timeout_seconds,
            executor=executor,
            metrics=metrics,
            batching=BatchPolicy(
                max_batch=settings.batch_max_size,
                max_wait=settings.batch_max_wait_ms / 1000,
                max_queue=settings.max_queue,
                workers=settings.inference_threads,
                inline_cpu=settings.inline_predict_ms / 1000,
            ),
            answers=make_cache(
                settings.prediction_cache,
                max_bytes=int(settings.prediction_cache_max_mb * 2**20),
                ttl_seconds=settings.prediction_cache_ttl_seconds,
                metrics=metrics,
            ),
            load_budget=load_budget,
            split=split,
            tracing=tracing,
        )
        gate = _gate(settings, engine, metrics, known_model=catalog.knows)
        limits = GuardLimits(
            max_error_rate=settings.canary_max_error_rate,
            max_latency_ratio=settings.canary_max_latency_ratio,
            min_latency_delta=settings.canary_min_latency_delta_ms / 1000,
            min_requests=settings.canary_min_requests,
            count_client_errors=settings.canary_count_client_errors,
        )
        guard = Guard(split, store, metrics, limits=limits, actor=f"gateway@{actor}")
        shadows = ShadowQueue(
            inference,
            split,
            metrics,
            size=settings.shadow_queue_size,
            concurrency=settings.shadow_concurrency,
            tolerance=settings.shadow_tolerance,
            pause_after_failures=settings.shadow_pause_after_failures,
        )
        # This process's counts, published for /traffic's sum over replicas: its id is the one
        # it campaigns for the sync lease with.
        counts = TrafficCounts(
            catalog, guard, shadows, store, replica=lease.holder, interval_seconds=settings.follow_interval_seconds
        )
        log.info(
            "following the MLflow registry %s; role %s; state %s; artifacts in %s; warm aliases %s",
            source.uri,
            settings.role,
            engine.url.render_as_string(hide_password=True),
            settings.artifact_cache_dir,
            ", ".join(settings.warm_aliases) or "none",
        )
        if (warning := source.default_warning()) is not None:
            log.warning("%s", warning)
        services = cls(
            settings=settings,
            reader=reader,
            metrics=metrics,
            store=store,
            catalog=catalog,
            artifacts=artifacts,
            cache=cache,
            inference=inference,
            inventory=Inventory(
                catalog,
                cache,
                artifacts,
                inference,
                source=source,
                sync_status=store.sync_status,
                placements=placer.placement,
                alias_failure=reconciler.failing,
                refused_here=loader.refused_here,
            ),
            poller=poller,
            reconciler=reconciler,
            executor=executor,
            loaders=loaders,
            placer=placer,
            lease=lease,
            gate=gate,
            split=split,
            guard=guard,
            shadows=shadows,
            counts=counts,
            traffic_report=TrafficReport(catalog, split, guard, inference, metrics, counts, store, shadows),
            tracing=tracing,
            access_log=AccessLog() if settings.access_log else None,
            records=recorder_for(settings, metrics),
            membership=membership,
            drain=Drain(settings.drain_seconds, on_drain=lambda: services.begin_drain()),
            fleet=fleet,
            streams=Streams(
                cache,
                metrics=metrics,
                max_streams=settings.max_streams,
                threads=settings.stream_threads,
                idle_seconds=settings.stream_idle_timeout_seconds,
                load_budget=load_budget,
            ),
        )
        services.primer = Primer(services.priming_versions, services.inventory.mlmodel)
        # When the drain's delay is over, uvicorn waits --graceful-timeout for requests in flight:
        # open streams get their end event now, so their clients reconnect elsewhere at once.
        services.drain.on_stop(services.streams.ending)
        return services

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
            if request is not None:  # for the access log and the request's span
                request.model, request.version, request.arm = served.name, served.version, served.route
            if self.records is not None and exchange is not None:
                self._record(served, exchange, status, seconds, request)

    def _record(
        self, served: Resolved, exchange: Exchange, status: int, seconds: float, request: RequestContext | None
    ) -> None:
        assert self.records is not None
        model = self.cache.peek(served.id)
        if not self.records.sampled(model.records_sample if model is not None else None):
            return
        record = InferenceRecord(
            model=served.name,
            version=served.version,
            alias=served.alias,
            arm=served.route,
            request_id=request.request_id if request is not None else new_request_id(),
            route_key=exchange.route_key,
            protocol=exchange.protocol,
            media_type=exchange.media_type,
            request=exchange.request,
            response=exchange.answer_json(exchange.response) if exchange.answer_json else exchange.response,
            status=status,
            latency_seconds=seconds,
            time=request.time if request is not None else time.time() - seconds,
            trace_id=request.trace_id if request is not None else None,
        )
        self.records.offer(record)

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
        if self.access_log is not None:
            self.access_log.start()
        if self.records is not None:
            self.records.start()
        if self.gate.keys is not None:
            self.gate.keys.start()  # keys were read at build; from now on, followed
        await self.membership.report()  # in the fleet view while it starts
        self.membership.start()
        self.stage = "taking the sync lease"
        leading = await self.poller.campaign()
        self.poller.keep_campaigning()  # renewed from now on, however long the warm-up takes
        synced = False
        if leading:
            self.stage = "syncing with the registry"
            synced = await self._sync_while_starting("startup")
        elif self.serves_models:
            await self._first_pass()
        if self.serves_models:
            self.stage = "warming what this replica serves"
            plan = await self.reconciler.plan_start(await self._warm_rule(), await self.membership.history())
            # The catalog is read: requests are answered from here on, what is warm at once and
            # the rest as a cold load would be, while /health/ready stays 503 until the warm set
            # is warm (a balancer sends nothing here meanwhile; a lone serve is not kept idle).
            self.serving = True
            await self.reconciler.warm_start()
            self.membership.warm_rule = f"{self.reconciler.rule.describe()}; at start, {plan.summary}"
            self.shadows.start()
            self.counts.start()
            if self.settings.env_worker_idle_seconds > 0:
                self._reaping = asyncio.create_task(self._reap_idle_workers(), name="idle workers")
        if synced:
            # What moved while the first pass read and the warm-up ran is applied before ready,
            # not a poll interval later (a pass after the first reads only what changed: cheap).
            self.stage = "syncing what moved during start-up"
            await self._sync_while_starting("after startup")
            if self.serves_models:
                await self.catalog.refresh()
                await self.reconciler.reconcile(wait=True)
        self.poller.start()
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

    def priming_versions(self) -> list[tuple[str, int]]:
        """What the primer reads the flavors of: each model's default version (the default alias,
        else latest) and each warm alias's target."""
        default = self.settings.default_alias
        chosen: list[tuple[str, int]] = []
        for name in self.catalog.model_names():
            model = self.catalog.model(name)
            version = model.registry_aliases.get(default, model.latest_ready)
            wanted = [version] + [
                model.registry_aliases[a] for a in sorted(self.catalog.warm_aliases & set(model.registry_aliases))
            ]
            chosen += [(name, v) for v in dict.fromkeys(wanted) if v is not None and v in model.versions]
        return chosen

    async def _warm_rule(self) -> WarmRule:
        """GATEWAY_WARM_START's rule; ``auto`` asks the fleet whether this process is alone."""
        setting = self.settings.warm_start
        others: list[str] = []
        if setting == "auto" and self.settings.role == "all":
            others = await self.membership.other_replicas()
        return WarmRule.choose(
            setting, role=self.settings.role, others=others, recent_seconds=self.settings.warm_recent_seconds
        )

    @property
    def start_plan(self) -> StartPlan | None:
        """What this process warmed at start, and why (None: still starting, or a sync-only process)."""
        return self.reconciler.plan

    def begin_drain(self) -> None:
        """SIGTERM (gateway.fleet.drain): not ready from now on, and said so to the fleet."""
        self.membership.set_state(DRAINING)

    async def _sync_while_starting(self, reason: str) -> bool:
        """One pass, waited for up to three registry timeouts (then it goes on behind); True
        when it finished well."""
        running = self.poller.sync_soon(None, reason=reason)
        try:
            async with asyncio.timeout(self.settings.registry_timeout_seconds * 3):
                report = await asyncio.shield(running)  # on timeout it goes on in the background
        except TimeoutError:
            log.warning("%s sync still running; serving from the state database meanwhile", reason)
            return False
        if not report.ok:
            log.warning("%s sync failed (serving from the state database): %s", reason, report.error)
        return report.ok

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

    async def _first_pass(self) -> None:
        """A state database no sync ever wrote has nothing to serve yet: wait for the leader."""
        self.stage = "waiting for the sync leader's first pass over the registry"
        logged = False
        while True:
            try:
                status = await anyio.to_thread.run_sync(self.store.sync_status)
                if status.last_attempt_at is not None:
                    return
            except RegistryError as exc:
                log.warning("state database unavailable while waiting for the first sync: %s", exc)
            if not logged:
                log.info("waiting for the sync leader's first pass (no sync has written the state database)")
                logged = True
            await asyncio.sleep(self.settings.follow_interval_seconds)

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
        isolated = self.placer.isolated
        return sandbox_summary(isolated.sandbox, isolated.sandbox_missing()) if isolated is not None else None

    def worker_memory(self) -> tuple[int, int]:
        """Isolated worker processes running, and their own memory (gateway.runtimes.isolated)."""
        isolated = self.placer.isolated
        return isolated.baseline_bytes() if isolated is not None else (0, 0)

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

    async def _reap_idle_workers(self) -> None:
        """Isolated versions idle for GATEWAY_ENV_WORKER_IDLE_SECONDS are unloaded (and their
        workers stop with their last version)."""
        idle = self.settings.env_worker_idle_seconds
        while True:
            await asyncio.sleep(min(30.0, max(idle / 4, 0.05)))
            self.cache.unload_idle(idle, which=lambda m: m.placement is not None and m.placement.runtime == "isolated")

    async def close(self) -> None:
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
        if self.gate.keys is not None:
            await self.gate.keys.stop()
        await self.membership.stop()  # reported stopped; its replica's history stays
        await self.poller.stop()
        await self.reconciler.stop()
        await self.counts.stop()
        await self.shadows.stop()
        await self.guard.settle()
        await self.inference.close()
        self.streams.close()
        await self.cache.close()
        await anyio.to_thread.run_sync(self.placer.close)  # stops every worker process
        await self.gate.limiter.close()
        # Predicts still running finish on their own; don't wait for them here.
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.loaders.shutdown(wait=False, cancel_futures=True)
        self.store.engine.dispose()
        if self.access_log is not None:
            self.access_log.close()
        if self.records is not None:
            await anyio.to_thread.run_sync(self.records.close)  # what it can write within its timeout
        await anyio.to_thread.run_sync(self.tracing.close)  # exports the spans still buffered


def _gate(
    settings: GatewaySettings, engine: Engine, metrics: GatewayMetrics, *, known_model: Callable[[str], bool]
) -> Gate:
    """The check before every request: the keys (read now, followed once started) and limits."""
    store = KeyStore(engine)
    keys = None
    if settings.auth == "keys":
        fixed = [admin_token_key(settings.admin_token.get_secret_value())] if settings.admin_token else []
        keys = KeyRing(store, follow_interval_seconds=settings.follow_interval_seconds, fixed=fixed)
        keys.load()
        if not keys.names():
            log.warning(
                "GATEWAY_AUTH=keys and no API key exists: every request but health and metrics answers 401; "
                "create one with 'registry-gateway keys create NAME --scopes ...'"
            )
    shared = None
    if settings.rate_limit_redis is not None:
        # Long enough for any request (a cold load, a slow predict): an entry outlives its
        # request only if its process died before giving it back.
        lease_seconds = 60 + settings.registry_timeout_seconds + settings.predict_timeout_seconds
        shared = RedisLimits(settings.rate_limit_redis, namespace=store.deployment_id(), lease_seconds=lease_seconds)
    return Gate(
        keys=keys,
        limiter=Limiter(metrics, shared=shared),
        metrics=metrics,
        probes_need_keys=settings.metrics_auth == "on",
        model_rate=settings.model_rate,
        model_concurrency=settings.model_concurrency,
        known_model=known_model,
    )


def environment_store(settings: GatewaySettings, tracing: Tracing | None = None) -> EnvironmentStore:
    """The environments of GATEWAY_ENV_DIR, built as the settings say."""
    return EnvironmentStore(
        settings.env_dir,
        BuildOptions(
            allow_sdist=settings.env_allow_sdist,
            allow_direct_references=settings.env_allow_direct_references,
            require_python=settings.env_require_python,
            timeout_seconds=settings.env_build_timeout_seconds,
            http_timeout_seconds=settings.env_http_timeout_seconds,
            max_concurrent=settings.env_max_concurrent_builds,
            max_bytes=int(settings.env_max_disk_mb * 2**20),
            compile_bytecode=settings.env_compile_bytecode,
        ),
        span=tracing.span if tracing is not None else None,
    )


def placer_for(settings: GatewaySettings, tracing: Tracing | None = None) -> Placer:
    """Where this process's versions run: here, or in workers on environments built with uv.
    A CUDA device GATEWAY_DEVICE names that this host lacks stops the process here
    (``devices.DeviceUnavailable``): only ``auto`` falls back to the CPU."""
    if settings.role != "sync":
        devices.require(settings.device, f"GATEWAY_DEVICE={settings.device}")
    policy = EnvironmentPolicy(manager=settings.env_manager, isolate=settings.env_isolate, match=settings.env_match)
    return Placer.build(
        policy,
        environment_store(settings, tracing),
        max_workers=settings.env_max_workers,
        processes=settings.env_processes,
        sharing=settings.env_worker_sharing,
        device=settings.device,
        sandbox=sandbox_policy(settings),
    )


def sandbox_policy(settings: GatewaySettings) -> SandboxPolicy:
    """Isolated workers' sandbox, as the settings say; GATEWAY_SANDBOX=required on a host that
    lacks a layer stops the start here (SandboxUnavailable)."""
    memory_mb = settings.max_memory_mb if settings.sandbox_memory_mb is None else settings.sandbox_memory_mb
    policy = SandboxPolicy(
        mode=settings.sandbox,
        root=settings.artifact_cache_dir / "sandboxes",  # hard links to blobs/: one file system
        env_pass=tuple(settings.env_pass),
        allow_network=settings.sandbox_allow_network,
        memory_bytes=int(memory_mb * 2**20),
        disk_bytes=int(settings.sandbox_disk_mb * 2**20),
        cpu_seconds=settings.sandbox_cpu_seconds,
        call_seconds=settings.predict_timeout_seconds
        if settings.sandbox_call_seconds is None
        else settings.sandbox_call_seconds,
        load_seconds=settings.sandbox_load_seconds,
        max_answer_bytes=int((settings.sandbox_max_answer_mb or settings.max_decoded_mb) * 2**20),
        max_line_bytes=settings.sandbox_log_line_bytes,
        max_open_files=settings.sandbox_max_open_files,
        max_processes=settings.sandbox_max_processes,
    )
    if settings.env_manager == "uv" and settings.role != "sync":  # a sync process loads no model
        check_host(policy)
    return policy


def _checked(loader: ModelLoader, tracing: Tracing) -> LoadFn:
    """Load, then make sure the fast path agrees with pyfunc on the warm-up request."""

    def load(version: VersionId, reserve: Reserve) -> LoadedModel:
        with tracing.span("model.load", {"gateway.model": version.name, "gateway.version": version.version}):
            return check_fast_path(loader.load(version, reserve))

    return load
