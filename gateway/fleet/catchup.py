"""``POST /admin/sync`` answers once the fleet serves what the sync moved, not only the process
that ran it: a CI pipeline that syncs through the balancer and then predicts must get the new
version from whichever replica answers.

The order: the sync pass writes the new targets; the process that was asked swaps its own warm
aliases and waits for them (the reconciler); then it reads the fleet's reports from the state
database until every other live serving process that holds a version of a model reports each of
that model's warm aliases at the registry's target (gateway.fleet.membership reports the alias a
held version serves, and reports at once after a flip), or until the bound passes. A process
that holds no version of the model is not waited for: it loads nothing for it, and its first
request takes the alias over at the target. A target that may not serve (not READY, refused)
moves nowhere, so it is not waited for either. What is still behind when the bound passes is
named in the answer, not hidden: a swap that failed there, a process too slow, or one too old
to report its aliases.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import anyio.to_thread

from registry_sync.errors import RegistryError
from registry_sync.fleet import READY, FleetStore, Member
from registry_sync.repository import RouteState

_POLL_SECONDS = 0.05


@dataclass(frozen=True, slots=True)
class Behind:
    """A replica whose reports do not show a warm alias at its target yet."""

    replica: str
    name: str
    alias: str
    target: int
    serving: tuple[int, ...]  # the versions its reports show for the alias (none: not swapped yet)

    def text(self) -> str:
        now = ", ".join(map(str, self.serving)) if self.serving else "none reported"
        return f"{self.replica}: {self.name}@{self.alias} not at version {self.target} yet (serving {now})"


def behind(
    members: Iterable[Member],
    routes: Iterable[RouteState],
    *,
    quiet_after: float,
    exclude: str,
) -> list[Behind]:
    """The (replica, alias) pairs of live serving processes other than ``exclude`` that hold
    the alias's model and do not report it at its target."""
    found = []
    routes = list(routes)
    for member in members:
        if member.member == exclude or not member.serves or member.state != READY or member.age_seconds > quiet_after:
            continue
        for route in routes:
            held = [h for h in member.holdings if h.name == route.name]
            if not held:
                continue
            serving = tuple(sorted(h.version for h in held if route.alias in h.aliases))
            if serving != (route.version,):
                found.append(Behind(member.replica, route.name, route.alias, route.version, serving))
    return found


async def wait_for_fleet(
    store: FleetStore,
    routes: list[RouteState],
    *,
    quiet_after: float,
    exclude: str,
    timeout: float,
    clock: Callable[[], float] = time.monotonic,
) -> list[Behind]:
    """Read the fleet until no replica is :func:`behind` or ``timeout`` passes; what is behind
    then (empty: all caught up). The database unreadable: what was behind at the last read."""
    deadline = clock() + timeout
    still: list[Behind] = []
    read = False
    while True:
        try:
            members = await anyio.to_thread.run_sync(store.members)
            still, read = behind(members, routes, quiet_after=quiet_after, exclude=exclude), True
        except RegistryError:
            pass  # the database blinked: read again until the bound
        if (read and not still) or clock() >= deadline:
            return still
        await asyncio.sleep(_POLL_SECONDS)
