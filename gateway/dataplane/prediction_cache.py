"""Answers of deterministic versions, kept by (version sha256, media type, request body).

The sha256 is the version's pinned artifact digest, so a cached answer can only ever be
served for the very bytes that computed it: a new version, or bytes that changed, miss.
``memory`` keeps answers in this process (LRU by bytes); ``redis://`` shares them between
replicas. A cache that fails (Redis down, slow) is a miss, never an error: predictions
go on without it, and the failure is counted and logged now and then.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from typing import Protocol

from gateway.metrics import GatewayMetrics

log = logging.getLogger(__name__)

_KEY_PREFIX = "registry-gateway:prediction:"
_REDIS_TIMEOUT_SECONDS = 0.25  # a cache slower than this costs more than it saves
_LOG_EVERY_SECONDS = 60.0


def cache_key(digest: str, media_type: str, body: bytes) -> str:
    hashed = hashlib.sha256(body).hexdigest()
    return f"{_KEY_PREFIX}{digest}:{media_type}:{hashed}"


class PredictionCache(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    def put(self, key: str, value: bytes) -> None:
        """Keep an answer; never makes the request wait (Redis writes in the background)."""

    async def flush(self) -> None:
        """Wait for writes under way."""

    async def close(self) -> None: ...


class MemoryCache:
    """LRU of answers in this process, bounded by their bytes."""

    def __init__(self, max_bytes: int, metrics: GatewayMetrics) -> None:
        self._max_bytes = max_bytes
        self._entries: OrderedDict[str, bytes] = OrderedDict()
        self._bytes = 0
        self._metrics = metrics

    async def get(self, key: str) -> bytes | None:
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        self._metrics.prediction_cache(hit=value is not None)
        return value

    def put(self, key: str, value: bytes) -> None:
        size = len(key) + len(value)
        if size > self._max_bytes:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= len(key) + len(old)
        self._entries[key] = value
        self._bytes += size
        while self._bytes > self._max_bytes:
            evicted_key, evicted = self._entries.popitem(last=False)
            self._bytes -= len(evicted_key) + len(evicted)

    async def flush(self) -> None:
        return None

    async def close(self) -> None:
        self._entries.clear()
        self._bytes = 0


class RedisCache:
    """Answers in Redis with a time to live, shared by every replica that points at it."""

    def __init__(self, url: str, *, ttl_seconds: int, metrics: GatewayMetrics) -> None:
        import redis.asyncio

        self._client = redis.asyncio.Redis.from_url(
            url,
            socket_timeout=_REDIS_TIMEOUT_SECONDS,
            socket_connect_timeout=_REDIS_TIMEOUT_SECONDS,
            retry_on_timeout=False,
        )
        self._ttl = ttl_seconds
        self._metrics = metrics
        self._last_logged = 0.0
        self._writes: set[asyncio.Task[None]] = set()

    async def get(self, key: str) -> bytes | None:
        try:
            value = await self._client.get(key)
        except Exception as exc:  # redis raises its own tree, OSError and timeouts
            self._failed("get", exc)
            return None
        self._metrics.prediction_cache(hit=value is not None)
        return value if isinstance(value, bytes) else None

    def put(self, key: str, value: bytes) -> None:
        task = asyncio.get_running_loop().create_task(self._set(key, value))
        self._writes.add(task)  # a reference until it is done
        task.add_done_callback(self._writes.discard)

    async def _set(self, key: str, value: bytes) -> None:
        try:
            await self._client.set(key, value, ex=self._ttl)
        except Exception as exc:
            self._failed("set", exc)

    async def flush(self) -> None:
        await asyncio.gather(*self._writes, return_exceptions=True)

    async def close(self) -> None:
        await self.flush()
        await self._client.aclose()

    def _failed(self, operation: str, exc: Exception) -> None:
        self._metrics.prediction_cache_error()
        now = time.monotonic()
        if now - self._last_logged >= _LOG_EVERY_SECONDS:
            self._last_logged = now
            log.warning("prediction cache %s failed (serving without it): %s: %s", operation, type(exc).__name__, exc)


def make_cache(setting: str, *, max_bytes: int, ttl_seconds: int, metrics: GatewayMetrics) -> PredictionCache | None:
    """The cache GATEWAY_PREDICTION_CACHE asks for (already validated by the settings)."""
    if setting == "off":
        return None
    if setting == "memory":
        return MemoryCache(max_bytes, metrics)
    return RedisCache(setting, ttl_seconds=ttl_seconds, metrics=metrics)
