"""This process as a member of the fleet: its heartbeat, what it holds, what it served.

Every ``GATEWAY_HEARTBEAT_SECONDS`` a process reports itself to the state database
(registry_sync.fleet): its replica, role and state (starting, ready, draining, stopped), its
memory budget and the versions it holds with their sizes and last use, and, for a serving
process, the versions it answered requests with since its last report, under its replica's
stable name (``GATEWAY_REPLICA_ID``). That history is what the replica warms when it starts
again (gateway.fleet.warming), and what "served lately" means for the alias moves it follows.

The database being down costs the fleet view a heartbeat, never a request: a report that
fails is logged once and tried again at the next beat.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import anyio.to_thread

from gateway.dataplane.cache import ModelCache
from registry_sync.errors import RegistryError
from registry_sync.fleet import STOPPED, FleetStore, Holding, MemberReport, Served
from registry_sync.identity import VersionId
from registry_sync.periodic import Outage

log = logging.getLogger(__name__)

FORGET_SECONDS = 3600.0  # a member silent this long leaves the fleet view
QUIET_BEATS = 3  # a member silent for this many heartbeats is shown as gone quiet


class Membership:
    def __init__(
        self,
        store: FleetStore,
        cache: ModelCache | None,
        *,
        member: str,
        replica: str,
        role: str,
        heartbeat_seconds: float,
        recent_seconds: float,
        served_aliases: Callable[[], dict[VersionId, list[str]]] = dict,
    ) -> None:
        self._served_aliases = served_aliases  # the catalog's: which warm alias each held version serves
        self._store = store
        self._cache = cache  # None: a sync-only process holds no models
        self.member = member
        self.replica = replica
        self.role = role
        self.heartbeat_seconds = heartbeat_seconds
        self.recent_seconds = recent_seconds
        self.state = "starting"
        self.warm_rule = ""
        self._served: dict[str, float] = {}  # model -> last request, this replica (history and since)
        self._reported: dict[VersionId, float] = {}  # last_served already written, per version
        self._outage = Outage(
            log,
            "could not report this process to the fleet (trying again)",
            "reporting this process to the fleet again",
        )
        self._loop: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    @property
    def quiet_after_seconds(self) -> float:
        """A member not heard from for this long has gone quiet (stopped, hung or cut off)."""
        return QUIET_BEATS * self.heartbeat_seconds

    # --- at start ------------------------------------------------------------------

    async def history(self) -> list[Served]:
        """What this replica served lately, most recent first (empty when the database cannot
        say: a replica with no history starts lazily, which is always safe)."""
        try:
            found = await anyio.to_thread.run_sync(
                lambda: self._store.history(self.replica, within=self.recent_seconds, now=time.time())
            )
        except RegistryError as exc:
            log.warning("could not read what replica %s served before (starting without it): %s", self.replica, exc)
            return []
        for used in found:
            self._note(used.id.name, used.last_served)
            self._reported[used.id] = used.last_served
        return found

    async def other_replicas(self) -> list[str]:
        """Other replicas with a serving process alive on this state database."""
        try:
            return await anyio.to_thread.run_sync(
                lambda: self._store.other_serving_replicas(self.replica, within=self.quiet_after_seconds)
            )
        except RegistryError as exc:
            log.warning("could not read the fleet (taking this process as alone): %s", exc)
            return []

    # --- while running -------------------------------------------------------------

    def served_lately(self) -> set[str]:
        """Models this replica answered requests for within GATEWAY_WARM_RECENT_SECONDS."""
        since = time.time() - self.recent_seconds
        if self._cache is not None:
            for held in self._cache.describe():
                if held.last_served is not None:
                    self._note(held.name, held.last_served)
        return {name for name, at in self._served.items() if at >= since}

    def set_state(self, state: str) -> None:
        """Starting, ready, draining or stopped: reported at once (the next beat comes early)."""
        self.state = state
        self._wake.set()

    def report_soon(self) -> None:
        """Report now rather than at the next beat: a warm alias flipped here (an admin sync
        elsewhere waits for the fleet's reports of it)."""
        self._wake.set()

    def start(self) -> None:
        self._loop = asyncio.create_task(self._beat(), name="fleet heartbeat")

    async def stop(self) -> None:
        """Stop beating and report this process stopped (its replica's history stays)."""
        if self._loop is not None:
            self._loop.cancel()
            await asyncio.gather(self._loop, return_exceptions=True)
            self._loop = None
        self.state = STOPPED
        await self.report()

    async def _beat(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self.heartbeat_seconds):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.report()
            except Exception:  # the heartbeat must outlive any one bad report
                log.exception("reporting this process to the fleet failed")

    async def report(self) -> bool:
        """Write this process's row and what it served since the last report; True when written."""
        holdings, served = self._holdings()
        report = MemberReport(
            member=self.member,
            replica=self.replica,
            role=self.role,
            state=self.state,
            warm_rule=self.warm_rule,
            max_models=self._cache.max_models if self._cache is not None else 0,
            budget_bytes=self._cache.max_bytes if self._cache is not None else 0,
            loaded_bytes=self._cache.loaded_bytes if self._cache is not None else 0,
            holdings=tuple(holdings),
        )
        try:
            await anyio.to_thread.run_sync(
                lambda: self._store.report(
                    report,
                    served,
                    replica_now=time.time(),
                    forget_after=FORGET_SECONDS,
                    history_seconds=self.recent_seconds,
                )
            )
        except RegistryError as exc:
            self._outage.failed(exc)
            return False
        self._outage.passed()
        for used in served:
            self._reported[used.id] = used.last_served
        return True

    def _holdings(self) -> tuple[list[Holding], list[Served]]:
        """What the cache holds now, and the versions requests used since they were last reported."""
        if self._cache is None:
            return [], []
        holdings, served = [], []
        aliases = self._served_aliases()
        for key in self._cache.keys():
            held = self._cache.get(key)
            if held is None:
                continue
            serving = tuple(aliases.get(key, ()))
            holdings.append(Holding(key.name, key.version, held.size_bytes, held.last_served, held.in_use, serving))
            if held.last_served is not None:
                self._note(key.name, held.last_served)
                if held.last_served > self._reported.get(key, 0.0):
                    served.append(Served(key, held.size_bytes, held.last_served))
        return holdings, served

    def _note(self, name: str, at: float) -> None:
        if at > self._served.get(name, 0.0):
            self._served[name] = at
