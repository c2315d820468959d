"""When the sync runs: on a schedule, and on demand (webhooks, misses, /admin/sync).

Passes never overlap (one lock; APScheduler's ``max_instances=1, coalesce=True`` for the
schedule). While the registry is unreachable the scheduled pass backs off, doubling up to
``max_backoff``; on-demand passes still run at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

import anyio.to_thread
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from registry_sync.sync import Synchronizer, SyncReport

log = logging.getLogger(__name__)

Listener = Callable[[SyncReport], None]


class Poller:
    def __init__(
        self,
        synchronizer: Synchronizer,
        *,
        interval_seconds: float,
        on_synced: Listener | None = None,
        max_backoff_seconds: float = 300.0,
    ) -> None:
        self._sync = synchronizer
        self._interval = interval_seconds
        self._on_synced = on_synced
        self._max_backoff = max(max_backoff_seconds, interval_seconds)
        self._lock = asyncio.Lock()
        self._failures = 0
        self._next_allowed = 0.0
        self._scheduler: AsyncIOScheduler | None = None
        self._background: set[asyncio.Task[SyncReport]] = set()

    def start(self) -> None:
        self._scheduler = AsyncIOScheduler()
        self._scheduler.add_job(
            self._scheduled, "interval", seconds=self._interval, max_instances=1, coalesce=True, id="registry-poll"
        )
        self._scheduler.start()

    async def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    async def sync(self, names: Iterable[str] | None = None, *, reason: str) -> SyncReport:
        """Run one pass now (after any pass under way) and return its report."""
        names = sorted(set(names)) if names is not None else None
        async with self._lock:
            report = await anyio.to_thread.run_sync(lambda: self._sync.sync_once(names, reason=reason))
        if names is None:
            self._note(report)
        if self._on_synced is not None:
            self._on_synced(report)
        return report

    def sync_soon(self, names: Iterable[str] | None, *, reason: str) -> asyncio.Task[SyncReport]:
        """Start a pass in the background (a webhook answers before it finishes)."""
        task = asyncio.create_task(self.sync(names, reason=reason), name=f"sync {reason}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _scheduled(self) -> None:
        if time.monotonic() < self._next_allowed:
            return
        try:
            await self.sync(reason="poll")
        except Exception:  # keep the schedule alive whatever one pass does
            log.exception("scheduled sync failed")

    def _note(self, report: SyncReport) -> None:
        if report.ok:
            self._failures = 0
            self._next_allowed = 0.0
            return
        self._failures += 1
        delay = min(self._interval * 2 ** (self._failures - 1), self._max_backoff)
        self._next_allowed = time.monotonic() + delay
        log.warning("registry sync failed %d time(s); next scheduled try in %.0f s", self._failures, delay)
