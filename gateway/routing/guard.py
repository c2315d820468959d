"""The guard: a canary that answers worse than the default version loses its weight.

Each process watches its own default-route answers, per model and arm, over a window of
the last ``min_requests`` answers. Once a canary has answered ``min_requests`` here, it is
compared after each answer with its default version on the same window: an error rate (5xx
and input errors alike: the default's rate on the same inputs takes out what is the
callers' fault) higher by more than ``max_error_rate``, or a p99 latency more than
``max_latency_ratio`` times the default's, takes its weight away here at once and, through
the state database, on every replica within a follow interval (event ``rolled_back``). It
stays off until its weight tag changes. Nothing is written to MLflow.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from collections import deque
from dataclasses import dataclass, field

import anyio.to_thread

from gateway.metrics import GatewayMetrics
from gateway.routing.catalog import Resolved
from gateway.routing.traffic import CANARY, DEFAULT, TrafficSplit
from registry_sync.errors import RegistryError
from registry_sync.repository import StateStore

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GuardLimits:
    max_error_rate: float = 0.05
    max_latency_ratio: float = 2.0
    min_requests: int = 200
    min_latency_delta: float = 0.025
    """Seconds the canary's p99 must also exceed the default's by: at a few milliseconds, a
    p99 (the second slowest of 200 answers) doubles from one scheduling hiccup alone (a
    healthy canary was rolled back so under load in `make bench`)."""


@dataclass
class Window:
    """One arm's last answers here (error or not, seconds), and its counts since start.

    Kept incrementally: the guard judges a canary after every one of its answers, so the
    error count of the window and its latencies in order are updated as answers come and
    go (a bisect into 200 floats) rather than summed and sorted for every judgement."""

    size: int
    answers: deque[tuple[bool, float]] = field(init=False)
    requests: int = 0
    errors: int = 0
    _failed: int = field(default=0, init=False, repr=False)  # errors among ``answers``
    _ordered: list[float] = field(init=False, repr=False)  # the seconds of ``answers``, sorted

    def __post_init__(self) -> None:
        self.answers = deque(maxlen=self.size)
        self._ordered = []

    def add(self, *, error: bool, seconds: float) -> None:
        if len(self.answers) == self.size:  # the oldest answer leaves the window
            gone_error, gone_seconds = self.answers[0]
            self._failed -= gone_error
            del self._ordered[bisect.bisect_left(self._ordered, gone_seconds)]
        self.answers.append((error, seconds))
        bisect.insort(self._ordered, seconds)
        self._failed += error
        self.requests += 1
        self.errors += error

    def restart(self) -> None:
        """Forget the answers judged (a new experiment starts from an empty window); the
        counts since start stay."""
        self.answers.clear()
        self._ordered.clear()
        self._failed = 0

    @property
    def full(self) -> bool:
        return len(self.answers) >= self.size

    @property
    def error_rate(self) -> float:
        return self._failed / len(self.answers) if self.answers else 0.0

    def quantile(self, q: float) -> float | None:
        ordered = self._ordered
        if not ordered:
            return None
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Guard:
    def __init__(
        self,
        split: TrafficSplit,
        store: StateStore,
        metrics: GatewayMetrics,
        *,
        limits: GuardLimits,
        actor: str,
    ) -> None:
        self._split = split
        self._store = store
        self._metrics = metrics
        self.limits = limits
        self._actor = actor
        self._windows: dict[tuple[str, str, int], Window] = {}
        self._writes: set[asyncio.Task[None]] = set()

    def window(self, name: str, arm: str, version: int) -> Window | None:
        return self._windows.get((name, arm, version))

    def windows(self, name: str) -> dict[tuple[str, int], Window]:
        return {(arm, version): w for (model, arm, version), w in self._windows.items() if model == name}

    def counts(self) -> dict[tuple[str, str, int], tuple[int, int]]:
        """(requests, errors) since start by (model, arm, version): what this process publishes."""
        return {key: (window.requests, window.errors) for key, window in list(self._windows.items())}

    def observe(self, served: Resolved, *, status: int, seconds: float) -> None:
        """One default-route answer (``served.route`` default or canary); judges canaries."""
        if served.route not in (DEFAULT, CANARY):
            return
        error = status >= 400
        self._metrics.arm_finished(model=served.name, arm=served.route, ok=not error, seconds=seconds)
        key = (served.name, served.route, served.version)
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = Window(self.limits.min_requests)
        window.add(error=error, seconds=seconds)
        if served.route == CANARY and served.fallback is not None and window.full:
            reason = breach(self.limits, window, self._windows.get((served.name, DEFAULT, served.fallback.version)))
            if reason is not None:
                self._roll_back(served.name, served.version, served.fallback.version, reason)

    def _roll_back(self, name: str, version: int, default: int, reason: str) -> None:
        self._split.take_off(name, version)  # here at once; the other replicas via the database
        if (window := self._windows.get((name, CANARY, version))) is not None:
            window.restart()
        self._metrics.canary_rollbacks.labels(name).inc()
        log.warning("%s: canary version %s rolled back (default version %s): %s", name, version, default, reason)
        task = asyncio.get_running_loop().create_task(self._record(name, version, reason))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _record(self, name: str, version: int, reason: str) -> None:
        try:
            await anyio.to_thread.run_sync(
                lambda: self._store.roll_back(name, version, reason=reason, actor=self._actor)
            )
        except RegistryError as exc:  # this process keeps it off; the others judge for themselves
            log.warning("could not record the rollback of %s v%s: %s", name, version, exc)

    async def settle(self) -> None:
        """Wait for the rollbacks being written (tests, shutdown)."""
        while self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)


def breach(limits: GuardLimits, canary: Window, default: Window | None) -> str | None:
    """Why the canary must lose its weight, or None: errors beyond the default's by more than
    ``max_error_rate``, or a p99 both ``max_latency_ratio`` times and ``min_latency_delta``
    above the default's (once the default has a full window here)."""
    baseline = default.error_rate if default is not None else 0.0
    if canary.error_rate - baseline > limits.max_error_rate:
        return (
            f"error rate {canary.error_rate:.3f} over the last {len(canary.answers)} requests exceeds the "
            f"default version's {baseline:.3f} by more than GATEWAY_CANARY_MAX_ERROR_RATE={limits.max_error_rate:g}"
        )
    if default is None or not default.full:
        return None  # too few default answers here for a p99 worth comparing
    mine, theirs = canary.quantile(0.99), default.quantile(0.99)
    if mine is None or theirs is None or theirs <= 0:
        return None
    if mine > theirs * limits.max_latency_ratio and mine - theirs >= limits.min_latency_delta:
        return (
            f"p99 latency {mine * 1000:.1f} ms over the last {len(canary.answers)} requests is more than "
            f"GATEWAY_CANARY_MAX_LATENCY_RATIO={limits.max_latency_ratio:g} times the default version's "
            f"{theirs * 1000:.1f} ms (and {limits.min_latency_delta * 1000:g} ms or more above it)"
        )
    return None
