"""Each replica's traffic counts, published to the state database and summed by /traffic.

Every serving process counts its own default-route answers per model, arm and version (the
guard's windows) and its shadows per version (the shadow queue). For the models that have a
split, it publishes those counts every follow interval (``GATEWAY_FOLLOW_INTERVAL_SECONDS``)
when they changed, and at least every ``HEARTBEAT_INTERVALS`` intervals all the same, so an
idle replica still shows it is there. ``GET /models/{name}/traffic`` lists each replica's last
published counts and when; a replica not seen for ``STALE_INTERVALS`` intervals (and at least
``MIN_STALE_SECONDS``) is marked stale and left out of the total (it stopped, or cannot reach
the database); rows unseen for ``FORGET_SECONDS`` are deleted. Staleness is judged on the
database's clock, the one every publication is stamped with.

Only counts are summed: a p99 of several replicas is not the sum or mean of theirs, so
latencies stay per process (the ``stats`` of /traffic, and each replica's guard).
"""

from __future__ import annotations

import logging
import time

import anyio.to_thread

from gateway.routing.catalog import Catalog
from gateway.routing.guard import Guard
from gateway.routing.shadow import ShadowQueue
from gateway.routing.traffic import SHADOW
from registry_sync.errors import RegistryError
from registry_sync.periodic import Outage, Periodic
from registry_sync.repository import ArmCount, StateStore

log = logging.getLogger(__name__)

HEARTBEAT_INTERVALS = 5
STALE_INTERVALS = 15
MIN_STALE_SECONDS = 3.0
FORGET_SECONDS = 3600.0


class TrafficCounts:
    def __init__(
        self,
        catalog: Catalog,
        guard: Guard,
        shadows: ShadowQueue,
        store: StateStore,
        *,
        replica: str,
        interval_seconds: float,
    ) -> None:
        self._catalog = catalog
        self._guard = guard
        self._shadows = shadows
        self._store = store
        self.replica = replica
        self._interval = interval_seconds
        self._published: list[ArmCount] | None = None
        self._published_at = 0.0  # monotonic
        self._outage = Outage(
            log,
            "could not publish this replica's traffic counts (trying again)",
            "publishing this replica's traffic counts again",
        )
        self._loop = Periodic("publishing traffic counts", interval_seconds, self.publish, log=log)

    @property
    def stale_after_seconds(self) -> float:
        return max(STALE_INTERVALS * self._interval, MIN_STALE_SECONDS)

    def counts(self, name: str | None = None) -> list[ArmCount]:
        """This process's counts now, for one model or all, by arm and version."""
        found = [
            ArmCount(model, arm, version, requests, errors)
            for (model, arm, version), (requests, errors) in self._guard.counts().items()
            if name is None or model == name
        ]
        found += [
            ArmCount(model, SHADOW, version, c.ran, c.failed, c.agreed, c.differed, c.dropped)
            for (model, version), c in list(self._shadows.counts.items())
            if name is None or model == name
        ]
        return sorted(found, key=lambda c: (c.name, c.arm, c.version))

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def publish(self, *, force: bool = False) -> bool:
        """Write this replica's counts of the models with a split, if they changed since the
        last write or a heartbeat is due (or ``force``); True when written."""
        counts = [c for c in self.counts() if self._catalog.split(c.name) is not None]
        due = time.monotonic() - self._published_at >= HEARTBEAT_INTERVALS * self._interval
        if not counts or (counts == self._published and not due and not force):
            return False
        try:
            await anyio.to_thread.run_sync(
                lambda: self._store.publish_counts(self.replica, counts, forget_after=FORGET_SECONDS)
            )
        except RegistryError as exc:
            self._outage.failed(exc)
            return False
        self._outage.passed()
        self._published, self._published_at = counts, time.monotonic()
        return True
