"""Rate and concurrency limits of keys and models, and the budget of cold loads.

A rate is a token bucket: ``rate`` tokens a second, holding at most ``max(rate, 1)`` (the
burst), one token a request. A concurrency cap counts requests in flight. A request is
checked against every limit that applies to it (its key's, its model's) at once and counted
against none unless it passes all of them.

In-process (:class:`LocalLimits`) the check runs on the event loop, with no await between
check and count. Shared (:class:`RedisLimits`, ``GATEWAY_RATE_LIMIT_REDIS``), it is one Lua
script per check, atomic in Redis and on Redis's clock, over keys named by the state
database's deployment id (replicas on one database share them; another deployment or a test
never does). Redis failing is never the caller's problem: :class:`Limiter` counts in-process
instead (limits then hold per process) for a second before trying Redis again, and counts
the failure in ``gateway_limits_redis_errors``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.errors import LoadsThrottled, RateLimited
from gateway.metrics import GatewayMetrics

log = logging.getLogger(__name__)

_REDIS_TIMEOUT_SECONDS = 0.25  # a limit slower than this costs more than it protects
_REDIS_RETRY_SECONDS = 1.0  # after a failure, count in-process this long before trying Redis again
_LOG_EVERY_SECONDS = 60.0
_CONCURRENCY_RETRY_AFTER = 1


@dataclass(frozen=True, slots=True)
class Limit:
    """One limit a request is checked against: ``kind`` is ``key`` or ``model``."""

    kind: str
    subject: str
    rate: float | None = None
    concurrency: int | None = None

    @property
    def burst(self) -> float:
        return max(self.rate or 0.0, 1.0)

    def refusal(self, what: str, retry_after: float) -> RateLimited:
        label = f"{self.kind} '{self.subject}'"
        if what == "rate":
            detail = f"the rate limit ({self.rate:g} requests/s, bursts of {self.burst:g})"
        else:
            detail = f"the concurrency cap ({self.concurrency} requests in flight)"
        return RateLimited(
            f"{self.kind}_{what}", subject=label, detail=detail, retry_after=max(1, math.ceil(retry_after))
        )


class Permit(Protocol):
    def release(self) -> None:
        """Give back the concurrency slots taken (idempotent)."""


class _NoPermit:
    def release(self) -> None:
        return None


NO_PERMIT: Permit = _NoPermit()


# --- in this process -------------------------------------------------------------------


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class _LocalPermit:
    __slots__ = ("_limits", "_subjects")

    def __init__(self, limits: LocalLimits, subjects: list[tuple[str, str]]) -> None:
        self._limits: LocalLimits | None = limits
        self._subjects = subjects

    def release(self) -> None:
        if self._limits is not None:
            self._limits._release(self._subjects)
            self._limits = None


class LocalLimits:
    """Limits counted in this process. ``clock`` is for tests that step time by hand."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._in_flight: dict[tuple[str, str], int] = {}

    def acquire(self, limits: list[Limit]) -> Permit:
        """Count a request against every limit, or none and RateLimited naming the first used up."""
        now = self._clock()
        refills: list[tuple[_Bucket, float]] = []
        for limit in limits:
            subject = (limit.kind, limit.subject)
            if limit.rate is not None:
                bucket = self._buckets.get(subject)
                tokens = (
                    limit.burst if bucket is None else min(limit.burst, bucket.tokens + (now - bucket.at) * limit.rate)
                )
                if tokens < 1:
                    raise limit.refusal("rate", (1 - tokens) / limit.rate)
                if bucket is None:
                    bucket = self._buckets[subject] = _Bucket(tokens, now)
                refills.append((bucket, tokens))
            if limit.concurrency is not None and self._in_flight.get(subject, 0) >= limit.concurrency:
                raise limit.refusal("concurrency", _CONCURRENCY_RETRY_AFTER)
        for bucket, tokens in refills:
            bucket.tokens, bucket.at = tokens - 1, now
        taken = [(limit.kind, limit.subject) for limit in limits if limit.concurrency is not None]
        if not taken:
            return NO_PERMIT
        for subject in taken:
            self._in_flight[subject] = self._in_flight.get(subject, 0) + 1
        return _LocalPermit(self, taken)

    def _release(self, subjects: list[tuple[str, str]]) -> None:
        for subject in subjects:
            left = self._in_flight.get(subject, 0) - 1
            if left > 0:
                self._in_flight[subject] = left
            else:
                self._in_flight.pop(subject, None)

    def in_flight(self, kind: str, subject: str) -> int:
        return self._in_flight.get((kind, subject), 0)


# --- shared through Redis ----------------------------------------------------------------

# KEYS: per limit, its bucket then its in-flight set. ARGV: now unused slots are "0";
# per limit rate, concurrency; then the request's token and how long (ms) an in-flight entry
# lives if its process dies before giving it back. Returns {0, 0}, or {index of the limit
# (1-based), 1 for rate or 2 for concurrency, milliseconds until retry}.
_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local count = #KEYS / 2
local token = ARGV[2 * count + 1]
local lease = tonumber(ARGV[2 * count + 2])
local fresh = {}
for i = 1, count do
  local rate = tonumber(ARGV[2 * i - 1])
  local concurrency = tonumber(ARGV[2 * i])
  if rate > 0 then
    local burst = math.max(rate, 1)
    local state = redis.call('HMGET', KEYS[2 * i - 1], 'tokens', 'at')
    local tokens = tonumber(state[1])
    local at = tonumber(state[2])
    if tokens == nil or at == nil then tokens = burst else
      tokens = math.min(burst, tokens + math.max(0, now - at) * rate / 1000) end
    if tokens < 1 then return {i, 1, math.ceil((1 - tokens) * 1000 / rate)} end
    fresh[i] = tokens
  end
  if concurrency > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[2 * i], '-inf', now)
    if redis.call('ZCARD', KEYS[2 * i]) >= concurrency then return {i, 2, 1000} end
  end
end
for i = 1, count do
  local rate = tonumber(ARGV[2 * i - 1])
  if rate > 0 then
    redis.call('HSET', KEYS[2 * i - 1], 'tokens', tostring(fresh[i] - 1), 'at', now)
    redis.call('PEXPIRE', KEYS[2 * i - 1], math.ceil(math.max(rate, 1) / rate * 1000) + 1000)
  end
  if tonumber(ARGV[2 * i]) > 0 then
    redis.call('ZADD', KEYS[2 * i], now + lease, token)
    redis.call('PEXPIRE', KEYS[2 * i], lease)
  end
end
return {0, 0, 0}
"""


# Quotas (gateway.admission.quotas). KEYS: a counter per quota. ARGV: per quota its amount,
# what the check itself adds (1 for a quota in requests, else 0) and when the counter expires
# (epoch ms: its period's end). Returns {0, 0}, or {index of the first used up (1-based), its count}.
_QUOTA_SCRIPT = """
for i = 1, #KEYS do
  local used = tonumber(redis.call('GET', KEYS[i]) or '0')
  if used >= tonumber(ARGV[3 * i - 2]) then return {i, used} end
end
for i = 1, #KEYS do
  if tonumber(ARGV[3 * i - 1]) > 0 then
    redis.call('INCRBY', KEYS[i], ARGV[3 * i - 1])
    redis.call('PEXPIREAT', KEYS[i], ARGV[3 * i])
  end
end
return {0, 0}
"""


class _RedisPermit:
    __slots__ = ("_limits", "_keys", "_token")

    def __init__(self, limits: RedisLimits, keys: list[str], token: str) -> None:
        self._limits: RedisLimits | None = limits
        self._keys = keys
        self._token = token

    def release(self) -> None:
        if self._limits is not None:
            self._limits._release(self._keys, self._token)
            self._limits = None


class RedisLimits:
    def __init__(self, url: str, *, namespace: str, lease_seconds: float) -> None:
        import redis.asyncio

        self._client: Any = redis.asyncio.Redis.from_url(
            url,
            socket_timeout=_REDIS_TIMEOUT_SECONDS,
            socket_connect_timeout=_REDIS_TIMEOUT_SECONDS,
            retry_on_timeout=False,
        )
        self._script = self._client.register_script(_SCRIPT)
        self._quota_script = self._client.register_script(_QUOTA_SCRIPT)
        # One hash tag for every key: a Redis Cluster keeps them in one slot, as a script needs.
        self._prefix = f"registry-gateway:{{{namespace}}}:limit:"
        self._lease_ms = int(lease_seconds * 1000)
        self._releases: set[asyncio.Task[None]] = set()
        self.on_release_error: Callable[[Exception], None] = lambda exc: None

    def _keys(self, limit: Limit) -> tuple[str, str]:
        base = f"{self._prefix}{limit.kind}:{limit.subject}"
        return f"{base}:rate", f"{base}:in-flight"

    async def acquire(self, limits: list[Limit]) -> Permit:
        keys: list[str] = []
        args: list[str | int | float] = []
        for limit in limits:
            keys.extend(self._keys(limit))
            args.extend((limit.rate or 0, limit.concurrency or 0))
        token = uuid.uuid4().hex
        index, what, wait_ms = await self._script(keys=keys, args=[*args, token, self._lease_ms])
        if index:
            limit = limits[int(index) - 1]
            raise limit.refusal("rate" if int(what) == 1 else "concurrency", int(wait_ms) / 1000)
        taken = [keys[2 * i + 1] for i, limit in enumerate(limits) if limit.concurrency is not None]
        return _RedisPermit(self, taken, token) if taken else NO_PERMIT

    async def quota_check(
        self, names: list[str], amounts: list[int], adds: list[int], expire_ms: list[int]
    ) -> tuple[int, int]:
        """Whether every quota counter is under its amount, each counting what its check adds
        if so: (0, 0), or (index of the first used up, 1-based; its count)."""
        args: list[int] = []
        for amount, add, expires in zip(amounts, adds, expire_ms, strict=True):
            args.extend((amount, add, expires))
        index, used = await self._quota_script(keys=[self._prefix + name for name in names], args=args)
        return int(index), int(used)

    async def quota_add(self, name: str, amount: int, expire_ms: int) -> None:
        """Count rows or tokens to a quota counter, after the predict (failures only logged)."""
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.incrby(self._prefix + name, amount)
                pipe.pexpireat(self._prefix + name, expire_ms)
                await pipe.execute()
        except Exception as exc:
            self.on_release_error(exc)

    def _release(self, keys: list[str], token: str) -> None:
        task = asyncio.get_running_loop().create_task(self._remove(keys, token))
        self._releases.add(task)  # a reference until it is done
        task.add_done_callback(self._releases.discard)

    async def _remove(self, keys: list[str], token: str) -> None:
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.zrem(key, token)
                await pipe.execute()
        except Exception as exc:  # the entry expires on its own
            self.on_release_error(exc)

    async def close(self) -> None:
        await asyncio.gather(*self._releases, return_exceptions=True)
        await self._client.aclose()


# --- the limiter a gateway uses ------------------------------------------------------------


class Limiter:
    """In-process limits, or Redis's with in-process ones whenever Redis fails."""

    def __init__(self, metrics: GatewayMetrics, *, shared: RedisLimits | None = None) -> None:
        self._metrics = metrics
        self.local = LocalLimits()
        self._shared = shared
        self._skip_shared_until = 0.0
        self._last_logged = 0.0
        if shared is not None:
            shared.on_release_error = lambda exc: self._failed("release", exc)

    async def acquire(self, limits: list[Limit]) -> Permit:
        if self._shared is not None and time.monotonic() >= self._skip_shared_until:
            try:
                return await self._shared.acquire(limits)
            except RateLimited:
                raise
            except Exception as exc:  # redis raises its own tree, OSError and timeouts
                self._failed("check", exc)
                self._skip_shared_until = time.monotonic() + _REDIS_RETRY_SECONDS
        return self.local.acquire(limits)

    def _failed(self, operation: str, exc: Exception) -> None:
        self._metrics.limits_redis_error()
        now = time.monotonic()
        if now - self._last_logged >= _LOG_EVERY_SECONDS:
            self._last_logged = now
            log.warning(
                "rate limit %s in Redis failed (limits count in each process meanwhile): %s: %s",
                operation,
                type(exc).__name__,
                exc,
            )

    async def close(self) -> None:
        if self._shared is not None:
            await self._shared.close()


# --- cold loads --------------------------------------------------------------------------


@dataclass
class LoadBudget:
    """At most ``per_minute`` cold loads a minute in this process (a token bucket with a burst
    of as many), so that a loop over cold versions cannot thrash the model cache."""

    per_minute: int
    metrics: GatewayMetrics
    clock: Callable[[], float] = time.monotonic
    _tokens: float = field(init=False)
    _at: float = field(init=False)

    def __post_init__(self) -> None:
        self._tokens, self._at = float(self.per_minute), self.clock()

    def take(self, name: str, version: int) -> None:
        """Count one cold load of this version, or LoadsThrottled."""
        now = self.clock()
        rate = self.per_minute / 60
        self._tokens = min(float(self.per_minute), self._tokens + (now - self._at) * rate)
        self._at = now
        if self._tokens < 1:
            self.metrics.load_throttled()
            wait = max(1, math.ceil((1 - self._tokens) / rate))
            raise LoadsThrottled(name, version, per_minute=self.per_minute, retry_after=wait)
        self._tokens -= 1
