"""The fleet's drift figures, read from the state database at an interval
(GATEWAY_DRIFT_INTERVAL_SECONDS); events on crossing and recovering, from the sync leader.

Every process, every interval, in one thread: a serving process publishes its windows
(``registry_sync/drift/windows.py``: one row per version identity, bins, never rows) and saves
the baselines it finished; then it reads every reference (the book) and the fleet's windows
(the sum over the processes that published within ``RECENT_INTERVALS`` intervals), and judges
each version whose identity is still the registry's under its number
(:func:`registry_sync.drift.verdict.judge`, thresholds from the settings and the version's
``gateway.drift.*`` tags). The figures replace the ``gateway_feature_drift`` gauges and what
``/drift``, ``/status`` and the drift route show; the write-back reads them too.

The process holding the sync lease (and only it) writes an event when a version starts to
drift (``drifted``, naming the flagged features) and one when it stops (``drift_recovered``):
once each, however many intervals it stays so. What it last said of a version is read back
from the events when it first judges that version, so a new leader does not say it again.

Nothing here runs per request; a failed read or write keeps the last figures and is logged
once until a pass succeeds again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import anyio.to_thread

from gateway.drift.baseline import Baselines
from gateway.drift.book import ReferenceBook
from gateway.drift.window import Windows
from gateway.metrics import GatewayMetrics
from registry_sync.drift.references import READY
from registry_sync.drift.verdict import Thresholds, VersionDrift, judge
from registry_sync.drift.windows import WindowStore
from registry_sync.errors import RegistryError
from registry_sync.identity import VersionId
from registry_sync.periodic import Outage, Periodic
from registry_sync.repository import EventKind, StateStore, VersionState

log = logging.getLogger(__name__)

RECENT_INTERVALS = 3  # a process that has not published for this many intervals is out of the fleet's sum
FORGET_SECONDS = 3600.0  # its rows are deleted after this


class DriftMonitor:
    def __init__(
        self,
        windows_store: WindowStore,
        book: ReferenceBook,
        state: StateStore,
        metrics: GatewayMetrics,
        *,
        states: Callable[[str, int], VersionState | None],
        windows: Windows | None,
        baselines: Baselines | None,
        replica: str,
        interval_seconds: float,
        thresholds: Thresholds,
        leading: Callable[[], bool],
        actor: str,
    ) -> None:
        self._store = windows_store
        self.book = book
        self._state = state
        self._metrics = metrics
        self._states = states  # the version under a number now (the catalog's, or the database's)
        self._windows = windows  # this process's (None: it serves no models)
        self._baselines = baselines
        self.replica = replica
        self.interval_seconds = interval_seconds
        self.thresholds = thresholds
        self._leading = leading
        self._actor = actor
        self.latest: dict[VersionId, VersionDrift] = {}
        self.read_at: float | None = None
        self._said: dict[VersionId, bool] = {}  # what the events last said: drifting or not
        self._outage = Outage(
            log,
            "could not read or publish drift windows (keeping the last figures)",
            "reading and publishing drift windows again",
        )
        self._events_outage = Outage(log, "could not write drift events (next interval)", "writing drift events again")
        self._loop = Periodic("computing drift", interval_seconds, self.refresh, log=log)

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()
        if self._windows is not None:
            try:  # the last interval's rows are not lost to the fleet's sum
                await anyio.to_thread.run_sync(self._publish)
            except RegistryError as exc:
                log.warning("could not publish this process's drift windows at stop: %s", exc)

    async def refresh(self) -> bool:
        """One pass (see the module's docstring); False when the state database failed it."""
        try:
            latest = await anyio.to_thread.run_sync(self._pass)
        except RegistryError as exc:
            self._outage.failed(exc)
            return False
        self._outage.passed()
        self.latest, self.read_at = latest, time.time()
        self._metrics.drift_now(latest.values())
        if self._leading():
            try:
                await anyio.to_thread.run_sync(self._alarms, latest)
            except RegistryError as exc:
                self._events_outage.failed(exc)
            else:
                self._events_outage.passed()
        return True

    def _publish(self) -> None:
        if self._windows is not None:
            self._store.publish(self.replica, self._windows.totals(time.time()), forget_after=FORGET_SECONDS)

    def _pass(self) -> dict[VersionId, VersionDrift]:
        self._publish()
        if self._baselines is not None:
            for version, profile in self._baselines.finished().items():
                self.book.save_baseline(version, profile)
                self._baselines.saved(version)
                log.info("drift baseline of %s profiled from its first %d rows", version, profile.rows)
        self.book.refresh()
        fleet = self._store.fleet(recent_seconds=RECENT_INTERVALS * self.interval_seconds)
        latest: dict[VersionId, VersionDrift] = {}
        for version, (window, processes) in fleet.items():
            reference = self.book.get(version)
            if reference is None or reference.status != READY or reference.profile is None:
                continue
            state = self._states(version.name, version.version)
            if state is None or state.deleted or not version.same_version(state.id):
                continue  # deleted, or the number re-created: these counts are another version's
            thresholds = self.thresholds.tagged(state.tags)
            latest[version] = judge(version, reference.profile, window, thresholds, processes=processes)
        return latest

    def _alarms(self, latest: dict[VersionId, VersionDrift]) -> None:
        for version, drift in latest.items():
            if not drift.enough:
                continue
            said = self._said.get(version)
            if said is None:
                said = self._said[version] = self._last_said(version)
            if drift.drifting and not said:
                worst = drift.worst_first()[0][1] if drift.worst_first() else None
                psi = f"; largest PSI {worst.psi:.3g} ({worst.name})" if worst is not None and worst.psi else ""
                reason = f"drift: {', '.join(drift.flagged)} flagged over {drift.window.rows} rows{psi}"
                self._state.record(
                    EventKind.DRIFTED, version.name, version=version.version, reason=reason, actor=self._actor
                )
                self._said[version] = True
            elif not drift.drifting and said:
                reason = f"drift: no feature flagged over {drift.window.rows} rows"
                self._state.record(
                    EventKind.DRIFT_RECOVERED, version.name, version=version.version, reason=reason, actor=self._actor
                )
                self._said[version] = False

    def _last_said(self, version: VersionId) -> bool:
        kinds = {EventKind.DRIFTED.value, EventKind.DRIFT_RECOVERED.value}
        for event in self._state.events(name=version.name, limit=200):
            if event.version == version.version and event.kind in kinds:
                return event.kind == EventKind.DRIFTED.value
        return False
