"""This process's figures per version, published to the state database for the fleet's sum.

What it publishes is what ``/metrics`` already counts (``gateway_requests_total`` by model,
version and status; ``gateway_request_duration_seconds`` by model and version): requests,
those answered 5xx, and the latency histogram's bucket counts, since this process started, one
row per version (``registry_sync/figures.py``). It runs every follow interval
(``GATEWAY_FOLLOW_INTERVAL_SECONDS``) on the event loop, where those numbers are updated, and
writes in a thread only when they changed: nothing on the request path, and an idle process
writes nothing. The database down: one warning, the next interval tries again (the counts are
totals, so nothing is lost, only late).
"""

from __future__ import annotations

import logging

import anyio.to_thread

from gateway.metrics import UNKNOWN, GatewayMetrics
from registry_sync.errors import RegistryError
from registry_sync.figures import FiguresStore, VersionFigures
from registry_sync.periodic import Outage, Periodic

log = logging.getLogger(__name__)

FORGET_SECONDS = 3600.0  # a stopped process's last counts are forgotten after this (the write-back reads them sooner)


class FiguresPublisher:
    def __init__(self, metrics: GatewayMetrics, store: FiguresStore, *, replica: str, interval_seconds: float) -> None:
        self._metrics = metrics
        self._store = store
        self.replica = replica
        self._interval = interval_seconds
        self._published: list[VersionFigures] = []
        self._outage = Outage(
            log,
            "could not publish this process's version figures (trying again)",
            "publishing this process's version figures again",
        )
        # stopped: one more publication, so what the last interval answered is not lost to the fleet's sum
        self._loop = Periodic("publishing version figures", interval_seconds, self.publish, log=log, last_pass=True)

    def figures(self) -> list[VersionFigures]:
        """This process's figures now, per version it answered with (on the event loop)."""
        counts: dict[tuple[str, str], list[int]] = {}  # (model, version) -> [requests, 5xx]
        for (model, version, status), count in self._metrics.requests.values().items():
            if model == UNKNOWN or not version.isdigit():
                continue
            found = counts.get((model, version))
            if found is None:
                found = counts[model, version] = [0, 0]
            found[0] += int(count)
            if status >= "500" and len(status) == 3:  # an HTTP status: three digits
                found[1] += int(count)
        latency = self._metrics.latency.buckets()
        figures = []
        for (model, version), (requests, errors) in counts.items():
            buckets, total = latency.get((model, version), ({}, 0.0))
            figures.append(VersionFigures(model, int(version), requests, errors, buckets, total))
        return sorted(figures, key=lambda f: (f.name, f.version))

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def publish(self) -> bool:
        """Write this process's figures if they changed since its last write; True when written."""
        figures = self.figures()
        if not figures or figures == self._published:
            return False
        try:
            await anyio.to_thread.run_sync(
                lambda: self._store.publish(self.replica, figures, forget_after=FORGET_SECONDS)
            )
        except RegistryError as exc:
            self._outage.failed(exc)
            return False
        self._outage.passed()
        self._published = figures
        return True
