"""Follow the state database and swap warm aliases blue-green in this process.

When the database says a warm alias (``GATEWAY_WARM_ALIASES``) now points at another
version, the reconciler fetches, verifies and loads that version, warms it with a real
predict, and only then flips the alias in memory. Requests already on the old version
finish on it (they hold leases); the old version becomes an ordinary LRU entry. If any
step fails the old version keeps serving and an event says why.

Canaries and shadows (``gateway.routing.traffic``) are warmed the same way before they take any
traffic: loaded, verified and warmed with a predict, then marked warm in the split; one that
was unloaded since is warmed again (meanwhile its share stays on the default version).

Which aliases a process warms at all is the warm rule's (gateway.fleet.warming): at start,
what fits of every warm alias (a lone ``serve``) or only what its replica served lately (a
fleet's replica); while running, the moves of the models it holds or served lately. A warm
alias it does not hold is taken over on its first request (:meth:`Reconciler.take`): the
request waits for the same swap, and if that fails, for the version the fleet last served.

Every replica swaps on its own and records its swap as an event; it does not bump the
database's generation (the sync owns it), so replicas never set each other following.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import anyio.to_thread

from gateway.admission.limits import LoadBudget
from gateway.dataplane.cache import ModelCache
from gateway.dataplane.inference import score
from gateway.dataplane.warmup import warmup_request
from gateway.errors import GatewayError
from gateway.fleet.membership import Membership
from gateway.fleet.warming import StartPlan, WarmRule, plan_start
from gateway.metrics import GatewayMetrics
from gateway.observability.repeats import Failing, Repeats
from gateway.observability.tracing import Tracing
from gateway.routing.catalog import Catalog
from gateway.routing.traffic import TrafficSplit
from registry_sync.errors import RegistryError
from registry_sync.fleet import Served
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
        membership: Membership | None = None,
        load_budget: LoadBudget | None = None,
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
        # What each failing swap (and canary warm-up) said when it was told: a retry that fails
        # the same way writes no event and no WARNING (gateway.observability.repeats).
        self._failing: Repeats[tuple[str, str]] = Repeats()
        self._failing_canaries: Repeats[VersionId] = Repeats()
        self._loop: asyncio.Task[None] | None = None
        self._split = split
        self._tracing = tracing or Tracing.off()
        self._warming: dict[VersionId, asyncio.Task[None]] = {}
        self._warm_retry_at: dict[VersionId, float] = {}
        self._membership = membership
        self._load_budget = load_budget  # a warm alias taken over by a request is that request's cold load
        self.rule = WarmRule("aliases", "not started", 0.0)
        self.plan: StartPlan | None = None
        self._starting: set[str] = set()  # models the start plan warms: followed while it runs
        self._adopted: list[RouteState] = []  # the warm aliases plan_start held, for warm_start
        self._catalog.take_over_with(self.take)

    async def start(self, rule: WarmRule, history: list[Served] | None = None) -> StartPlan:
        """Warm what the rule says before the process is ready: the warm aliases the start plan
        chose at the version the database says was served (then swapped to their target if it
        moved), and the versions this replica served lately."""
        plan = await self.plan_start(rule, history)
        await self.warm_start()
        return plan

    async def plan_start(self, rule: WarmRule, history: list[Served] | None = None) -> StartPlan:
        """start's first half: read the catalog, choose what to warm, and hold the warm aliases
        it warms at the version the database says was served. From here on a request can be
        answered: one for a version being warmed joins its load (the cache loads a version
        once), one for a warm alias not held takes it over (:meth:`take`)."""
        self.rule = rule
        await self._catalog.refresh()
        plan = plan_start(
            rule,
            routes=self._catalog.warm_routes(),
            target=self._planned,
            history=history or [],
            current=self._servable,
            max_models=self._cache.max_models,
            max_bytes=self._cache.max_bytes,
        )
        self.plan, self._starting = plan, plan.models
        log.info("warm rule %s; at start: %s", rule.describe(), plan.summary)
        adopted = []
        for route in plan.aliases:
            active = self._catalog.current_id(route.name, route.active_version) if route.active_version else None
            if active is not None:
                self._catalog.adopt(route.name, route.alias, active)
                adopted.append(route)
        self._adopted = adopted
        return plan

    async def warm_start(self) -> None:
        """start's second half: load and warm what plan_start chose, then follow the database."""
        plan, adopted = self.plan, self._adopted
        assert plan is not None, "plan_start first"
        await asyncio.gather(
            *(self._warm_existing(route) for route in adopted), *(self._warm_served(v) for v in plan.versions)
        )
        await self.reconcile(wait=True)
        self._starting = set()
        self._adopted = []
        self._loop = asyncio.create_task(self._follow(), name="reconciler")

    async def stop(self) -> None:
        tasks = [t for t in (self._loop, *self._swaps.values(), *self._warming.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def unwarmed(self) -> list[str]:
        """Warm aliases (``name@alias``) this process serves, or warms at start, that are not warm
        at their target yet (the others are taken over by their first request)."""
        return sorted(
            f"{r.name}@{r.alias}"
            for r in self._catalog.warm_routes()
            if (
                r.name in self._starting
                or (r.name, r.alias) in self._swaps
                or self._catalog.held(r.name, r.alias) is not None
            )
            and self._due(r) is not None
        )

    async def take(self, name: str, alias: str) -> None:
        """A request for a warm alias this process does not hold: swap it to its target now and
        wait (once however many requests wait: they share the swap); if that fails, serve the
        version the fleet served last for it, when that one may serve. The model's canaries are
        warmed and waited for too."""
        route = self._catalog.route(name, alias)
        if route is None or self._catalog.held(name, alias) is not None:
            return
        key = (name, alias)
        task = self._swaps.get(key)
        if task is None:
            target = self._target(route)
            failed = self._retry_at.get(key)
            recently_failed = failed is not None and failed[0] > time.monotonic() and failed[1] == target
            if target is not None and not recently_failed:
                if self._load_budget is not None and not self._cache.holds(target):
                    self._load_budget.take(name, target.version)  # LoadsThrottled: 503, nothing started
                task = self._start_swap(route, target)
        if task is not None:
            await asyncio.shield(task)  # a request that gives up does not stop the swap
        if self._catalog.held(name, alias) is None:
            fallback = self._fallback(route)
            if fallback is not None:
                self._catalog.adopt(name, alias, fallback)
                self.poke()  # the alias is held now: it is due again when its target can serve
        # Its canaries too, before the request is answered: a key lands on the same version on
        # every replica, so one that takes a model over serves its split from the first request
        # (a canary's share would otherwise stay on the default version until it warmed here).
        self._warm_canaries(lambda model: model == name)
        warming = [task for version, task in self._warming.items() if version.name == name]
        if warming:
            await asyncio.shield(asyncio.gather(*warming, return_exceptions=True))

    def _fallback(self, route: RouteState) -> VersionId | None:
        """What the fleet served last for a warm alias, if it may serve and is not the version
        that just failed here."""
        if route.active_version is None or self._catalog.refused(route.name, route.active_version):
            return None
        active = self._catalog.current_id(route.name, route.active_version)
        failed = self._retry_at.get((route.name, route.alias))
        return None if active is None or (failed is not None and failed[1] == active) else active

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
                    await self._forget_retries_of_moved_aliases()
                if self._canaries_due(self._followed()):
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
        followed = self._followed()
        for route in self._catalog.warm_routes():
            key = (route.name, route.alias)
            if key in self._swaps:
                continue  # when it ends, _swap_done looks again
            if not retry_now and self._retry_at.get(key, (0.0, None))[0] > time.monotonic():
                continue
            target = self._due(route)
            if target is None:
                continue
            if not followed(route.name):
                # Not held, not served lately, no room: not loaded for nobody. A request takes
                # it over (take), never the version this process happened to serve before.
                self._catalog.release(route.name, route.alias)
                continue
            self._start_swap(route, target)
        self._warm_canaries(followed)
        return bool(self._swaps or self._warming)

    def _start_swap(self, route: RouteState, target: VersionId) -> asyncio.Task[None]:
        key = (route.name, route.alias)
        task = asyncio.create_task(self._swap(route, target), name=f"swap {route.name}@{route.alias}")
        self._swaps[key] = task
        task.add_done_callback(functools.partial(self._swap_done, key))
        return task

    def _followed(self) -> Callable[[str], bool]:
        """Whose warm-alias moves and canaries this process follows now (the warm rule): models
        it holds, served lately or is warming at start, and, under ``aliases``, any while the
        cache has room for one more without evicting."""
        models = {key.name for key in self._cache.keys()} | self._starting
        if self._membership is not None:
            models |= self._membership.served_lately()

        def followed(name: str) -> bool:
            if name in models:
                return True
            under_way = len(self._swaps) + len(self._warming)
            return self.rule.mode == "aliases" and self._cache.has_room(also_coming=under_way)

        return followed

    def _canaries_due(self, followed: Callable[[str], bool]) -> list[VersionId]:
        """Canary and shadow versions to warm here now: of a model this process follows, not warm
        (or unloaded), not warming, not waiting to retry a failure."""
        if self._split is None:
            return []
        now = time.monotonic()
        return [
            version
            for version in self._split.targets()
            if not self._split.ready(version)
            and version not in self._warming
            and self._warm_retry_at.get(version, 0.0) <= now
            and followed(version.name)
        ]

    def _warm_canaries(self, followed: Callable[[str], bool]) -> None:
        for version in self._canaries_due(followed):  # of models served elsewhere: their share stays on the default
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
            if self._failing_canaries.news(version, str(exc)):
                _tell(version.name, reason, exc)
                await self._record(EventKind.FAILED, version.name, version=version.version, reason=reason)
            else:
                log.info("%s canary version %s failed to warm again, as told", version.name, version.version)
            return
        self._warm_retry_at.pop(version, None)
        failing = self._failing_canaries.clear(version)
        if failing is not None:
            await self._record(
                EventKind.RECOVERED,
                version.name,
                version=version.version,
                reason=f"canary version {version.version} warmed, {failing.told()}",
            )
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

    async def _forget_retries_of_moved_aliases(self) -> None:
        """A failed swap is tried again at once when its alias moved on (not for other changes,
        such as the pin that very swap wrote); the failure it was in is over."""
        for key, (_, failed) in list(self._retry_at.items()):
            route = self._catalog.route(*key)
            if route is None or self._target(route) != failed:
                del self._retry_at[key]
                failing = self._failing.clear(key)
                if failing is not None:
                    name, alias = key
                    reason = f"alias '{alias}' no longer waits for version {failed.version}: {failing.told()}"
                    await self._record(EventKind.RECOVERED, name, version=failed.version, alias=alias, reason=reason)

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
            self._retry_at[(name, alias)] = (time.monotonic() + RETRY_SECONDS, target)
            if self._failing.news((name, alias), reason):
                _tell(name, reason, exc)
                await self._record(EventKind.FAILED, name, version=target.version, alias=alias, reason=reason)
            else:
                log.info("%s swap of alias '%s' to version %s failed again, as told", name, alias, target.version)
            return
        self._retry_at.pop((name, alias), None)
        failing = self._failing.clear((name, alias))
        if failing is not None:
            reason = f"alias '{alias}' can move to version {target.version} now: {failing.told()}"
            await self._record(EventKind.RECOVERED, name, version=target.version, alias=alias, reason=reason)
        if self._catalog.refused(name, target.version) or not self._catalog.is_current(target):
            self._cache.discard(target)  # refused or re-created while it loaded: the reconcile after says why
            return
        before = self._catalog.flip(name, alias, target)
        if self._membership is not None:
            self._membership.report_soon()  # the fleet's view of who serves what: now, not a beat later
        note = "a new version under the same number" if before is not None and before.version == target.version else ""
        self._metrics.swap_finished(name, outcome="success")
        was = f"was {previous}" if previous is not None else "first served here"
        log.info("%s alias %s now serves version %s (%s)", name, alias, target.version, was)
        try:
            await anyio.to_thread.run_sync(
                lambda: self._store.set_active(
                    name, alias, target.version, previous=previous, actor=self._actor, note=note
                )
            )
        except RegistryError as exc:
            log.warning("could not record the swap of %s@%s: %s", name, alias, exc)

    def _planned(self, route: RouteState) -> VersionId | None:
        """The version a warm alias will serve once warm here: its target, else what it serves."""
        return self._target(route) or self._catalog.current_id(route.name, self._catalog.served_version(route))

    def _servable(self, version: VersionId) -> VersionId | None:
        """The registry's version under a served version's number, if it is still that version
        and may serve (ready, not refused)."""
        state = self._catalog.state(version.name, version.version)
        if state is None or not state.ready or state.refused_reason or not state.id.same_version(version):
            return None
        return state.id

    async def _warm_served(self, version: VersionId) -> None:
        try:
            await self._load_and_warm(version)
        except (GatewayError, RegistryError) as exc:
            reason = f"could not warm version {version.version}, served here before the restart: {exc}"
            _tell(version.name, reason, exc)
            await self._record(EventKind.FAILED, version.name, version=version.version, reason=reason)

    async def _warm_existing(self, route: RouteState) -> None:
        held = self._catalog.held(route.name, route.alias)
        assert held is not None
        try:
            await self._load_and_warm(held)
        except (GatewayError, RegistryError) as exc:
            reason = f"could not warm version {held.version} of alias '{route.alias}' at startup: {exc}"
            _tell(route.name, reason, exc)
            await self._record(EventKind.FAILED, route.name, version=held.version, alias=route.alias, reason=reason)

    async def _load_and_warm(self, version: VersionId) -> None:
        lease = await self._cache.acquire(version, serving=False)
        try:
            request = warmup_request(lease.model)
            if request is not None:
                body, media_type = request
                loop = asyncio.get_running_loop()
                attributes = {"gateway.model": version.name, "gateway.version": version.version}
                with self._tracing.span("model.warmup", attributes):
                    await loop.run_in_executor(
                        lease.model.calls_on(self._executor), score, lease.model, body, media_type
                    )
        finally:
            lease.release()
        await self._record(
            EventKind.WARMED,
            version.name,
            version=version.version,
            reason="warmed with a predict" if request is not None else "loaded (nothing to warm with)",
        )

    def failing(self, name: str, alias: str) -> Failing | None:
        """The failure that keeps this warm alias from its target here, if one does."""
        return self._failing.get((name, alias))

    async def _record(self, kind: EventKind, name: str, **fields: object) -> None:
        try:
            await anyio.to_thread.run_sync(
                lambda: self._store.record(kind, name, actor=self._actor, **fields)  # type: ignore[arg-type]
            )
        except RegistryError as exc:
            log.warning("could not record %s event for %s: %s", kind.value, name, exc)


def _tell(name: str, reason: str, exc: Exception) -> None:
    """A warm-up's failure at WARNING, once: at INFO where the cache told it already (the load
    was a request's, which this warm-up joined). Told, the error stays quiet where it is met again."""
    if isinstance(exc, GatewayError):
        told, exc.told = exc.told, True
    else:
        told = False
    log.log(logging.INFO if told else logging.WARNING, "%s %s", name, reason)
