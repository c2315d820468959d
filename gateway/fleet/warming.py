"""Warm what you serve: what a process loads before it is ready, and which warm-alias moves
it follows while it runs (docs/ARCHITECTURE.md: Warm what you serve).

Two rules, chosen by ``GATEWAY_WARM_START``:

- ``aliases``, a lone ``serve``: before it is ready it warms every warm alias that fits its
  cache (``GATEWAY_MAX_LOADED_MODELS`` and ``GATEWAY_MAX_MEMORY_MB``, with the sizes it
  measured before where it has them), the models its replica served most recently first, then
  the others by name; whatever does not fit loads on its first request. While it runs, a warm
  alias that moves is swapped where its model is held or was served lately, or while the
  cache has room for it without evicting anything.
- ``served``, a replica of a fleet: before it is ready it warms only what its replica served
  within ``GATEWAY_WARM_RECENT_SECONDS`` (the versions it answered with, and the warm aliases
  of those models), most recently served first, what fits; a replica with no history is ready
  at once. While it runs, a warm alias that moves is swapped only where its model is held or
  was served lately: a process loads no model nobody asks it for.
- ``auto`` (the default) is ``served`` for a ``--role gateway`` replica and for any process
  that finds another serving replica's heartbeat in the state database when it starts, and
  ``aliases`` otherwise.

In both, a warm alias a process does not hold is taken on its first request: the request
waits while its target loads and warms, once however many wait (the reconciler's swap), and
if that fails the version the fleet last served for it answers instead.

This module decides; the reconciler (gateway.routing.reconciler) loads, warms and flips.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from registry_sync.fleet import Served
from registry_sync.identity import VersionId
from registry_sync.repository import RouteState

Mode = Literal["aliases", "served"]


@dataclass(frozen=True, slots=True)
class WarmRule:
    mode: Mode
    why: str  # what chose it, in words
    recent_seconds: float

    @classmethod
    def choose(cls, setting: str, *, role: str, others: Iterable[str], recent_seconds: float) -> WarmRule:
        """The rule ``GATEWAY_WARM_START`` names, or ``auto``'s choice for this process."""
        if setting in ("aliases", "served"):
            return cls(setting, f"GATEWAY_WARM_START={setting}", recent_seconds)  # type: ignore[arg-type]
        if role in ("gateway", "jobs"):
            return cls("served", f"auto: a --role {role} replica", recent_seconds)
        replicas = sorted(others)
        if replicas:
            shown = ", ".join(replicas[:3]) + (f" and {len(replicas) - 3} more" if len(replicas) > 3 else "")
            return cls("served", f"auto: other replicas serve on this state database ({shown})", recent_seconds)
        return cls("aliases", "auto: no other replica serves on this state database", recent_seconds)

    def describe(self) -> str:
        if self.mode == "aliases":
            what = (
                "every warm alias that fits, most recently served first; "
                "follows alias moves of the models it holds, served lately or has room for"
            )
        else:
            what = (
                f"what this replica served in the last {_duration(self.recent_seconds)}; "
                "follows alias moves of the models it holds or served lately"
            )
        return f"{self.mode} ({self.why}): {what}"


@dataclass(frozen=True, slots=True)
class StartPlan:
    """What to warm before ready, in order: warm aliases, and versions served before that no
    warm alias points at."""

    aliases: list[RouteState]
    versions: list[VersionId]
    candidates: int  # what the rule would warm if everything fitted
    summary: str  # in words, for the log, /status and the fleet view

    @property
    def models(self) -> set[str]:
        return {route.name for route in self.aliases} | {version.name for version in self.versions}


def plan_start(
    rule: WarmRule,
    *,
    routes: Iterable[RouteState],
    target: Callable[[RouteState], VersionId | None],
    history: Iterable[Served],
    current: Callable[[VersionId], VersionId | None],
    max_models: int,
    max_bytes: int,
) -> StartPlan:
    """Order the candidates by how recently this replica served their model (the others after,
    by name) and keep the ones that fit: a count of ``max_models``, and ``max_bytes`` by the
    sizes measured when the replica last held them (a size never measured counts as nothing:
    the cache itself keeps the budget once it has loaded). ``target`` is where a warm alias
    should be; ``current`` the registry's version now under a served version's number, if it is
    still that version and may serve (None: deleted, re-created or refused since)."""
    history = list(history)
    served_at: dict[str, float] = {}
    for used in history:
        served_at[used.id.name] = max(used.last_served, served_at.get(used.id.name, 0.0))

    def size(version: VersionId) -> int:
        return next((used.size_bytes for used in history if used.id.same_version(version)), 0)

    # Sorted by (recency, kind, name, detail): most recently served first, never served last by name.
    candidates: list[tuple[tuple[float, int, str, str], RouteState | None, VersionId]] = []
    for warm in routes:
        if rule.mode == "served" and warm.name not in served_at:
            continue
        wanted = target(warm)
        if wanted is not None:
            candidates.append(((-served_at.get(warm.name, float("-inf")), 0, warm.name, warm.alias), warm, wanted))
    for used in history:
        found = current(used.id)
        if found is not None:
            candidates.append(((-used.last_served, 1, found.name, f"{found.version:012d}"), None, found))
    candidates.sort(key=lambda candidate: candidate[0])

    aliases: list[RouteState] = []
    versions: list[VersionId] = []
    chosen: set[VersionId] = set()
    total_bytes = 0
    for _, alias_route, version in candidates:
        if version not in chosen:
            if len(chosen) + 1 > max_models or total_bytes + size(version) > max_bytes:
                continue
            chosen.add(version)
            total_bytes += size(version)
        if alias_route is not None:
            aliases.append(alias_route)
        elif version not in versions:
            versions.append(version)
    targets = {target(route) for route in aliases}
    versions = [version for version in versions if version not in targets]  # an alias warms it
    count = len({version for _, _, version in candidates})
    summary = _summary(rule, warmed=len(chosen), candidates=count)
    return StartPlan(aliases=aliases, versions=versions, candidates=count, summary=summary)


def _summary(rule: WarmRule, *, warmed: int, candidates: int) -> str:
    if candidates == 0:
        if rule.mode == "served":
            return "nothing to warm: this replica served nothing lately (it loads what it is asked for)"
        return "nothing to warm: no warm alias points at a version that can serve"
    what = "versions (warm aliases' targets)" if rule.mode == "aliases" else "versions this replica served lately"
    if warmed == candidates:
        return f"warmed {warmed} {what}"
    return f"warmed {warmed} of {candidates} {what}: what fits the cache, most recently served first"


def _duration(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        hours = int(seconds // 3600)
        return f"{hours} hour{'s' if hours > 1 else ''}"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)} min"
    return f"{seconds:g} s"
