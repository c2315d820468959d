"""An LRU of loaded model versions, bounded by count and by measured bytes.

All bookkeeping happens on the event loop, so it needs no locks: the hit path is a
dict lookup and a counter. Loads run in threads, one per cold version however many
requests want it (a future per loading version; a slow download of one model never
blocks loads or requests of another). A version in use by a request is leased and is
never evicted under it; eviction resumes when the last lease is returned.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from gateway.admission.limits import LoadBudget
from gateway.dataplane import frozen, heap
from gateway.dataplane.loader import LoadedModel
from gateway.errors import GatewayError, ModelLoadFailed, ModelTooLarge, ShuttingDown, VersionRefused
from gateway.metrics import GatewayMetrics
from gateway.observability.repeats import Repeats
from gateway.sizes import readable
from registry_sync.identity import VersionId

log = logging.getLogger(__name__)

_RESERVE_TIMEOUT = 30.0  # seconds a load waits for the event loop to make room
_COLLECT_DELAY = 0.5  # seconds after an unload before the collection
_COLLECT_SPACING = 5.0  # seconds at least between two of them...
_COLLECT_NOW_SHARE = 0.25  # ...unless models of this share of the budget wait to be freed

Key = VersionId  # by identity: a re-created version under an old number is another entry
Reserve = Callable[[int], None]
"""Called by a load, from its thread, with an estimate of the memory it is about to take (its
verified files' size) before it loads them: the cache makes room first, or raises."""
LoadFn = Callable[[VersionId, Reserve], LoadedModel]


@dataclass(eq=False)
class _Entry:
    model: LoadedModel
    in_use: int = 0
    last_used: float = field(default_factory=time.time)
    last_served: float | None = None  # a request's last use (warm-ups do not count)
    uses: int = 0
    discard: bool = False  # unload as soon as the last lease returns


@dataclass(eq=False)
class _Pending:
    future: asyncio.Future[_Entry]
    waiters: int = 0
    warm: bool = False  # started by a warm-up, which tells a failure itself (with what it was for)


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
    last_served: float | None  # when a request last used it (None: only loaded or warmed)
    in_use: int
    uses: int
    fast: bool  # the fast path serves the bodies it reads; else pyfunc serves them all
    path_reason: str  # why (LoadedModel.fast_reason)
    device_bytes: int = 0  # what it holds on its GPU (LoadedModel.device_bytes)


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
        self._failures_told: Repeats[Key] = Repeats()  # a retry failing alike is logged quietly
        self._tasks: set[asyncio.Task[None]] = set()
        self._bytes = 0
        self._reserved: dict[Key, int] = {}  # loads under way: what each estimated it will take
        self._reserved_bytes = 0
        self._closed = False
        self._collecting = False  # a collection after unloading is scheduled or just ran
        self._uncollected = 0  # bytes of models unloaded since the last collection
        self._urgent = False  # a collection out of turn is scheduled
        self._thaw = False  # a model alive at the freeze was unloaded: the next collection thaws

    # --- the request path ----------------------------------------------------------

    async def acquire(self, key: VersionId, *, budget: LoadBudget | None = None, serving: bool = True) -> Lease:
        """A lease on the loaded version, loading it first if needed; a load this starts is
        counted against ``budget`` (LoadsThrottled when it is spent). ``serving``: for a
        request (what a replica served, and warms again after a restart); False for a warm-up."""
        name = key.name
        entry = self._entries.get(key)
        if entry is not None:
            self._metrics.cache_hit(name)
            return self._lease(key, entry, serving)
        if self._closed:
            raise ShuttingDown()
        pending = self._pending.get(key)
        if pending is None:
            self._raise_recent_failure(key)
            if budget is not None:
                budget.take(name, key.version)
            self._metrics.cache_miss(name)
            pending = self._start_load(key, warm=not serving)
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
        if serving:
            entry.last_served = time.time()
        return Lease(self, entry)

    def _lease(self, key: Key, entry: _Entry, serving: bool) -> Lease:
        self._entries.move_to_end(key)
        entry.in_use += 1
        entry.uses += 1
        entry.last_used = now = time.time()
        if serving:
            entry.last_served = now
        return Lease(self, entry)

    def _release(self, entry: _Entry) -> None:
        entry.in_use -= 1
        if entry.in_use == 0:
            key = entry.model.id
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

    def _start_load(self, key: Key, *, warm: bool) -> _Pending:
        pending = _Pending(asyncio.get_running_loop().create_future(), warm=warm)
        self._pending[key] = pending
        task = asyncio.create_task(self._run_load(key, pending), name=f"load {key.name} v{key.version}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return pending

    async def _run_load(self, key: Key, pending: _Pending) -> None:
        name, version = key.name, key.version
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        try:
            try:
                model = await loop.run_in_executor(self._executor, self._load, key, self._reserver(loop, key))
            except GatewayError:
                raise
            except Exception as exc:  # a bug in a loader must still fail only this version
                raise ModelLoadFailed(name, version, f"{type(exc).__name__}: {exc}") from exc
            if model.size_bytes > self.max_bytes:
                raise ModelTooLarge(name, version, size_bytes=model.size_bytes, budget_bytes=self.max_bytes)
        except (GatewayError, asyncio.CancelledError) as exc:
            self._release_reservation(key)
            error = exc if isinstance(exc, GatewayError) else ShuttingDown()
            self._metrics.load_finished(name, version, outcome="failure", seconds=time.perf_counter() - started)
            if not self._failures_told.news(key, str(error)):
                log.info("load of %s version %s failed again, as logged before", name, version)
                error.told = True
            elif pending.warm:
                log.info("load of %s version %s for a warm-up failed (the warm-up tells it): %s", name, version, error)
            else:
                log.warning("load of %s version %s failed: %s", name, version, error)
                error.told = True
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
        self._release_reservation(key)  # the measured size takes the estimate's place
        entry = _Entry(model=model, in_use=pending.waiters, uses=pending.waiters)
        del self._pending[key]
        self._failures.pop(key, None)
        self._failures_told.clear(key)
        self._entries[key] = entry
        self._bytes += model.size_bytes
        if model.placement is not None:
            self._metrics.runtime_loaded(name, version, model.placement)
        self._update_gauges()
        pending.future.set_result(entry)
        self._evict()

    def _reserver(self, loop: asyncio.AbstractEventLoop, key: Key) -> Reserve:
        """The ``reserve`` a load of ``key`` calls from its thread: the bookkeeping happens on
        the event loop, like all of the cache's, and the load waits until room is made."""

        def reserve(estimate: int) -> None:
            made: concurrent.futures.Future[None] = concurrent.futures.Future()
            try:
                loop.call_soon_threadsafe(self._reserve, key, estimate, made)
            except RuntimeError as exc:  # the loop is closed: the process is stopping
                raise ShuttingDown() from exc
            made.result(timeout=_RESERVE_TIMEOUT)

        return reserve

    def _reserve(self, key: Key, estimate: int, made: concurrent.futures.Future[None]) -> None:
        """Count a coming load against the budget before it happens, evicting idle versions
        to make room: several cold loads at once cannot overshoot the budget together."""
        if made.done():
            return
        if estimate > self.max_bytes:
            made.set_exception(ModelTooLarge(key.name, key.version, size_bytes=estimate, budget_bytes=self.max_bytes))
            return
        self._reserved[key] = estimate
        self._reserved_bytes += estimate
        self._evict()
        made.set_result(None)

    def _release_reservation(self, key: Key) -> None:
        self._reserved_bytes -= self._reserved.pop(key, 0)

    # --- eviction ------------------------------------------------------------------

    def _over_budget(self) -> bool:
        return len(self._entries) > self.max_models or self._bytes + self._reserved_bytes > self.max_bytes

    def _evict(self) -> None:
        if not self._over_budget():
            return
        for key, entry in list(self._entries.items()):  # least recently used first
            if not self._over_budget():
                break
            if entry.in_use:
                continue
            self._drop(key, entry)
            self._metrics.evicted(key.name, key.version)
            log.info("evicted %s (%s)", key, readable(entry.model.size_bytes))
        if self._over_budget():
            log.warning(
                "model cache over budget while every candidate is in use: %d models, %.1f MiB",
                len(self._entries),
                (self._bytes + self._reserved_bytes) / 2**20,
            )

    def discard(self, key: VersionId) -> bool:
        """Unload a version that must not serve any more (refused after it loaded, deleted or
        re-created in the registry). One in use goes when its last lease returns; requests for
        it are turned away before the cache."""
        entry = self._entries.get(key)
        if entry is None:
            return False
        if entry.in_use:
            entry.discard = True
            return False
        self._drop(key, entry)
        log.info("unloaded %s: it must not serve", key)
        return True

    def unload_idle(self, older_than: float, *, which: Callable[[LoadedModel], bool]) -> list[Key]:
        """Unload the versions ``which`` picks that no request used for ``older_than`` seconds
        and none holds now (a worker's versions: its worker stops with the last); a request
        for one later loads it again."""
        now = time.time()
        gone = []
        for key, entry in list(self._entries.items()):
            if not entry.in_use and now - entry.last_used >= older_than and which(entry.model):
                self._drop(key, entry)
                gone.append(key)
                log.info("unloaded %s: idle for %.0f s", key, now - entry.last_used)
        return gone

    def _drop(self, key: Key, entry: _Entry) -> None:
        del self._entries[key]
        self._bytes -= entry.model.size_bytes
        # The version's batching queue points back at the model: without this, the two would
        # live on as a reference cycle until a full collection, which the serving GC
        # thresholds make rare (RSS grew by the size of each evicted model).
        entry.model.queue = None
        placement = entry.model.placement
        if placement is not None:
            self._metrics.runtime_unloaded(key.name, key.version, placement)
        try:
            entry.model.unload()  # a worker's version: its worker unloads it (and stops when it held the last)
        except Exception:
            log.exception("unloading %s failed", key)
        self._uncollected += entry.model.size_bytes
        if frozen.may_be_frozen(entry.model.loaded_at):
            self._thaw = True  # its cycles sit in the permanent generation, out of gc's reach
        self._update_gauges()
        self._collect_soon()

    def _collect_soon(self) -> None:
        """A full collection shortly after unloading, for cycles inside a model's own libraries
        (torch.export's programs have them; refcounting frees the rest at once). Between
        requests rather than inside one; at most one every ``_COLLECT_SPACING`` seconds, unless
        unloaded models worth ``_COLLECT_NOW_SHARE`` of the budget wait for it: under fast churn
        they would otherwise pile up in RSS for seconds."""
        if self._closed:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if not self._collecting:
            self._collecting = True
            loop.call_later(_COLLECT_DELAY, self._collect)
        elif not self._urgent and self._uncollected >= _COLLECT_NOW_SHARE * self.max_bytes:
            self._urgent = True
            loop.call_soon(self._collect, False)

    def _collect(self, scheduled: bool = True) -> None:
        if self._closed:  # scheduled before close: the gc is the process's, not a closed cache's
            return
        started = time.perf_counter()
        self._uncollected, self._urgent = 0, False
        thaw, self._thaw = self._thaw, False
        found = frozen.collect(thaw=thaw)  # thaw: rare (a warm alias moved)
        heap.trim()
        log.debug("collected %d objects after unloading in %.1f ms", found, (time.perf_counter() - started) * 1000)
        if scheduled:
            asyncio.get_running_loop().call_later(_COLLECT_SPACING, self._collect_done)

    def _collect_done(self) -> None:
        self._collecting = False
        if self._uncollected or self._thaw:  # unloaded while the last one was spaced out
            self._collect_soon()

    def _update_gauges(self) -> None:
        self._metrics.cache_size(models=len(self._entries), size_bytes=self._bytes)

    # --- what operators and other components see -------------------------------------

    @property
    def loaded_bytes(self) -> int:
        return self._bytes

    def has_room(self, *, estimate: int = 0, also_coming: int = 0) -> bool:
        """Whether one more version (``estimate`` bytes, 0 when unknown) fits without evicting
        anything, counting loads under way and ``also_coming`` more that will be."""
        models = len(self._entries) + len(self._pending) + also_coming + 1
        return models <= self.max_models and self._bytes + self._reserved_bytes + estimate <= self.max_bytes

    def digests(self) -> set[str]:
        """sha256 of every loaded version's artifacts (their blobs must stay on disk).
        Called from loader threads: list() copies the entries in one step under the GIL."""
        return {entry.model.digest for entry in list(self._entries.values())}

    def keys(self) -> list[Key]:
        """Loaded versions, least recently used first."""
        return list(self._entries)

    def holds(self, key: VersionId) -> bool:
        """Loaded here (a cheap check for the request path; ``get`` describes the entry)."""
        return key in self._entries

    def peek(self, key: VersionId) -> LoadedModel | None:
        """The loaded model, to look at what it is; no lease: never predict with it."""
        entry = self._entries.get(key)
        return None if entry is None else entry.model

    def get(self, key: VersionId) -> CachedVersion | None:
        entry = self._entries.get(key)
        return None if entry is None else _describe(entry)

    def describe(self) -> list[CachedVersion]:
        return [_describe(entry) for entry in self._entries.values()]

    def last_failure(self, key: VersionId) -> str | None:
        failure = self._failures.get(key)
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
        last_served=entry.last_served,
        in_use=entry.in_use,
        uses=entry.uses,
        fast=model.fast is not None,
        path_reason=model.fast_reason,
        device_bytes=model.device_bytes,
    )
