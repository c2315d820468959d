"""The callers' quotas (``registry_sync/quotas.py``), checked by the gate before a predict and
counted after it (its rows and tokens are known only then).

Where the counts live, and so how far a fleet can overshoot a quota:

- Redis (``GATEWAY_RATE_LIMIT_REDIS`` set, as the rate limits): one counter per quota, caller
  and period, ``INCRBY`` with the key expiring at the period's end. A ``requests`` quota is
  checked and counted in one script: exact across replicas. ``rows`` and ``tokens`` are known
  after the predict, so every request already admitted when the count crosses the amount is
  served: the overshoot is the requests in flight at that moment. Redis failing: the
  database's sums, as below, until it answers again.
- Otherwise the state database's usage sums (read at each usage flush) plus what this process
  counted since (:meth:`taking` keeps them until the sums read after the write include them).
  Every replica sees the others' use one flush late: the overshoot is what the other replicas
  serve in one ``GATEWAY_USAGE_FLUSH_SECONDS`` (plus the requests in flight).

Nothing of this runs for a gateway with no quota defined (the gate skips the check).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import anyio.to_thread

from gateway.errors import QuotaExceeded
from gateway.metrics import GatewayMetrics
from registry_sync.errors import RegistryError
from registry_sync.periodic import Outage
from registry_sync.quotas import GROUP_PREFIX, Quota, QuotaStore
from registry_sync.usage import Tally, UsageStore, day_of, matching

log = logging.getLogger(__name__)

_MAX_CALLERS = 10_000  # callers remembered for group quotas: names are the identity provider's to choose


@dataclass(frozen=True, slots=True)
class Applied:
    """A quota a request was checked against, and the period it counts in: what its count adds to."""

    quota: Quota
    caller: str
    since: str  # the period's first UTC day
    resets: float  # its end, epoch seconds

    @property
    def counter(self) -> tuple[str, str, str]:
        return (self.quota.name, self.caller, self.since)


class QuotaGuard:
    def __init__(
        self,
        quotas: QuotaStore,
        usage: UsageStore,
        metrics: GatewayMetrics,
        *,
        shared: Any = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = quotas
        self._usage = usage
        self._metrics = metrics
        self._shared = shared  # a RedisLimits (gateway.admission.limits), or None
        self._skip_shared_until = 0.0
        self.clock = clock  # tests move it past a period's end
        self.quotas: list[Quota] = []
        self._sums: dict[tuple[str, str, str], Tally] = {}  # the database's, read at the last refresh
        self._from_sums: dict[tuple[str, str, str], int] = {}  # per counter, worked out once a refresh
        self._local: dict[tuple[str, str, str], int] = {}  # counted here since the last flush began
        self._flushing: dict[tuple[str, str, str], int] = {}  # ... and those of the flush under way
        self._callers: set[str] = set()  # who group quotas applied to here: whose sums to read
        self._adds: set[asyncio.Task[None]] = set()
        self._outage = Outage(log, "could not read the quotas (keeping those read before)", "reading the quotas again")

    def applying(self, caller: str, groups: tuple[str, ...], model: str) -> list[Applied]:
        """The quotas that bound this caller's use of ``model`` now, each with its period."""
        found = []
        now = self.clock()
        for quota in self.quotas:
            if quota.applies(caller, groups, model):
                start, end = quota.window(now)
                found.append(Applied(quota, caller, start.strftime("%Y-%m-%d"), end.timestamp()))
                if quota.caller.startswith(GROUP_PREFIX) and caller not in self._callers:
                    if len(self._callers) >= _MAX_CALLERS:
                        self._callers.clear()
                    self._callers.add(caller)
        return found

    async def check(self, caller: str, groups: tuple[str, ...], model: str) -> list[Applied]:
        """The quotas that apply, none used up (else QuotaExceeded naming the first that is)."""
        applied = self.applying(caller, groups, model)
        if not applied:
            return applied
        if self._shared is not None and time.monotonic() >= self._skip_shared_until:
            try:
                index, used = await self._shared.quota_check(
                    [self._key(a) for a in applied],
                    [a.quota.amount for a in applied],
                    [1 if a.quota.unit == "requests" else 0 for a in applied],
                    [int(a.resets * 1000) for a in applied],
                )
            except Exception as exc:  # Redis down: the database's sums meanwhile
                self._metrics.limits_redis_error()
                self._skip_shared_until = time.monotonic() + 1.0
                log.debug("quota check in Redis failed: %s", exc)
            else:
                if index:
                    self._refuse(applied[index - 1], used)
                return applied
        for a in applied:
            used = self.used(a)
            if used >= a.quota.amount:
                self._refuse(a, used)
        return applied

    def _refuse(self, applied: Applied, used: int) -> None:
        self._metrics.limited("quota")
        quota = applied.quota
        raise QuotaExceeded(
            quota.name,
            description=quota.describe(),
            amount=quota.amount,
            used=used,
            resets_at=quota.window(self.clock())[1],
            now=self.clock(),
        )

    def _key(self, applied: Applied) -> str:
        name, caller, since = applied.counter
        return f"quota:{name}:{caller}:{since}"

    def used(self, applied: Applied) -> int:
        """What the caller used under a quota this period, as far as this process knows."""
        counter = applied.counter
        base = self._from_sums.get(counter)
        if base is None:
            quota = applied.quota
            base = matching(self._sums, applied.caller, quota.models, applied.since).amount(quota.unit)
            self._from_sums[counter] = base
        return base + self._local.get(counter, 0) + self._flushing.get(counter, 0)

    def counted(self, applied: Iterable[Applied], *, rows: int, tokens: int) -> None:
        """A request checked against ``applied`` was answered (on the event loop)."""
        for a in applied:
            unit = a.quota.unit
            amount = 1 if unit == "requests" else rows if unit == "rows" else tokens
            if amount:
                self._local[a.counter] = self._local.get(a.counter, 0) + amount
                if self._shared is not None and unit != "requests":  # a request was counted at its check
                    self._add_shared(a, amount)

    def _add_shared(self, applied: Applied, amount: int) -> None:
        task = asyncio.get_running_loop().create_task(
            self._shared.quota_add(self._key(applied), amount, int(applied.resets * 1000))
        )
        self._adds.add(task)  # a reference until it is done
        task.add_done_callback(self._adds.discard)

    def taking(self) -> None:
        """A usage flush begins: what was counted here goes with it, and is still counted here
        until the sums read after its write (:meth:`refresh`) include it."""
        for counter, amount in self._local.items():
            self._flushing[counter] = self._flushing.get(counter, 0) + amount
        self._local = {}

    def not_written(self) -> None:
        """The flush failed: its counts stay this process's own until the next one."""
        for counter, amount in self._flushing.items():
            self._local[counter] = self._local.get(counter, 0) + amount
        self._flushing = {}

    async def refresh(self) -> None:
        """Read the quotas and the database's usage sums of the callers they bound."""
        try:
            quotas = await anyio.to_thread.run_sync(self._store.quotas)
            callers = {q.caller for q in quotas if not q.caller.startswith(GROUP_PREFIX)} | self._callers
            now = self.clock()
            since = min((q.window(now)[0].strftime("%Y-%m-%d") for q in quotas), default=day_of(now))
            sums = await anyio.to_thread.run_sync(lambda: self._usage.sums(callers, since=since)) if quotas else {}
        except RegistryError as exc:
            self._outage.failed(exc)
            return
        self._outage.passed()
        self.quotas, self._sums, self._from_sums, self._flushing = quotas, sums, {}, {}

    async def close(self) -> None:
        await asyncio.gather(*self._adds, return_exceptions=True)
