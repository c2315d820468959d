"""Which version answers a default-route request: the default one, or a canary.

The split comes from the state database (``registry_sync.traffic``: version tags, taken by
the sync). A canary takes its share only once it is loaded, verified and warmed in this
process (the reconciler warms the versions :meth:`TrafficSplit.targets` names, as it warms a
warm alias) and while it is still loaded; until then its share stays on the default version,
so a split never causes a cold load in a request.

Assignment with a route key is by a stable hash of (model, key) to a point in [0, 100): the
canaries lay their weights out from 0 upward in version order, so a key lands on the same
version on every replica and across restarts, and raising a weight (the highest-numbered
canary's, or the only one's) moves keys only into that canary.

Without a key, at random, one draw per model per turn of the event loop: the requests for a
model that the loop routes in the same turn (those that arrived together) go to the same
version (a turn: from a model's first draw until the loop's next pass over its ready
callbacks reaches the reset scheduled then), and each turn goes to a canary with its
weight's probability. So each request still lands on a canary with exactly its weight, and a
canary's batches are as full as the default version's would have been. Drawn per request, a
10% canary at 32 connections got batches of one or two requests, beside the default's
fifteen, and each of its calls cost a whole predict call (sklearn's input checks are ~90 us
whatever the rows): the split cost 11% of the throughput without one. Keyed requests are
hashed one by one, as they must be. A shadow's percent is drawn per turn as well (keys play
no part in shadows): the primaries of one batch answer in one turn, so their copies are all
made or none and share a batch.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Iterable

from gateway.dataplane.cache import ModelCache
from gateway.routing.catalog import Catalog, Resolved
from registry_sync.identity import VersionId
from registry_sync.traffic import Arm

DEFAULT = "default"
CANARY = "canary"
NAMED = "named"
SHADOW = "shadow"  # a copy of a default-route request (gateway.routing.shadow)


def stable_point(name: str, key: str) -> float:
    """Where (model, key) falls in [0, 100): the same in every process, for ever."""
    digest = hashlib.sha256(name.encode("utf-8") + b"\0" + key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100


class TrafficSplit:
    """This process's view of every model's split: configured (the catalog's snapshot), and
    as served here (which canaries are warm, which the guard took off)."""

    def __init__(self, catalog: Catalog, cache: ModelCache, *, chance: random.Random | None = None) -> None:
        self._catalog = catalog
        self._cache = cache
        self._warm: set[VersionId] = set()
        # Arms the guard took off here, by the weight tag they had: the database says so to
        # the other replicas a moment later, and a new tag ends it.
        self._off: set[tuple[str, int, str | None]] = set()
        self._random = chance or random.Random()
        # This turn of the event loop's draw for each model: (the loop, the draws).
        self._turn: tuple[asyncio.AbstractEventLoop, dict[str | tuple[str, int], float]] | None = None

    # --- what to keep warm ----------------------------------------------------------

    def targets(self) -> list[VersionId]:
        """The versions this process must keep warm: canaries with weight, and shadows."""
        wanted = []
        for traffic in self._catalog.splits():
            for arm in traffic.arms.values():
                if (arm.shadow > 0 or self.weight(traffic.name, arm) > 0) and (
                    version := self._servable(traffic.name, arm.version)
                ) is not None:
                    wanted.append(version)
        return wanted

    def mark_warm(self, version: VersionId) -> None:
        self._warm.add(version)

    def forget(self, versions: Iterable[VersionId]) -> None:
        self._warm.difference_update(versions)

    def ready(self, version: VersionId) -> bool:
        """Warmed here and still loaded: it may answer without a load."""
        return version in self._warm and self._cache.holds(version)

    # --- the guard ------------------------------------------------------------------

    def take_off(self, name: str, version: int) -> None:
        arm = self.arm(name, version)
        self._off.add((name, version, arm.weight_tag if arm is not None else None))

    def weight(self, name: str, arm: Arm) -> float:
        return 0.0 if (name, arm.version, arm.weight_tag) in self._off else arm.effective_weight

    def arm(self, name: str, version: int) -> Arm | None:
        traffic = self._catalog.split(name)
        return traffic.arms.get(version) if traffic is not None else None

    # --- choosing ---------------------------------------------------------------------

    def pick(self, default: Resolved, key: str | None) -> Resolved:
        """The version a default-route request goes to; ``default`` is the default alias's."""
        name = default.name
        as_default = Resolved(default.id, default.alias, route=DEFAULT)
        traffic = self._catalog.split(name)
        if traffic is None:
            return as_default
        point = stable_point(name, key) if key is not None else self._turn_draw(name)
        chosen = traffic.landing(point)
        if chosen is None or chosen.version == default.version or self.weight(name, chosen) <= 0:
            return as_default
        version = self._servable(name, chosen.version)
        if version is None or not self.ready(version):
            return as_default  # not warm here (yet): its share stays on the default version
        return Resolved(version, None, route=CANARY, fallback=as_default)

    def _turn_draw(self, what: str | tuple[str, int]) -> float:
        """This turn's draw in [0, 100) for ``what``: a model's canaries (its name), or one of
        its shadows ((name, version)); see the module's doc."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop, no turns: each call draws
            return self._random.random() * 100
        if self._turn is None or self._turn[0] is not loop:
            self._turn = (loop, {})
            loop.call_soon(self._end_turn, self._turn)  # the loop's next pass over its ready callbacks
        draws = self._turn[1]
        point = draws.get(what)
        if point is None:
            point = draws[what] = self._random.random() * 100
        return point

    def _end_turn(self, turn: tuple[asyncio.AbstractEventLoop, dict[str | tuple[str, int], float]]) -> None:
        if self._turn is turn:
            self._turn = None

    def shadows(self, primary: Resolved) -> list[Resolved]:
        """The shadows this default-route request is also sent to (each by its own percent,
        drawn per turn of the loop like a canary: the copies of requests answered together
        share the shadow version's batches)."""
        traffic = self._catalog.split(primary.name)
        if traffic is None:
            return []
        chosen = []
        for arm in traffic.shadows:
            if arm.version == primary.version or self._turn_draw((primary.name, arm.version)) >= arm.shadow:
                continue
            version = self._servable(primary.name, arm.version)
            if version is not None and self.ready(version):
                chosen.append(Resolved(version, None, route=SHADOW))
        return chosen

    def _servable(self, name: str, version: int) -> VersionId | None:
        """The registry's version under this number, if it may serve (ready, not refused)."""
        state = self._catalog.state(name, version)
        if state is None or not state.ready or state.refused_reason:
            return None
        return state.id
