"""When the sync runs: on a schedule, and on demand (webhooks, misses, /admin/sync), and
only in the process that holds the leader lease.

Passes never overlap (one lock; APScheduler's ``max_instances=1, coalesce=True`` for the
schedule). While the registry is unreachable the scheduled pass backs off, doubling up to
``max_backoff``; on-demand passes still run at once.

With a lease, every process that may lead (``campaign``) tries to take or renew it every
third of its lifetime; only the holder polls, checks leadership before each pass, and on
taking over syncs at once. Processes that do not lead queue their on-demand syncs in the
state database (``sync_requests``); the leader runs them within ``requests_interval`` and
writes its report back for whoever waits. Without a lease the poller always leads (one
process on its own).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from datetime import timedelta
from typing import Any

import anyio.to_thread
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from registry_sync.errors import RegistryError
from registry_sync.lease import Lease
from registry_sync.repository import StateStore
from registry_sync.sync import Synchronizer, SyncReport

log = logging.getLogger(__name__)

Listener = Callable[[SyncReport], None]

_KEEP_REQUESTS = timedelta(hours=1)  # done sync requests are forgotten after this
_REQUEST_CHECK_SECONDS = 0.1  # how often a process waiting on the leader looks at its request


class Poller:
    def __init__(
        self,
        synchronizer: Synchronizer,
        *,
        interval_seconds: float,
        on_synced: Listener | None = None,
        max_backoff_seconds: float = 300.0,
        lease: Lease | None = None,
        store: StateStore | None = None,
        campaign: bool = True,
        renew_seconds: float | None = None,
        requests_interval_seconds: float = 1.0,
        actor: str = "",
        span: Callable[[str, dict[str, Any]], AbstractContextManager[object]] | None = None,
    ) -> None:
        if lease is not None and store is None:
            raise ValueError("a poller with a lease needs the store its requests go through")
        self._lease = lease
        self._store = store
        self._campaign = campaign
        self._renew = renew_seconds if renew_seconds is not None else (lease.ttl / 3 if lease is not None else 0.0)
        self._requests_interval = requests_interval_seconds
        self._actor = actor
        self._loops: list[asyncio.Task[None]] = []
        self._campaigning: asyncio.Task[None] | None = None
        self._sync = synchronizer
        self._span = span or (lambda name, attributes: nullcontext())  # a trace span around each pass
        self._interval = interval_seconds
        self._on_synced = on_synced
        self._max_backoff = max(max_backoff_seconds, interval_seconds)
        self._lock = asyncio.Lock()
        self._failures = 0
        self._next_allowed = 0.0
        self._scheduler: AsyncIOScheduler | None = None
        self._background: set[asyncio.Task[SyncReport]] = set()

    @property
    def may_lead(self) -> bool:
        return self._lease is None or self._campaign

    @property
    def leading(self) -> bool:
        """This process holds the lease now (always, without one)."""
        return self._lease is None or (self._campaign and self._lease.held)

    @property
    def lease(self) -> Lease | None:
        return self._lease

    def start(self) -> None:
        if not self.may_lead:
            return  # a follower: never polls, its syncs go through the leader
        # APScheduler logs every run of the poll at INFO ("Running job ...", "... executed
        # successfully"): two lines a poll interval that say nothing. Shown at DEBUG only.
        executors = logging.getLogger("apscheduler.executors")
        if not logging.getLogger().isEnabledFor(logging.DEBUG):
            executors.setLevel(logging.WARNING)
        self._scheduler = AsyncIOScheduler()
        self._scheduler.add_job(
            self._scheduled, "interval", seconds=self._interval, max_instances=1, coalesce=True, id="registry-poll"
        )
        self._scheduler.start()
        self._loops.append(asyncio.create_task(self._verify_loop(), name="verify"))
        if self._lease is not None:
            self.keep_campaigning()
            self._loops.append(asyncio.create_task(self._requests_loop(), name="sync requests"))

    def keep_campaigning(self) -> None:
        """Renew (or keep trying to take) the lease from now on; ``start`` does it too, but a
        process that took the lease must renew it through a startup longer than its ttl."""
        if self._lease is None or not self._campaign or self._campaigning is not None:
            return
        self._campaigning = asyncio.create_task(self._campaign_loop(), name="lease")
        self._loops.append(self._campaigning)

    async def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
        for task in [*self._loops, *self._background]:
            task.cancel()
        await asyncio.gather(*self._loops, *self._background, return_exceptions=True)
        self._loops, self._campaigning = [], None
        if self._lease is not None and self._campaign:
            lease = self._lease
            await anyio.to_thread.run_sync(lease.release)  # the next leader need not wait for expiry

    async def campaign(self) -> bool:
        """Take or renew the lease once; True if this process leads afterwards."""
        if self._lease is None:
            return True
        if not self._campaign:
            return False
        lease = self._lease
        return await anyio.to_thread.run_sync(lease.acquire)

    async def sync(self, names: Iterable[str] | None = None, *, reason: str, verify: bool = False) -> SyncReport:
        """Run one pass now (after any pass under way) and return its report; a process that
        does not lead runs none (see ``run`` to go through the leader). With ``verify``, the
        bytes of every served version (of ``names``) are checked against their pins after
        the pass, outside its lock: downloads never hold up the next diff."""
        names = sorted(set(names)) if names is not None else None
        async with self._lock:
            if not self.leading:
                holder = self._lease.holder if self._lease is not None else ""
                return SyncReport(error=f"{holder} is not the sync leader; no pass run")
            with self._span("registry.sync", {"gateway.sync.reason": reason, "gateway.sync.all": names is None}):
                report = await anyio.to_thread.run_sync(lambda: self._sync.sync_once(names, reason=reason))
        if verify and report.ok:
            report.merge(await self._verify(names, reason=reason))
        if names is None:
            self._note(report)
        if self._on_synced is not None:
            self._on_synced(report)
        return report

    async def _verify(self, names: list[str] | None, *, reason: str) -> SyncReport:
        def check() -> SyncReport:
            wanted = [v for v in self._sync.drift_candidates() if names is None or v.name in names]
            return self._sync.verify(wanted, reason=reason)

        return await anyio.to_thread.run_sync(check)

    def sync_soon(self, names: Iterable[str] | None, *, reason: str) -> asyncio.Task[SyncReport]:
        """Start a pass in the background (a webhook answers before it finishes)."""
        task = asyncio.create_task(self.sync(names, reason=reason), name=f"sync {reason}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def hint(self, names: Iterable[str] | None, *, reason: str) -> None:
        """Sync soon: here if this process leads, else by queueing it for the leader."""
        if self.leading:
            self.sync_soon(names, reason=reason)
            return
        await self._request(names, reason=reason)

    async def run(
        self, names: Iterable[str] | None, *, reason: str, timeout: float, verify: bool = False
    ) -> SyncReport | None:
        """One pass now, here if this process leads, else by the leader; its report, or None
        when no leader finished it within ``timeout`` (the request stays queued for one)."""
        if self.leading:
            return await self.sync(names, reason=reason, verify=verify)
        request_id = await self._request(names, reason=reason, verify=verify)
        store = self._store
        assert store is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            await asyncio.sleep(_REQUEST_CHECK_SECONDS)
            try:
                request = await anyio.to_thread.run_sync(lambda: store.sync_request(request_id))
            except RegistryError as exc:
                return SyncReport(error=str(exc))
            if request is not None and request.done and request.report is not None:
                return SyncReport.from_dict(request.report)
        return None

    async def _request(self, names: Iterable[str] | None, *, reason: str, verify: bool = False) -> int:
        store = self._store
        if store is None:
            raise RuntimeError("a poller without a lease always leads")
        listed = sorted(set(names)) if names is not None else None
        return await anyio.to_thread.run_sync(
            lambda: store.request_sync(listed, reason=reason, requested_by=self._actor, verify=verify)
        )

    async def _verify_loop(self) -> None:
        """Check the bytes of each served version once per verify interval, spread evenly over
        it (one version at a time): the cost follows what is served, in a steady trickle."""
        while True:
            try:
                candidates = await anyio.to_thread.run_sync(self._sync.drift_candidates) if self.leading else []
            except Exception:  # the loop must outlive a database hiccup
                log.exception("listing the versions to verify failed")
                candidates = []
            if not candidates:
                await asyncio.sleep(min(self._sync.verify_interval, self._interval))
                continue
            spacing = self._sync.verify_interval / len(candidates)
            for version in candidates:
                await asyncio.sleep(spacing)
                if not self.leading:
                    break
                try:
                    report = await anyio.to_thread.run_sync(self._sync.verify, [version])
                except Exception:
                    log.exception("verifying %s failed", version)
                    continue
                if report.refused and self._on_synced is not None:
                    self._on_synced(report)  # the gateways look again: a served version was refused

    async def _campaign_loop(self) -> None:
        while True:
            await asyncio.sleep(self._renew)
            was = self.leading
            try:
                now = await self.campaign()
            except Exception:  # the loop must outlive any one attempt
                log.exception("lease attempt failed")
                continue
            if now and not was:
                self._failures, self._next_allowed = 0, 0.0
                self.sync_soon(None, reason="took the lead")
            elif was and not now:
                log.warning("no longer the sync leader; polling stopped")

    async def _requests_loop(self) -> None:
        store = self._store
        assert store is not None
        while True:
            await asyncio.sleep(self._requests_interval)
            if not self.leading:
                continue
            try:
                await self._serve_requests(store)
            except Exception:  # a bad pass must not end the loop
                log.exception("serving sync requests failed")

    async def _serve_requests(self, store: StateStore) -> None:
        pending = await anyio.to_thread.run_sync(store.pending_sync_requests)
        if not pending:
            return
        whole = any(request.names is None for request in pending)
        names = None if whole else sorted({name for request in pending for name in request.names or []})
        reasons = sorted({f"{request.reason} via {request.requested_by}" for request in pending})
        verify = any(request.verify for request in pending)
        report = await self.sync(names, reason="; ".join(reasons)[:200], verify=verify)
        if not report.ok and not self.leading:
            return  # lost the lead meanwhile: the next leader answers them
        ids = [request.id for request in pending]
        await anyio.to_thread.run_sync(
            lambda: store.finish_sync_requests(ids, report=report.to_dict(), keep=_KEEP_REQUESTS)
        )

    async def _scheduled(self) -> None:
        if not self.leading or time.monotonic() < self._next_allowed:
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
