"""This process's usage per caller, model, version and UTC day, added to the fleet's rows in
the state database at an interval (``registry_sync/usage.py``).

On the request path a predict's end costs a dict lookup and a few additions (0.4 µs in a loop)
(:meth:`UsageMeter.count`); nothing else. Every ``GATEWAY_USAGE_FLUSH_SECONDS`` the counts are
taken (the dict swapped for an empty one, on the event loop) and added to the database in a
thread, one upsert per row that adds: replicas never overwrite one another. The database
down: the counts taken go back into the next flush (nothing is lost while the process lives).
The process stopping flushes once more. Prometheus's ``gateway_usage_*`` counters are added to
at each flush too, per model and version (per caller only with
``GATEWAY_USAGE_METRICS_BY_CALLER``): they lag the requests by at most one interval.

The quotas (:mod:`gateway.admission.quotas`) ride on the same pass: taken before the write,
their database sums read after it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

import anyio.to_thread

from gateway.admission.quotas import QuotaGuard
from gateway.metrics import GatewayMetrics
from registry_sync.errors import RegistryError
from registry_sync.periodic import Outage, Periodic
from registry_sync.usage import Tally, UsageKey, UsageStore

log = logging.getLogger(__name__)


class UsageMeter:
    def __init__(
        self,
        store: UsageStore,
        metrics: GatewayMetrics,
        *,
        interval_seconds: float,
        quotas: QuotaGuard | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self.quotas = quotas
        self._clock = clock
        self._pending: dict[UsageKey, Tally] = {}
        self._day = ""
        self._day_starts = self._day_ends = 0.0  # epoch seconds: the day is worked out again only outside them
        self._outage = Outage(log, "could not add this process's usage (kept for the next flush)", "adding usage again")
        # stopped: one more flush, so what the last interval counted is not lost to the fleet's sum
        self._loop = Periodic("flushing usage", interval_seconds, self.flush, log=log, last_pass=True)

    def count(
        self,
        caller: str,
        model: str,
        version: int,
        error: bool,
        rows: int,
        seconds: float,
        tokens: int,
        at: float | None = None,
    ) -> None:
        """One predict request answered (on the event loop): added in memory, nothing more.
        ``at``: when it arrived (epoch seconds; its day is the one it counts in), else now.
        Positional on the request path: each keyword of a call costs."""
        now = self._clock() if at is None else at
        if now >= self._day_ends or now < self._day_starts:
            self._new_day(now)
        key = (caller, model, version, self._day)
        tally = self._pending.get(key)
        if tally is None:
            tally = self._pending[key] = Tally()
        tally.requests += 1
        if error:
            tally.errors += 1
        if rows:
            tally.rows += rows
        if seconds:
            tally.predict_seconds += seconds
        if tokens:
            tally.tokens += tokens

    def _new_day(self, now: float) -> None:
        moment = datetime.fromtimestamp(now, UTC)
        self._day = moment.strftime("%Y-%m-%d")
        self._day_starts = moment.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
        self._day_ends = self._day_starts + 86_400

    def pending(self) -> dict[UsageKey, Tally]:
        """What this process counted and has not added to the database yet."""
        return dict(self._pending)

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def flush(self) -> bool:
        """Add what was counted since the last flush to the database (True when written); the
        quotas' sums are read after, whatever happened."""
        taken, self._pending = self._pending, {}
        if self.quotas is not None:
            self.quotas.taking()
        written = False
        if taken:
            try:
                await anyio.to_thread.run_sync(lambda: self._store.add(taken))
            except RegistryError as exc:
                self._outage.failed(exc)
                for key, tally in taken.items():  # back, for the next flush
                    self._pending.setdefault(key, Tally()).add(tally)
                if self.quotas is not None:
                    self.quotas.not_written()
            else:
                self._outage.passed()
                written = True
                for (caller, model, version, _), t in taken.items():
                    figures = {
                        "requests": t.requests,
                        "rows": t.rows,
                        "errors": t.errors,
                        "predict_seconds": t.predict_seconds,
                        "tokens": t.tokens,
                    }
                    self._metrics.usage_flushed(model, version, caller, figures)
        if self.quotas is not None:
            await self.quotas.refresh()
        return written
