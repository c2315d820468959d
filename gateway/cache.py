"""An LRU of loaded model versions, bounded by count and by measured bytes.

All bookkeeping happens on the event loop, so it needs no locks: the hit path is a
dict lookup and a counter. Loads run in threads, one per cold version however many
requests want it (a future per loading version; a slow download of one model never
blocks loads or requests of another). A version in use by a request is leased and is
never evicted under it; eviction resumes when the last lease is returned.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from gateway.errors import GatewayError, ModelLoadFailed, ModelTooLarge, ShuttingDown, VersionRefused
from gateway.loader import LoadedModel
from gateway.metrics import GatewayMetrics

log = logging.getLogger(__name__)

Key = tuple[str, int]
LoadFn = Callable[[str, int], LoadedModel]


@dataclass(eq=False)
class _Entry:
    model: LoadedModel
    in_use: int = 0
    last_used: float = field(default_factory=time.time)
    uses: int = 0
    discard: bool = False  # unload as soon as the last lease returns


@dataclass(eq=False)
class _Pending:
    future: asyncio.Future[_Entry]
    waiters: int = 0


@dataclass(frozen=True, slots=True)
class CachedVersion:
    """What operators see of one loaded version."""

    name: str
    version: int
    flavor: str
    size_bytes: int
    load_seconds: float
    loaded_at: float
    last_used: float
    in_use: int
    uses: int


class Lease:
    """The right to use a loaded model until :meth:`release` (idempotent)."""

    __slots__ = ("model", "_cache", "_entry", "_released")

    def __init__(self, cache: ModelCache, entry: _Entry) -> None:
        self.model = entry.model
        self._cache = cache
        self._entry = entry
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._cache._release(self._entry)


class ModelCache:
    def __init__(
        self,
        load: LoadFn,
        *,
        max_models: int,
        max_bytes: int,
        metrics: GatewayMetrics,
        executor: ThreadPoolExecutor,
        load_retry_seconds: float = 0.0,
    ) -> None:
        self._load = load
        self._executor = executor  # loads own their threads: they never starve registry or DB calls
        self.max_models = max_models
        self.max_bytes = max_bytes
        self._metrics = metrics
        self._retry_seconds = load_retry_seconds
        self._entries: OrderedDict[Key, _Entry] = OrderedDict()
        self._pending: dict[Key, _Pending] = {}
        self._failures: dict[Key, tuple[float, GatewayError]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._bytes = 0
        self._closed = False

    # --- the request path ----------------------------------------------------------

    async def acquire(self, name: str, version: int) -> Lease:
        """A lease on the loaded version, loading it first if needed."""
        key = (name, version)
        entry = self._entries.get(key)
        if entry is not None:
            self._metrics.cache_hit(name)
            return self._lease(key, entry)
        if self._closed:
            raise ShuttingDown()
        pending = self._pending.get(key)
        if pending is None:
            self._raise_recent_failure(key)
            self._metrics.cache_miss(name)
            pending = self._start_load(key)
        else:
            self._metrics.cache_hit(name)  # joins a load already under way
        pending.waiters += 1
        try:
            entry = await asyncio.shield(pending.future)
        except asyncio.CancelledError:
            # The loader pre-leased one use for each waiter; give ours back.
            if pending.future.done() and not pending.future.cancelled() and pending.future.exception() is None:
                self._release(pending.future.result())
            else:
                pending.waiters -= 1
            raise
        return Lease(self, entry)

    def _lease(self, key: Key, entry: _Entry) -> Lease:
        self._entries.move_to_end(key)
        entry.in_use += 1
        entry.uses += 1
        entry.last_used = time.time()
        return Lease(self, entry)

    def _release(self, entry: _Entry) -> None:
        entry.in_use -= 1
        if entry.in_use == 0:
            key = (entry.model.name, entry.model.version)
            if entry.discard and self._entries.get(key) is entry:
                self._drop(key, entry)
            self._evict()

    # --- loading -------------------------------------------------------------------

    def _raise_recent_failure(self, key: Key) -> None:
        failure = self._failures.get(key)
        if failure is None:
            return
        failed_at, error = failure
        if time.monotonic() - failed_at < self._retry_seconds:
            raise error.with_traceback(None)  # each raise starts a fresh traceback
        del self._failures[key]

    def _start_load(self, key: Key) -> _Pending:
        pending = _Pending(asyncio.get_running_loop().create_future())
        self._pending[key] = pending
        task = asyncio.create_task(self._run_load(key, pending), name=f"load {key[0]} v{key[1]}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return pending

    async def _run_load(self, key: Key, pending: _Pending) -> None:
        name, version = key
        started = time.perf_counter()
        try:
            try:
                model = await asyncio.get_running_loop().run_in_executor(self._executor, self._load, name, version)
            except GatewayError:
                raise
            except Exception as exc:  # a bug in a loader must still fail only this version
                raise ModelLoadFailed(name, version, f"{type(exc).__name__}: {exc}") from exc
            if model.size_bytes > self.max_bytes:
                raise ModelTooLarge(name, version, size_bytes=model.size_bytes, budget_bytes=self.max_bytes)
        except (GatewayError, asyncio.CancelledError) as exc:
            error = exc if isinstance(exc, GatewayError) else ShuttingDown()
            self._metrics.load_finished(name, version, outcome="failure", seconds=time.perf_counter() - started)
            log.warning("load of %s version %s failed: %s", name, version, error)
            if isinstance(error, VersionRefused):
                self._metrics.refusals.inc()
            # Kept for the retry window without its frames: they would keep the refused
            # model (and the request that asked for it) alive.
            error.__traceback__ = error.__context__ = error.__cause__ = None
            self._failures[key] = (time.monotonic(), error)
            del self._pending[key]
            pending.future.set_exception(error)
            pending.future.exception()  # retrieved: waiters that left must not warn
            return
        self._metrics.load_finished(name, version, outcome="success", seconds=time.perf_counter() - started)
        entry = _Entry(model=model, in_use=pending.waiters, uses=pending.waiters)
        del self._pending[key]
        self._failures.pop(key, None)
        self._entries[key] = entry
        self._bytes += model.size_bytes
        self._update_gauges()
        pending.future.set_result(entry)
        self._evict()

    # --- eviction ------------------------------------------------------------------

    def _over_budget(self) -> bool:
        return len(self._entries) > self.max_models or self._bytes > self.max_bytes

    def _evict(self) -> None:
        if not self._over_budget():
            return
        for key, entry in list(self._entries.items()):  # least recently used first
            if not self._over_budget():
                break
            if entry.in_use:
                continue
            self._drop(key, entry)
            self._metrics.evicted(key[0], key[1])
            log.info("evicted %s version %s (%.1f KiB)", key[0], key[1], entry.model.size_bytes / 1024)
        if self._over_budget():
            log.warning(
                "model cache over budget while every candidate is in use: %d models, %.1f MiB",
                len(self._entries),
                self._bytes / 2**20,
            )

    def discard(self, name: str, version: int) -> bool:
        """Unload a version that must not serve any more (refused after it loaded). One in use
        goes when its last lease returns; requests for it are turned away before the cache."""
        key = (name, version)
        entry = self._entries.get(key)
        if entry is None:
            return False
        if entry.in_use:
            entry.discard = True
            return False
        self._drop(key, entry)
        log.info("unloaded %s version %s: it must not serve", name, version)
        return True

    def _drop(self, key: Key, entry: _Entry) -> None:
        del self._entries[key]
        self._bytes -= entry.model.size_bytes
        self._update_gauges()

    def _update_gauges(self) -> None:
        self._metrics.cache_size(models=len(self._entries), size_bytes=self._bytes)

    # --- what operators and other components see -------------------------------------

    @property
    def loaded_bytes(self) -> int:
        return self._bytes

    def digests(self) -> set[str]:
        """sha256 of every loaded version's artifacts (their blobs must stay on disk).
        Called from loader threads: list() copies the entries in one step under the GIL."""
        return {entry.model.digest for entry in list(self._entries.values())}

    def keys(self) -> list[Key]:
        """Loaded versions, least recently used first."""
        return list(self._entries)

    def get(self, name: str, version: int) -> CachedVersion | None:
        entry = self._entries.get((name, version))
        return None if entry is None else _describe(entry)

    def describe(self) -> list[CachedVersion]:
        return [_describe(entry) for entry in self._entries.values()]

    def last_failure(self, name: str, version: int) -> str | None:
        failure = self._failures.get((name, version))
        return None if failure is None else str(failure[1])

    async def close(self) -> None:
        """Stop loading; drop every version no request holds."""
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            try:
                await task
            except asyncio.CancelledError:
                pass
        for pending in self._pending.values():  # a load cancelled before it began its work
            if not pending.future.done():
                pending.future.set_exception(ShuttingDown())
                pending.future.exception()
        self._pending.clear()
        for key, entry in list(self._entries.items()):
            if not entry.in_use:
                self._drop(key, entry)


def _describe(entry: _Entry) -> CachedVersion:
    model = entry.model
    return CachedVersion(
        name=model.name,
        version=model.version,
        flavor=model.flavor,
        size_bytes=model.size_bytes,
        load_seconds=model.load_seconds,
        loaded_at=model.loaded_at,
        last_used=entry.last_used,
        in_use=entry.in_use,
        uses=entry.uses,
    )
