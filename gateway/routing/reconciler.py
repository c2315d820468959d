"""Follow the state database and swap warm aliases blue-green in this process.

When the database says a warm alias (``GATEWAY_WARM_ALIASES``) now points at another
version, the reconciler fetches, verifies and loads that version, warms it with a real
predict, and only then flips the alias in memory. Requests already on the old version
finish on it (they hold leases); the old version becomes an ordinary LRU entry. If any
step fails the old version keeps serving and an event says why.

Canaries and shadows (``gateway.routing.traffic``) are warmed the same way before they take any
traffic: loaded, verified and warmed with a predict, then marked warm in the split; one that
was unloaded since is warmed again (meanwhile its share stays on the default version).

Every replica swaps on its own and records its swap as an event; it does not bump the
database's generation (the sync owns it), so replicas never set each other following.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import anyio.to_thread

from gateway.dataplane.cache import ModelCache
from gateway.dataplane.inference import score
from gateway.dataplane.warmup import warmup_request
from gateway.errors import GatewayError
from gateway.metrics import GatewayMetrics
from gateway.observability.tracing import Tracing
from gateway.routing.catalog import Catalog
from gateway.routing.traffic import TrafficSplit
from registry_sync.errors import RegistryError
from registry_sync.identity import VersionId
from registry_sync.repository import EventKind, RouteState, StateStore

log = logging.getLogger(__name__)

RETRY_SECONDS = 30.0  # a failed swap is tried again after this, or at once on the next change
MAX_WAIT_ROUNDS = 8  # reconcile(wait=True): swaps that leave their alias due again, followed this often


class Reconciler:
    def __init__(
        self,
        catalog: Catalog,
        cache: ModelCache,
        store: StateStore,
        *,
        executor: ThreadPoolExecutor,
        metrics: GatewayMetrics,
        follow_interval_seconds: float,
        actor: str,
        split: TrafficSplit | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self._catalog = catalog
        self._cache = cache
        self._store = store
        self._executor = executor
        self._metrics = metrics
        self._interval = follow_interval_seconds
        self._actor = actor
        self._swaps: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._poke = asyncio.Event()
        self._dirty = False
        # Failed swaps wait before trying again (when, and the version that failed), unless
        # the alias moves meanwhile.
        self._retry_at: dict[tuple[str, str], tuple[float, VersionId]] = {}
        self._loop: asyncio.Task[None] | None = None
        self._split = split
        self._tracing = tracing or Tracing.off()
        self._warming: dict[VersionId, asyncio.Task[None]] = {}
        self._warm_retry_at: dict[VersionId, float] = {}

    async def start(self) -> None:
        """Serve what the database says was served, warmed, before the process is ready."""
        await self._catalog.refresh()
        adopted = []
        for route in self._catalog.warm_routes():
            active = self._catalog.current_id(route.name, route.active_version) if route.active_version else None
            if active is not None:
                self._catalog.adopt(route.name, route.alias, active)
                adopted.append(route)
        await asyncio.gather(*(self._warm_existing(route) for route in adopted))
        await self.reconcile(wait=True)
        self._loop = asyncio.create_task(self._follow(), name="reconciler")

    async def stop(self) -> None:
        tasks = [t for t in (self._loop, *self._swaps.values(), *self._warming.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def unwarmed(self) -> list[str]:
        """Warm aliases (``name@alias``) this process does not serve warm at their target yet."""
        return sorted(f"{r.name}@{r.alias}" for r in self._catalog.warm_routes() if self._due(r) is not None)

    def _due(self, route: RouteState) -> VersionId | None:
        """The version this warm alias must be swapped to here, or None when nothing is due."""
        target = self._target(route)
        if target is None or self._catalog.held(route.name, route.alias) == target:
            # Warmed here already (this very version: a number the registry re-created is
            # another). Not "the database says it is active": with replicas, another process
            # recording its swap must not spare this one the warm-up.
            return None
        return target

    def poke(self) -> None:
        """Look at the database now (the sync just wrote to it)."""
        self._poke.set()

    async def settle(self) -> None:
        """Wait for the swaps and canary warm-ups under way (tests and the admin endpoint use it)."""
        while self._swaps or self._warming:
            await asyncio.gather(*self._swaps.values(), *self._warming.values(), return_exceptions=True)

    async def _follow(self) -> None:
        while True:
            try:
                # asyncio.timeout, not wait_for: 3.11's wait_for can swallow the cancel at shutdown
                async with asyncio.timeout(self._interval):
                    await self._poke.wait()
            except TimeoutError:
                pass
            self._poke.clear()
            try:
                changed = await self._catalog.refresh()
                due = any(when <= time.monotonic() for when, _ in self._retry_at.values())
                if changed:
                    self._forget_retries_of_moved_aliases()
                if self._canaries_due():
                    due = True  # a canary unloaded (evicted) since it was warmed: warm it again
                if changed or self._dirty or due:
                    self._dirty = False
                    await self.reconcile()
            except Exception:  # the follower must outlive any one bad pass
                log.exception("reconcile pass failed")

    async def reconcile(self, *, wait: bool = False, retry_now: bool = False) -> None:
        """Start a swap for each warm alias whose served version is not its target.

        With ``wait``, also wait until none is due: a swap that ends may leave its alias due
        again (its version was refused while it loaded and flipped), and that swap back is
        waited for too. Failed swaps are retried only in the first round (``retry_now``)."""
        self._start_due(retry_now=retry_now)
        if not wait:
            return
        for _ in range(MAX_WAIT_ROUNDS):
            await self.settle()
            if not self._start_due(retry_now=False):
                return

    def _start_due(self, *, retry_now: bool) -> bool:
        """Start what is due; True when anything is under way (swaps, canary warm-ups)."""
        for loaded in self._cache.keys():
            if self._catalog.refused(loaded.name, loaded.version) or not self._catalog.is_current(loaded):
                self._cache.discard(loaded)  # refused, deleted or re-created after it loaded: never again
        for route in self._catalog.warm_routes():
            key = (route.name, route.alias)
            if key in self._swaps:
                continue  # when it ends, _swap_done looks again
            if not retry_now and self._retry_at.get(key, (0.0, None))[0] > time.monotonic():
                continue
            target = self._due(route)
            if target is None:
                continue
            task = asyncio.create_task(self._swap(route, target), name=f"swap {route.name}@{route.alias}")
            self._swaps[key] = task
            task.add_done_callback(functools.partial(self._swap_done, key))
        self._warm_canaries()
        return bool(self._swaps or self._warming)

    def _canaries_due(self) -> list[VersionId]:
        """Canary and shadow versions to warm here now: not warm (or unloaded), not warming,
        not waiting to retry a failure."""
        if self._split is None:
            return []
        now = time.monotonic()
        return [
            version
            for version in self._split.targets()
            if not self._split.ready(version)
            and version not in self._warming
            and self._warm_retry_at.get(version, 0.0) <= now
        ]

    def _warm_canaries(self) -> None:
        for version in self._canaries_due():
            task = asyncio.create_task(self._warm_canary(version), name=f"warm {version}")
            self._warming[version] = task
            task.add_done_callback(lambda _, v=version: self._warming.pop(v, None))  # type: ignore[misc]

    async def _warm_canary(self, version: VersionId) -> None:
        assert self._split is not None
        self._split.forget([version])
        try:
            await self._load_and_warm(version)
        except (GatewayError, RegistryError) as exc:
            self._warm_retry_at[version] = time.monotonic() + RETRY_SECONDS
            reason = f"canary version {version.version} could not be warmed, it takes no traffic here: {exc}"
            log.warning("%s %s", version.name, reason)
            await self._record(EventKind.FAILED, version.name, version=version.version, reason=reason)
            return
        self._warm_retry_at.pop(version, None)
        self._split.mark_warm(version)

    def _target(self, route: RouteState) -> VersionId | None:
        """Where a warm alias should be: MLflow's target, unless that is refused; then, if
        what it serves was refused too, the last good version it served (None: stay put)."""
        if not self._catalog.refused(route.name, route.version):
            return self._catalog.current_id(route.name, route.version)
        served = self._catalog.served_version(route)
        if not self._catalog.refused(route.name, served) and self._catalog.current_id(route.name, served):
            return None  # the 'refused' event already says why it stays
        fallback = self._catalog.previous(route.name, route.alias)
        if fallback is None or self._catalog.refused(route.name, fallback.version):
            return None
        return fallback if self._catalog.is_current(fallback) else None

    def _forget_retries_of_moved_aliases(self) -> None:
        """A failed swap is tried again at once when its alias moved on (not for other changes,
        such as the pin that very swap wrote)."""
        for key, (_, failed) in list(self._retry_at.items()):
            route = self._catalog.route(*key)
            if route is None or self._target(route) != failed:
                del self._retry_at[key]

    def _swap_done(self, key: tuple[str, str], task: asyncio.Task[None]) -> None:
        if self._swaps.get(key) is task:
            del self._swaps[key]
        route = self._catalog.route(*key)
        failed = key in self._retry_at
        if route is not None and not failed and self._due(route) is not None:
            self._dirty = True  # the alias moved again while we swapped: go round once more
            self.poke()

    async def _swap(self, route: RouteState, target: VersionId) -> None:
        name, alias = route.name, route.alias
        previous = self._catalog.current(name, alias)
        try:
            await self._load_and_warm(target)
        except (GatewayError, RegistryError) as exc:
            self._metrics.swap_finished(name, outcome="failure")
            reason = (
                f"swap of alias '{alias}' to version {target.version} failed, version {previous} keeps serving: {exc}"
            )
            log.warning("%s %s", name, reason)
            self._retry_at[(name, alias)] = (time.monotonic() + RETRY_SECONDS, target)
            await self._record(EventKind.FAILED, name, version=target.version, alias=alias, reason=reason)
            return
        self._retry_at.pop((name, alias), None)
        if self._catalog.refused(name, target.version) or not self._catalog.is_current(target):
            self._cache.discard(target)  # refused or re-created while it loaded: the reconcile after says why
            return
        before = self._catalog.flip(name, alias, target)
        note = "a new version under the same number" if before is not None and before.version == target.version else ""
        self._metrics.swap_finished(name, outcome="success")
        log.info("%s alias %s now serves version %s (was %s)", name, alias, target.version, previous)
        try:
            await anyio.to_thread.run_sync(
                lambda: self._store.set_active(
                    name, alias, target.version, previous=previous, actor=self._actor, note=note
                )
            )
        except RegistryError as exc:
            log.warning("could not record the swap of %s@%s: %s", name, alias, exc)

    async def _warm_existing(self, route: RouteState) -> None:
        held = self._catalog.held(route.name, route.alias)
        assert held is not None
        try:
            await self._load_and_warm(held)
        except (GatewayError, RegistryError) as exc:
            reason = f"could not warm version {held.version} of alias '{route.alias}' at startup: {exc}"
            await self._record(EventKind.FAILED, route.name, version=held.version, alias=route.alias, reason=reason)

    async def _load_and_warm(self, version: VersionId) -> None:
        lease = await self._cache.acquire(version)
        try:
            request = warmup_request(lease.model)
            if request is not None:
                body, media_type = request
                loop = asyncio.get_running_loop()
                attributes = {"gateway.model": version.name, "gateway.version": version.version}
                with self._tracing.span("model.warmup", attributes):
                    await loop.run_in_executor(self._executor, score, lease.model, body, media_type)
        finally:
            lease.release()
        await self._record(
            EventKind.WARMED,
            version.name,
            version=version.version,
            reason="warmed with a predict" if request is not None else "loaded (nothing to warm with)",
        )

    async def _record(self, kind: EventKind, name: str, **fields: object) -> None:
        try:
            await anyio.to_thread.run_sync(
                lambda: self._store.record(kind, name, actor=self._actor, **fields)  # type: ignore[arg-type]
            )
        except RegistryError as exc:
            log.warning("could not record %s event for %s: %s", kind.value, name, exc)
