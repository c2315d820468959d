"""The models room: the versions this process holds and the threads that load and score them.

The loader (fetch, verify against the pin, the loading policy, then load where the runtimes
room places it), the LRU cache of loaded versions over it, the budget of cold loads, the pool
of loader threads and of inference threads, and the open streams. Stopping it ends the streams
and unloads every version; the thread pools are let go last (predicts still running finish on
their own, unwaited).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from gateway.admission.limits import LoadBudget
from gateway.dataplane.cache import LoadFn, ModelCache, Reserve
from gateway.dataplane.inference import check_fast_path
from gateway.dataplane.loader import LoadedModel, ModelLoader
from gateway.dataplane.streaming import Streams
from gateway.observability.tracing import Tracing
from gateway.rooms.observability import ObservabilityRoom
from gateway.rooms.runtimes import RuntimesRoom
from gateway.rooms.state import StateRoom
from gateway.runtimes.policy import LoadingPolicy
from gateway.settings import GatewaySettings
from gateway.wire.mlflow_scoring import BodyLimits
from registry_sync.identity import VersionId


@dataclass(eq=False)
class ModelsRoom:
    loader: ModelLoader
    cache: ModelCache
    loaders: ThreadPoolExecutor  # cold loads
    executor: ThreadPoolExecutor  # predicts
    load_budget: LoadBudget | None  # GATEWAY_MAX_LOADS_PER_MINUTE's
    streams: Streams  # predict_stream's open streams (gateway.dataplane.streaming)

    @classmethod
    def build(
        cls,
        settings: GatewaySettings,
        *,
        state: StateRoom,
        runtimes: RuntimesRoom,
        seen: ObservabilityRoom,
        actor: str,
    ) -> ModelsRoom:
        loaders = ThreadPoolExecutor(max_workers=settings.load_threads, thread_name_prefix="load")
        loader = ModelLoader(
            state.artifacts,
            state.store,
            actor=f"gateway@{actor}",
            policy=LoadingPolicy.of(settings.allowed_flavors, allow_pickle=settings.allow_pickle),
            body_limits=BodyLimits(settings.max_body_rows, settings.max_decoded_bytes),
            placer=runtimes.placer,
        )
        cache = ModelCache(
            _checked(loader, seen.tracing),
            max_models=settings.max_loaded_models,
            max_bytes=settings.max_memory_bytes,
            metrics=seen.metrics,
            executor=loaders,
            load_retry_seconds=settings.load_retry_seconds,
        )
        state.artifacts.in_use = cache.digests
        executor = ThreadPoolExecutor(max_workers=settings.inference_threads, thread_name_prefix="predict")
        load_budget = (
            LoadBudget(settings.max_loads_per_minute, seen.metrics)
            if settings.max_loads_per_minute is not None
            else None
        )
        streams = Streams(
            cache,
            metrics=seen.metrics,
            max_streams=settings.max_streams,
            threads=settings.stream_threads,
            idle_seconds=settings.stream_idle_timeout_seconds,
            load_budget=load_budget,
        )
        return cls(
            loader=loader, cache=cache, loaders=loaders, executor=executor, load_budget=load_budget, streams=streams
        )

    async def reap_idle_workers(self, idle_seconds: float) -> None:
        """Isolated versions idle for GATEWAY_ENV_WORKER_IDLE_SECONDS are unloaded (and their
        workers stop with their last version); runs until cancelled."""
        while True:
            await asyncio.sleep(min(30.0, max(idle_seconds / 4, 0.05)))
            self.cache.unload_idle(
                idle_seconds, which=lambda m: m.placement is not None and m.placement.runtime == "isolated"
            )

    async def stop(self) -> None:
        self.streams.close()
        await self.cache.close()

    def close(self) -> None:
        # Predicts still running finish on their own; don't wait for them here.
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.loaders.shutdown(wait=False, cancel_futures=True)


def _checked(loader: ModelLoader, tracing: Tracing) -> LoadFn:
    """Load, then make sure the fast path agrees with pyfunc on the warm-up request."""

    def load(version: VersionId, reserve: Reserve) -> LoadedModel:
        with tracing.span("model.load", {"gateway.model": version.name, "gateway.version": version.version}):
            return check_fast_path(loader.load(version, reserve))

    return load
