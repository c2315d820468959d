"""The guard: a canary that answers worse than the default version loses its weight.

Each process watches its own default-route answers, per model and arm, over a window of
the last ``min_requests`` answers it judges. Once a canary has ``min_requests`` of them
here, it is compared after each answer with its default version on the same window: a
server error rate higher by more than ``max_error_rate``, or a p99 latency more than
``max_latency_ratio`` times the default's, takes its weight away here at once and, through
the state database, on every replica within a follow interval (event ``rolled_back``). It
stays off until its weight tag changes. Nothing is written to MLflow.

A server error is what the version or the gateway is to blame for, as Argo Rollouts and
Flagger judge a canary: a 5xx answer (a timeout is 504) or the model raising on its input
(``ModelRaised``, which MLflow answers 400). A client's mistake (any other 4xx: a malformed
body, input that does not fit) says nothing of the version, and route keys are sticky: one
client sending bad bodies to the canary would roll a healthy one back, and to the default
would hide a failing one. Such answers are counted per arm (``client_errors``) but kept out
of the window (as successes they would dilute its error rate), unless
``count_client_errors`` (``GATEWAY_CANARY_COUNT_CLIENT_ERRORS``) judges them as errors too.

It judges quality too, on labels (:func:`quality_breach`), when the quality monitor
(``gateway.quality.monitor``) hands it the windows it read from the state database, at an
interval and never per request: labels sent to any replica count on every replica. When the
canary and the default version both have ``min_labels`` labels in their windows (the version
tag ``gateway.guard.min_labels``, else GATEWAY_GUARD_MIN_LABELS), a drop past
``max_quality_drop`` that is significant at ``confidence`` rolls the canary back like a 5xx
excess: a one-sided two-proportion z-test on accuracy for a classifier, a one-sided Welch
t-test on the absolute errors for a regressor (whose drop is the MAE's rise, as a fraction
of the default's). The event names both figures, the test and its p-value.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

import anyio.to_thread
import numpy as np

from gateway.errors import ModelRaised
from gateway.metrics import GatewayMetrics
from gateway.routing.catalog import Resolved
from gateway.routing.traffic import CANARY, DEFAULT, TrafficSplit
from registry_sync.errors import RegistryError
from registry_sync.quality import CLASSIFICATION, REGRESSION, Scored
from registry_sync.repository import StateStore

log = logging.getLogger(__name__)

Failure = Literal["server", "model", "client"]
"""Who failed an answer: the gateway or the version (a 5xx), the model's own code, or the caller."""


def failure_of(status: int, exc: BaseException | None) -> Failure | None:
    """What kind of failure an answer of ``status``, raised as ``exc``, was (None: answered)."""
    if status < 400:
        return None
    if isinstance(exc, ModelRaised):  # 400 as in MLflow, but the version's fault
        return "model"
    return "server" if status >= 500 else "client"


@dataclass(frozen=True, slots=True)
class GuardLimits:
    max_error_rate: float = 0.05
    max_latency_ratio: float = 2.0
    min_requests: int = 200
    min_latency_delta: float = 0.025
    """Seconds the canary's p99 must also exceed the default's by: at a few milliseconds, a
    p99 (the second slowest of 200 answers) doubles from one scheduling hiccup alone (a
    healthy canary was rolled back so under load in `make bench`)."""
    count_client_errors: bool = False
    """Judge the callers' 4xx (not the model raising: that is always judged) as errors too."""


@dataclass
class Window:
    """One arm's last judged answers here (error or not, seconds), and its counts since start.

    Kept incrementally: the guard judges a canary after every one of its answers, so the
    error count of the window and its latencies in order are updated as answers come and
    go (a bisect into 200 floats) rather than summed and sorted for every judgement."""

    size: int
    answers: deque[tuple[bool, float]] = field(init=False)
    requests: int = 0
    errors: int = 0  # the judged ones: server errors (and client errors, if counted)
    client_errors: int = 0  # the callers' 4xx, judged or not
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

    def add_client_error(self, *, judged: bool = False, seconds: float = 0.0) -> None:
        """A caller's 4xx: counted since start; in the window as an error only when ``judged``
        (GATEWAY_CANARY_COUNT_CLIENT_ERRORS), else kept out of it: it says nothing of the
        version, and as an answer it would dilute the version's error rate."""
        self.client_errors += 1
        if judged:
            self.add(error=True, seconds=seconds)
        else:
            self.requests += 1

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
        """(requests, errors) since start by (model, arm, version): what this process publishes
        (errors: the judged ones)."""
        return {key: (window.requests, window.errors) for key, window in list(self._windows.items())}

    def observe(self, served: Resolved, *, failure: Failure | None, seconds: float) -> None:
        """One default-route answer (``served.route`` default or canary), ``failure`` None when
        it answered; judges canaries on server errors and latency."""
        if served.route not in (DEFAULT, CANARY):
            return
        self._metrics.arm_finished(model=served.name, arm=served.route, ok=failure is None, seconds=seconds)
        key = (served.name, served.route, served.version)
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = Window(self.limits.min_requests)
        if failure == "client":
            window.add_client_error(judged=self.limits.count_client_errors, seconds=seconds)
            if not self.limits.count_client_errors:
                return  # nothing judged: the canary's window did not change
        else:
            window.add(error=failure is not None, seconds=seconds)
        if served.route == CANARY and served.fallback is not None and window.full:
            reason = breach(self.limits, window, self._windows.get((served.name, DEFAULT, served.fallback.version)))
            if reason is not None:
                self._roll_back(served.name, served.version, served.fallback.version, reason)

    def roll_back_on_quality(self, name: str, version: int, default: int, reason: str) -> None:
        """The quality monitor found the canary ``version`` worse than ``default`` (``reason``)."""
        arm = self._split.arm(name, version)
        if arm is None or self._split.weight(name, arm) <= 0:
            return  # taken off already (here, or by the database)
        self._metrics.quality_rollbacks.labels(name).inc()
        self._roll_back(name, version, default, reason)

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
    """Why the canary must lose its weight, or None: server errors (and the callers' 4xx, if
    ``count_client_errors``) beyond the default's by more than ``max_error_rate``, or a p99
    both ``max_latency_ratio`` times and ``min_latency_delta`` above the default's (once the
    default has a full window here)."""
    baseline = default.error_rate if default is not None else 0.0
    if canary.error_rate - baseline > limits.max_error_rate:
        what = "error rate (client errors included)" if limits.count_client_errors else "server error rate"
        return (
            f"{what} {canary.error_rate:.3f} over the last {len(canary.answers)} requests exceeds the "
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


@dataclass(frozen=True, slots=True)
class QualityLimits:
    min_labels: int = 200
    max_quality_drop: float = 0.05
    confidence: float = 0.99


MIN_LABELS_TAG = "gateway.guard.min_labels"
MAX_QUALITY_DROP_TAG = "gateway.guard.max_quality_drop"


def quality_limits(defaults: QualityLimits, tags: dict[str, str]) -> QualityLimits:
    """The canary's own limits: its version tags where they are numbers in range, else the settings'."""
    min_labels, max_drop = defaults.min_labels, defaults.max_quality_drop
    try:
        if MIN_LABELS_TAG in tags and int(tags[MIN_LABELS_TAG]) >= 2:
            min_labels = int(tags[MIN_LABELS_TAG])
    except ValueError:
        pass
    try:
        if MAX_QUALITY_DROP_TAG in tags and 0 <= float(tags[MAX_QUALITY_DROP_TAG]) < float("inf"):
            max_drop = float(tags[MAX_QUALITY_DROP_TAG])
    except ValueError:
        pass
    return QualityLimits(min_labels, max_drop, defaults.confidence)


def quality_breach(limits: QualityLimits, canary: Scored, default: Scored) -> str | None:
    """Why the canary must lose its weight on its labels, or None: both windows hold
    ``min_labels`` labels of one task, the canary is worse by more than ``max_quality_drop``,
    and the difference is significant at ``confidence``."""
    # imported here, not with the module: scipy.stats costs about 0.5 s of CPU, and every gateway
    # and sync process imported it at start although only a canary's quality verdict uses it
    from scipy import stats

    c, d = canary.figures, default.figures
    if c.labels < limits.min_labels or d.labels < limits.min_labels or c.task != d.task:
        return None
    alpha = 1 - limits.confidence
    if c.task == CLASSIFICATION and canary.correct is not None and default.correct is not None:
        n1, n2 = len(canary.correct), len(default.correct)
        p1, p2 = float(np.mean(canary.correct)), float(np.mean(default.correct))
        if p2 - p1 <= limits.max_quality_drop:
            return None
        pooled = (float(np.sum(canary.correct)) + float(np.sum(default.correct))) / (n1 + n2)
        spread = np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
        p_value = float(stats.norm.sf((p2 - p1) / spread)) if spread > 0 else 0.0
        if p_value >= alpha:
            return None
        return (
            f"accuracy {p1:.3f} over its last {n1} labels is below the default version's {p2:.3f} "
            f"(last {n2} labels) by more than max_quality_drop={limits.max_quality_drop:g}; one-sided "
            f"two-proportion z-test p={p_value:.2g} < {alpha:g} (confidence {limits.confidence:g})"
        )
    if c.task == REGRESSION and canary.errors is not None and default.errors is not None:
        mine, theirs = float(np.mean(canary.errors)), float(np.mean(default.errors))
        if mine - theirs <= limits.max_quality_drop * theirs:
            return None
        test = stats.ttest_ind(canary.errors, default.errors, equal_var=False, alternative="greater")
        p_value = float(test.pvalue)
        if not p_value < alpha:  # NaN (no spread at all) is no evidence
            return None
        return (
            f"MAE {mine:.4g} over its last {len(canary.errors)} labels is above the default version's "
            f"{theirs:.4g} (last {len(default.errors)} labels) by more than max_quality_drop="
            f"{limits.max_quality_drop:g} of it; one-sided Welch t-test on the absolute errors "
            f"p={p_value:.2g} < {alpha:g} (confidence {limits.confidence:g})"
        )
    return None
