"""The collaborators of one gateway process, built from settings, started and closed in order."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from gateway.cache import ModelCache
from gateway.catalog import Catalog
from gateway.inventory import Inventory
from gateway.loader import ModelLoader
from gateway.metrics import GatewayMetrics
from gateway.reconciler import Reconciler
from gateway.service import InferenceService
from gateway.settings import GatewaySettings
from registry_sync.artifacts import ArtifactStore
from registry_sync.database import check_schema, is_sqlite, make_engine
from registry_sync.errors import RegistryUnavailable
from registry_sync.poller import Poller
from registry_sync.registry import RegistryReader
from registry_sync.repository import StateStore
from registry_sync.sync import Synchronizer, SyncReport

log = logging.getLogger(__name__)


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
    ready: bool = False

    @classmethod
    def build(cls, settings: GatewaySettings, *, reader: RegistryReader | None = None) -> Services:
        actor = f"{socket.gethostname()}:{os.getpid()}"
        reader = reader or RegistryReader()
        metrics = GatewayMetrics()
        engine = make_engine(settings.database_url)
        check_schema(engine, auto_upgrade=is_sqlite(settings.database_url))
        store = StateStore(engine)
        store.claim(reader.registry_uri)
        artifacts = ArtifactStore(reader, settings.artifact_cache_dir, max_bytes=settings.artifact_cache_max_bytes)
        synchronizer = Synchronizer(
            reader, store, artifacts, verify_interval_seconds=settings.verify_interval_seconds, actor=f"sync@{actor}"
        )
        loaders = ThreadPoolExecutor(max_workers=settings.load_threads, thread_name_prefix="load")
        cache = ModelCache(
            ModelLoader(artifacts, store, actor=f"gateway@{actor}").load,
            max_models=settings.max_loaded_models,
            max_bytes=settings.max_memory_bytes,
            metrics=metrics,
            executor=loaders,
            load_retry_seconds=settings.load_retry_seconds,
        )
        artifacts.in_use = cache.digests
        executor = ThreadPoolExecutor(max_workers=settings.inference_threads, thread_name_prefix="predict")

        async def look_again(name: str) -> None:  # a miss: maybe registered a moment ago
            report = await poller.sync([name], reason="miss")
            if report.error is not None:
                raise RegistryUnavailable(report.error)

        catalog = Catalog(store, warm_aliases=settings.warm_aliases, look_again=look_again)
        reconciler = Reconciler(
            catalog,
            cache,
            store,
            executor=executor,
            metrics=metrics,
            follow_interval_seconds=settings.follow_interval_seconds,
            actor=f"gateway@{actor}",
        )

        def on_synced(report: SyncReport) -> None:
            metrics.sync_finished(
                outcome="success" if report.ok else "failure", seconds=report.seconds, refused=report.refused
            )
            reconciler.poke()

        poller = Poller(synchronizer, interval_seconds=settings.poll_interval_seconds, on_synced=on_synced)
        inference = InferenceService(
            catalog,
            cache,
            default_alias=settings.default_alias,
            predict_timeout_seconds=settings.predict_timeout_seconds,
            executor=executor,
        )
        log.info(
            "registry %s; state %s; artifacts in %s; warm aliases %s",
            reader.registry_uri,
            engine.url.render_as_string(hide_password=True),
            settings.artifact_cache_dir,
            ", ".join(settings.warm_aliases) or "none",
        )
        return cls(
            settings=settings,
            reader=reader,
            metrics=metrics,
            store=store,
            catalog=catalog,
            artifacts=artifacts,
            cache=cache,
            inference=inference,
            inventory=Inventory(catalog, cache, artifacts, inference),
            poller=poller,
            reconciler=reconciler,
            executor=executor,
            loaders=loaders,
        )

    async def start(self) -> None:
        """Sync once, warm what the database says is served, then take traffic."""
        first = self.poller.sync_soon(None, reason="startup")
        try:
            async with asyncio.timeout(self.settings.registry_timeout_seconds * 3):
                report = await asyncio.shield(first)  # on timeout it goes on in the background
            if not report.ok:
                log.warning("startup sync failed (serving from the state database): %s", report.error)
        except TimeoutError:
            log.warning("startup sync still running; serving from the state database meanwhile")
        await self.reconciler.start()
        self.poller.start()
        self.ready = True

    async def close(self) -> None:
        self.ready = False
        await self.poller.stop()
        await self.reconciler.stop()
        await self.cache.close()
        # Predicts still running finish on their own; don't wait for them here.
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.loaders.shutdown(wait=False, cancel_futures=True)
        self.store.engine.dispose()
