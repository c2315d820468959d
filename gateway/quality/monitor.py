"""Live quality, read from the state database at an interval (GATEWAY_QUALITY_INTERVAL_SECONDS).

Every serving process, every interval: the (version, arm) pairs that have labels and whose
version is still the registry's under its number are read, each over its latest
GATEWAY_QUALITY_WINDOW labels, and scored (:mod:`registry_sync.quality`); the figures replace
the ``gateway_quality`` gauges and what ``/quality`` and ``/status`` show, and the guard judges
each weighted canary against its model's default version on them
(:func:`gateway.routing.guard.quality_breach`). Labels sent to any replica are in the
database: every replica's guard sees them within an interval. Nothing here runs per request;
a failed read keeps the last figures and is logged once until a read succeeds.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import anyio.to_thread

from gateway.dataplane.predictor import InferenceService
from gateway.errors import GatewayError
from gateway.metrics import GatewayMetrics
from gateway.routing.catalog import Catalog
from gateway.routing.guard import Guard, QualityLimits, quality_breach, quality_limits
from gateway.routing.traffic import CANARY, DEFAULT, TrafficSplit
from gateway.settings import GatewaySettings
from gateway.wire.api_schemas import ArmQualityBody, QualityList, QualityRow, utc_iso
from registry_sync.errors import RegistryError
from registry_sync.feedback import FeedbackStore
from registry_sync.identity import VersionId
from registry_sync.periodic import Outage, Periodic
from registry_sync.quality import Scored, task_of_tag

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ArmQuality:
    """One version and arm's figures, as last read."""

    id: VersionId
    arm: str
    scored: Scored


class QualityMonitor:
    def __init__(
        self,
        store: FeedbackStore,
        catalog: Catalog,
        inference: InferenceService,
        split: TrafficSplit,
        guard: Guard,
        metrics: GatewayMetrics,
        *,
        window: int,
        interval_seconds: float,
        limits: QualityLimits,
    ) -> None:
        self.store = store
        self._catalog = catalog
        self._inference = inference
        self._split = split
        self._guard = guard
        self._metrics = metrics
        self.window = window
        self.interval_seconds = interval_seconds
        self.limits = limits
        self.latest: dict[tuple[VersionId, str], ArmQuality] = {}
        self.read_at: float | None = None  # time.time() of the last successful read
        self._outage = Outage(
            log,
            "could not read the labels for live quality (keeping the last figures)",
            "reading the labels for live quality again",
        )
        self._loop = Periodic("computing live quality", interval_seconds, self.refresh, log=log)

    @classmethod
    def of(
        cls,
        settings: GatewaySettings,
        store: FeedbackStore,
        catalog: Catalog,
        inference: InferenceService,
        split: TrafficSplit,
        guard: Guard,
        metrics: GatewayMetrics,
    ) -> QualityMonitor:
        """The monitor as the settings say (window, interval, the guard's quality limits)."""
        limits = QualityLimits(
            min_labels=settings.guard_min_labels,
            max_quality_drop=settings.guard_max_quality_drop,
            confidence=settings.guard_quality_confidence,
        )
        return cls(
            store,
            catalog,
            inference,
            split,
            guard,
            metrics,
            window=settings.quality_window,
            interval_seconds=settings.quality_interval_seconds,
            limits=limits,
        )

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def refresh(self) -> bool:
        """Read and score every window now, update the gauges, let the guard judge; False when
        the state database could not be read (the last figures stay)."""
        try:
            latest = await anyio.to_thread.run_sync(self._read)
        except RegistryError as exc:
            self._outage.failed(exc)
            return False
        self._outage.passed()
        self.latest, self.read_at = latest, time.time()
        self._metrics.quality_now(
            {
                (q.id.name, str(q.id.version), q.arm): (q.scored.figures.labels, q.scored.figures.metrics)
                for q in latest.values()
            }
        )
        await self._judge()
        return True

    def _read(self) -> dict[tuple[VersionId, str], ArmQuality]:
        found: dict[tuple[VersionId, str], ArmQuality] = {}
        for identity, arm in self.store.labelled():
            state = self._catalog.state(identity.name, identity.version)
            if state is None or not identity.same_version(state.id):
                continue  # deleted, or the number was re-created: its labels are another version's
            scored = self.store.scored(identity, arm=arm, window=self.window, task=task_of_tag(state.tags))
            found[(state.id, arm)] = ArmQuality(state.id, arm, scored)
        return found

    async def _judge(self) -> None:
        for traffic in self._catalog.splits():
            name = traffic.name
            try:
                default = await self._inference.default_version(name, take_over=False)
            except (GatewayError, RegistryError):
                continue
            theirs = self.latest.get((default.id, DEFAULT))
            if theirs is None:
                continue
            for arm in traffic.arms.values():
                if arm.version == default.version or self._split.weight(name, arm) <= 0:
                    continue
                state = self._catalog.state(name, arm.version)
                if state is None or (mine := self.latest.get((state.id, CANARY))) is None:
                    continue
                limits = quality_limits(self.limits, state.tags)
                reason = quality_breach(limits, mine.scored, theirs.scored)
                if reason is not None:
                    self._guard.roll_back_on_quality(name, arm.version, default.version, reason)

    def of_model(self, name: str) -> list[ArmQuality]:
        return sorted((q for q in self.latest.values() if q.id.name == name), key=lambda q: (q.id.version, q.arm))


def arm_body(arm: str, scored: Scored) -> ArmQualityBody:
    f = scored.figures
    return ArmQualityBody(arm=arm, task=f.task, labels=f.labels, window=f.window, metrics=f.metrics)


def describe(monitor: QualityMonitor, name: str | None = None) -> QualityList:
    """What ``GET /quality`` and the status page show: every version and arm with labels (of
    one model, if ``name``), as last computed."""
    rows = [
        QualityRow(model=q.id.name, version=q.id.version, **arm_body(q.arm, q.scored).model_dump())
        for q in sorted(monitor.latest.values(), key=lambda q: (q.id.name, q.id.version, q.arm))
        if name is None or q.id.name == name
    ]
    read_at = utc_iso(monitor.read_at) if monitor.read_at is not None else None
    return QualityList(read_at=read_at, interval_seconds=monitor.interval_seconds, rows=rows)
