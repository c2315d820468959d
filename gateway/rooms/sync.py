"""The sync room: this process's part in the control plane (registry_sync).

The synchronizer (one pass: read the registry, diff it into the state database) and the poller
that runs passes while this process holds the sync lease, campaigns for it (never, for a
``--role gateway`` replica) and runs the passes others queue. A finished pass pokes the
reconciler, so what it wrote is followed at once rather than a follow interval later. On a
catalog miss, ``look_again`` has the registry read for that model, here if this process leads,
else by the leader. At start, ``sync_while_starting`` and ``first_pass`` are the two ways a
process waits for a first read of the registry.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import anyio.to_thread

from gateway.rooms.models import ModelsRoom
from gateway.rooms.observability import ObservabilityRoom
from gateway.rooms.state import StateRoom
from gateway.routing.reconciler import Reconciler
from gateway.settings import GatewaySettings
from registry_sync.errors import RegistryError, RegistryUnavailable
from registry_sync.poller import Poller
from registry_sync.sync import Synchronizer, SyncReport

log = logging.getLogger("gateway.process")  # the process's start-up lines, under the name they always had


@dataclass(eq=False)
class SyncRoom:
    poller: Poller
    registry_timeout_seconds: float
    follow_interval_seconds: float

    @classmethod
    def build(
        cls,
        settings: GatewaySettings,
        *,
        state: StateRoom,
        models: ModelsRoom,
        reconciler: Reconciler,
        seen: ObservabilityRoom,
        actor: str,
    ) -> SyncRoom:
        cache, catalog, metrics = models.cache, state.catalog, seen.metrics

        def served_models() -> set[str]:
            return {key.name for key in cache.keys()} | {route.name for route in catalog.warm_routes()}

        synchronizer = Synchronizer(
            state.reader,
            state.store,
            state.artifacts,
            verify_interval_seconds=settings.verify_interval_seconds,
            actor=f"sync@{actor}",
            fence=state.lease,
            loaded=cache.keys,  # their bytes are checked too, like those routes point at
            watched=served_models,  # read every pass: their tags matter now
            full_read_interval_seconds=settings.full_sync_interval_seconds,
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
            lease=state.lease,
            store=state.store,
            campaign=settings.role in ("all", "sync"),  # a gateway or jobs process never polls MLflow
            renew_seconds=state.renew_seconds,
            requests_interval_seconds=settings.follow_interval_seconds,
            actor=f"{settings.role}@{actor}",
            span=seen.tracing.span,
        )
        metrics.follow_leadership(lambda: poller.leading)
        metrics.follow_downloads(lambda: state.artifacts.downloaded_bytes)
        return cls(
            poller=poller,
            registry_timeout_seconds=settings.registry_timeout_seconds,
            follow_interval_seconds=settings.follow_interval_seconds,
        )

    async def look_again(self, name: str) -> None:
        """A miss: maybe registered a moment ago. Read here if this process leads, else the
        leader reads (one reader of MLflow)."""
        wait = self.registry_timeout_seconds
        report = await self.poller.run([name], reason="miss", timeout=wait)
        if report is None:
            raise RegistryUnavailable(f"no sync leader looked '{name}' up within {wait:g} s")
        if report.error is not None:
            raise RegistryUnavailable(report.error)

    async def sync_while_starting(self, reason: str) -> bool:
        """One pass, waited for up to three registry timeouts (then it goes on behind); True
        when it finished well."""
        running = self.poller.sync_soon(None, reason=reason)
        try:
            async with asyncio.timeout(self.registry_timeout_seconds * 3):
                report = await asyncio.shield(running)  # on timeout it goes on in the background
        except TimeoutError:
            log.warning("%s sync still running; serving from the state database meanwhile", reason)
            return False
        if not report.ok:
            log.warning("%s sync failed (serving from the state database): %s", reason, report.error)
        return report.ok

    async def first_pass(self, state: StateRoom) -> None:
        """A state database no sync ever wrote has nothing to serve yet: wait for the leader."""
        logged = False
        while True:
            try:
                status = await anyio.to_thread.run_sync(state.store.sync_status)
                if status.last_attempt_at is not None:
                    return
            except RegistryError as exc:
                log.warning("state database unavailable while waiting for the first sync: %s", exc)
            if not logged:
                log.info("waiting for the sync leader's first pass (no sync has written the state database)")
                logged = True
            await asyncio.sleep(self.follow_interval_seconds)

    async def stop(self) -> None:
        await self.poller.stop()
