"""Which versions exist and where each alias points, as this process serves them.

The catalog holds the state database's latest snapshot (versions seen, pinned digests,
refusals, routes) and this process's *served* version of each warm alias, which moves
only when the reconciler has loaded and warmed the new target. Requests resolve
against memory: neither MLflow nor the database being down stops them.

A selector that misses (an unknown model, version or alias) may be something registered
a moment ago: the catalog asks the sync to look at that model now, at most once a
second per model and a few at a time, before answering 404.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import anyio.to_thread

from gateway.errors import (
    AliasNotFound,
    ModelNotFound,
    NoReadyVersion,
    VersionNotFound,
    VersionNotReady,
    VersionRefused,
)
from gateway.wire.selectors import Selector
from registry_sync.identity import VersionId
from registry_sync.repository import RouteState, Snapshot, StateStore, StateUnavailable, VersionState
from registry_sync.traffic import ModelTraffic

log = logging.getLogger(__name__)

LookAgain = Callable[[str], Awaitable[None]]
TakeOver = Callable[[str, str], Awaitable[None]]
"""Have a warm alias this process does not hold swapped to here (name, alias), and wait."""
_LOOK_AGAIN_SECONDS = 1.0
_MAX_LOOKS = 4  # look-agains in flight at once; more misses answer from what is known
_REMEMBERED_LOOKS = 4096
_MISSES = (ModelNotFound, VersionNotFound, AliasNotFound, NoReadyVersion, VersionNotReady)


@dataclass(frozen=True, slots=True)
class Resolved:
    """A selector turned into one concrete version: the registry's, with its identity."""

    id: VersionId
    alias: str | None
    route: str | None = None
    """For a request that named no version: ``default`` or ``canary`` (gateway.routing.traffic)."""
    fallback: Resolved | None = None
    """A canary's default version: it answers instead if the canary was unloaded meanwhile."""
    unheld: bool = False
    """A warm alias this process does not serve warm yet: the request takes it over first."""

    @property
    def name(self) -> str:
        return self.id.name

    @property
    def version(self) -> int:
        return self.id.version


@dataclass(frozen=True, slots=True)
class ModelView:
    name: str
    aliases: dict[str, int]  # as this process serves them
    registry_aliases: dict[str, int]  # as MLflow sets them
    versions: dict[int, VersionState]  # deleted ones excluded

    @property
    def latest_ready(self) -> int | None:
        ready = [v for v, state in self.versions.items() if state.ready and not state.refused_reason]
        return max(ready) if ready else None


class Catalog:
    def __init__(
        self,
        store: StateStore,
        *,
        warm_aliases: Iterable[str],
        look_again: LookAgain | None = None,
    ) -> None:
        self._store = store
        self.warm_aliases = frozenset(warm_aliases)
        self._look_again = look_again
        self._snapshot = Snapshot(generation=-1, versions={}, routes={})
        self._by_model: dict[str, tuple[dict[int, VersionState], list[RouteState]]] = {}
        # What each warm alias serves in this process, and served before: versions by identity,
        # so a number the registry re-created is a new version to swap to, not the one held.
        self._served: dict[tuple[str, str], VersionId] = {}
        self._previous: dict[tuple[str, str], VersionId] = {}
        # Selectors resolved since the snapshot or a warm alias last changed: a request's
        # resolution is a dict lookup (found only, so bounded by the registry's versions and
        # aliases; misses are resolved each time). Cleared by _install, flip and adopt, the
        # only writers of what _resolve reads.
        self._resolved: dict[tuple[str, Selector], Resolved] = {}
        self._looked: OrderedDict[str, float] = OrderedDict()
        self._looks = asyncio.Semaphore(_MAX_LOOKS)
        self._refreshing = asyncio.Lock()
        self._take_over: TakeOver | None = None

    def take_over_with(self, take_over: TakeOver) -> None:
        """Who swaps a warm alias this process does not hold when a request names it (the
        reconciler); without one, such a request is served what the fleet served last."""
        self._take_over = take_over

    # --- following the database ------------------------------------------------------

    @property
    def generation(self) -> int:
        return self._snapshot.generation

    async def refresh(self) -> bool:
        """Read the database if its generation moved; True when something changed."""
        async with self._refreshing:
            try:
                generation = await anyio.to_thread.run_sync(self._store.generation)
                if generation == self._snapshot.generation:
                    return False
                snapshot = await anyio.to_thread.run_sync(self._store.snapshot)
            except StateUnavailable as exc:
                log.warning("state database unavailable; serving from generation %d: %s", self.generation, exc)
                return False
            self._install(snapshot)
            return True

    def _install(self, snapshot: Snapshot) -> None:
        # Indexed by model once per generation: a request looks at its own model only.
        by_model: dict[str, tuple[dict[int, VersionState], list[RouteState]]] = {}
        for (name, version), state in snapshot.versions.items():
            if not state.deleted:
                by_model.setdefault(name, ({}, []))[0][version] = state
        for (name, _), route in snapshot.routes.items():
            by_model.setdefault(name, ({}, []))[1].append(route)
        self._snapshot, self._by_model = snapshot, by_model
        self._resolved = {}

    def warm_routes(self) -> list[RouteState]:
        return [route for route in self._snapshot.routes.values() if route.alias in self.warm_aliases]

    def refused(self, name: str, version: int) -> bool:
        state = self._snapshot.versions.get((name, version))
        return state is not None and state.refused_reason is not None

    def current_id(self, name: str, version: int) -> VersionId | None:
        """The identity the registry has under this number now (None: none, or deleted)."""
        state = self._snapshot.versions.get((name, version))
        return None if state is None or state.deleted else state.id

    def is_current(self, version: VersionId) -> bool:
        """Still the registry's version under its number: not deleted, not re-created."""
        state = self._snapshot.versions.get((version.name, version.version))
        return state is not None and not state.deleted and state.id.same_version(version)

    def state(self, name: str, version: int) -> VersionState | None:
        """The version under this number, unless deleted."""
        state = self._snapshot.versions.get((name, version))
        return None if state is None or state.deleted else state

    def split(self, name: str) -> ModelTraffic | None:
        """The model's traffic split as the state database has it (None: no split)."""
        return self._snapshot.traffic.get(name)

    def splits(self) -> list[ModelTraffic]:
        return list(self._snapshot.traffic.values())

    def route(self, name: str, alias: str) -> RouteState | None:
        return self._snapshot.routes.get((name, alias))

    def served_version(self, route: RouteState) -> int:
        if route.alias not in self.warm_aliases:
            return route.version
        held = self._served.get((route.name, route.alias))
        if held is not None:
            return held.version
        # Not swapped in this process yet: what the gateways served last, else the target.
        return route.active_version if route.active_version is not None else route.version

    def current(self, name: str, alias: str) -> int | None:
        """What this process serves for a warm alias, if it served it before (else None)."""
        held = self._served.get((name, alias))
        if held is not None:
            return held.version
        route = self.route(name, alias)
        return route.active_version if route is not None else None

    def flip(self, name: str, alias: str, version: VersionId) -> VersionId | None:
        """Serve ``version`` for a warm alias from now on; returns what served before."""
        previous = self._served.get((name, alias))
        self._served[(name, alias)] = version
        self._resolved = {}
        if previous is not None and previous != version:
            self._previous[(name, alias)] = previous
        return previous

    def held(self, name: str, alias: str) -> VersionId | None:
        """The version this process swapped to (or adopted) for a warm alias, if any."""
        return self._served.get((name, alias))

    def served_aliases(self) -> dict[VersionId, list[str]]:
        """The warm aliases this process serves, by the version each serves (the fleet report's)."""
        by_version: dict[VersionId, list[str]] = {}
        for (_, alias), version in sorted(self._served.items()):
            by_version.setdefault(version, []).append(alias)
        return by_version

    def previous(self, name: str, alias: str) -> VersionId | None:
        """The version this alias served before the current one, in this process."""
        return self._previous.get((name, alias))

    def adopt(self, name: str, alias: str, version: VersionId) -> None:
        """Take the database's served version as this process's own (at startup)."""
        self._served.setdefault((name, alias), version)
        self._resolved = {}

    def release(self, name: str, alias: str) -> None:
        """Stop serving a warm alias from what this process swapped to: its next request takes
        it over at its target (a move this process did not follow must not leave it serving
        the version before)."""
        if self._served.pop((name, alias), None) is not None:
            self._resolved = {}

    # --- reading ---------------------------------------------------------------------

    def model_names(self) -> list[str]:
        return sorted(name for name, (versions, _) in self._by_model.items() if versions)

    def model(self, name: str) -> ModelView:
        found = self._by_model.get(name)
        if found is None:
            raise ModelNotFound(name)
        versions, routes = found
        return ModelView(
            name=name,
            aliases={route.alias: self.served_version(route) for route in routes},
            registry_aliases={route.alias: route.version for route in routes},
            versions=versions,
        )

    def knows(self, name: str) -> bool:
        return name in self._by_model

    async def resolve(
        self, name: str, selector: Selector, *, look_again: bool = True, take_over: bool = True
    ) -> Resolved:
        """The version ``selector`` means now; ``look_again=False`` answers a miss from memory.
        A warm alias this process does not hold is taken over first (the request waits), unless
        ``take_over=False``: a read (a listing, a status page) is answered what the alias would
        serve and loads nothing."""
        try:
            resolved = self._resolve(name, selector)
        except _MISSES:
            if not look_again or not await self.look_again(name):
                raise
            resolved = self._resolve(name, selector)
        if resolved.unheld and take_over and self._take_over is not None:
            await self._take_over(name, resolved.alias or "")
            resolved = self._resolve(name, selector)
        return resolved

    async def look_again(self, name: str) -> bool:
        """Have the sync read ``name`` from the registry now; False if it could not try."""
        if self._look_again is None or self._looks.locked():
            return False
        async with self._looks:
            last = self._looked.get(name)
            if last is not None and (wait := _LOOK_AGAIN_SECONDS - (time.monotonic() - last)) > 0:
                await asyncio.sleep(wait)  # once a second per model: garbage cannot hammer MLflow
            self._looked[name] = time.monotonic()
            self._looked.move_to_end(name)
            while len(self._looked) > _REMEMBERED_LOOKS:
                self._looked.popitem(last=False)
            await self._look_again(name)
            await self.refresh()
        return True

    def _resolve(self, name: str, selector: Selector) -> Resolved:
        resolved = self._resolved.get((name, selector))
        if resolved is None:
            resolved = self._resolved[(name, selector)] = self._resolve_now(name, selector)
        return resolved

    def _resolve_now(self, name: str, selector: Selector) -> Resolved:
        model = self.model(name)
        if selector.kind == "latest":
            latest = model.latest_ready
            if latest is None:
                raise NoReadyVersion(name)
            return Resolved(model.versions[latest].id, None)
        alias = selector.alias
        if alias is not None:
            version = model.aliases.get(alias)
            if version is None:
                raise AliasNotFound(name, alias)
            if version not in model.versions:
                # What this process served was deleted: the registry's target, never the gone one.
                version = model.registry_aliases[alias]
        else:
            assert selector.version is not None
            version = selector.version
        state = model.versions.get(version)
        if state is None:
            raise VersionNotFound(name, version)
        if state.refused_reason:
            raise VersionRefused(name, version, state.refused_reason)
        if not state.ready:
            raise VersionNotReady(name, version, state.status)
        unheld = alias is not None and alias in self.warm_aliases and (name, alias) not in self._served
        return Resolved(state.id, alias, unheld=unheld)
