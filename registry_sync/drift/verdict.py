"""A version's drift figures from its fleet window and its reference, and whether it drifts.

Per input column and per output column, :func:`registry_sync.drift.statistics.compare` gives
PSI, the type's test (Kolmogorov-Smirnov on the binned distribution for numbers, chi-square
for categories) with its p-value, and the missing and outlier shares. A feature is flagged
when, with at least ``min_rows`` rows in the window:

- its PSI is at least ``psi`` **and** its test's p-value is below ``p_value`` (PSI says the
  shift is large, the test that it is not noise of a small window), or
- its outlier share (values outside the reference's range, unseen categories, values that
  are not of the column's type) is above ``outlier_share``.

The requests whose columns were not the reference's (missing or extra) are outliers of the
version as a whole: over ``outlier_share`` of the window's requests, ``(columns)`` is flagged.
A version drifts while anything is flagged. Each threshold is a setting and a version tag
(``gateway.drift.psi_threshold``, ``gateway.drift.p_value``, ``gateway.drift.outlier_threshold``,
``gateway.drift.min_rows``); a tag that is not a number is ignored (the setting holds).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from registry_sync.drift.profile import Profile
from registry_sync.drift.statistics import FeatureDrift, compare
from registry_sync.drift.windows import WindowCounts
from registry_sync.identity import VersionId

COLUMNS = "(columns)"  # what is flagged when too many requests had other columns than the reference
TAG_PREFIX = "gateway.drift."
_TAGS = {"psi_threshold": "psi", "p_value": "p_value", "outlier_threshold": "outlier_share", "min_rows": "min_rows"}


@dataclass(frozen=True, slots=True)
class Thresholds:
    psi: float = 0.2
    p_value: float = 0.001
    outlier_share: float = 0.05
    min_rows: int = 200

    def tagged(self, tags: Mapping[str, Any]) -> Thresholds:
        """These thresholds, with the version's tags where they are numbers."""
        changes: dict[str, Any] = {}
        for tag, field in _TAGS.items():
            raw = tags.get(TAG_PREFIX + tag)
            if raw is None:
                continue
            try:
                value = float(raw)
            except (TypeError, ValueError):
                continue
            if value >= 0:
                changes[field] = int(value) if field == "min_rows" else value
        return replace(self, **changes) if changes else self


@dataclass(frozen=True, slots=True)
class VersionDrift:
    """A version's figures over the fleet's window now."""

    id: VersionId
    inputs: tuple[FeatureDrift, ...]
    outputs: tuple[FeatureDrift, ...]
    window: WindowCounts
    processes: int  # the processes whose windows were summed
    thresholds: Thresholds
    flagged: tuple[str, ...]  # the features flagged (outputs as ``output:<name>``), worst first

    @property
    def enough(self) -> bool:
        return self.window.rows >= self.thresholds.min_rows

    @property
    def drifting(self) -> bool:
        return bool(self.flagged)

    @property
    def max_psi(self) -> float:
        return max((f.psi for f in self.inputs if f.psi is not None), default=0.0)

    @property
    def mismatched_share(self) -> float:
        return self.window.mismatched / self.window.requests if self.window.requests else 0.0

    def worst_first(self) -> list[tuple[str, FeatureDrift]]:
        """(kind, figures) of every feature, inputs and outputs, the largest PSI first."""
        found = [("input", f) for f in self.inputs] + [("output", f) for f in self.outputs]
        return sorted(found, key=lambda pair: -(pair[1].psi or 0.0))


def is_flagged(feature: FeatureDrift, thresholds: Thresholds) -> bool:
    if feature.rows < thresholds.min_rows:
        return False
    shifted = (
        feature.psi is not None
        and feature.p_value is not None
        and feature.psi >= thresholds.psi
        and feature.p_value < thresholds.p_value
    )
    return shifted or feature.outlier_share > thresholds.outlier_share


def judge(
    version: VersionId, profile: Profile, window: WindowCounts, thresholds: Thresholds, *, processes: int = 1
) -> VersionDrift:
    """The figures of every column the reference has (a column with no counts yet: none)."""
    inputs = tuple(compare(c, window.inputs[c.name]) for c in profile.inputs if c.name in window.inputs)
    outputs = tuple(compare(c, window.outputs[c.name]) for c in profile.outputs if c.name in window.outputs)
    flagged: list[tuple[float, str]] = []
    if window.rows >= thresholds.min_rows:
        flagged += [(f.psi or 0.0, f.name) for f in inputs if is_flagged(f, thresholds)]
        flagged += [(f.psi or 0.0, f"output:{f.name}") for f in outputs if is_flagged(f, thresholds)]
        if window.requests and window.mismatched / window.requests > thresholds.outlier_share:
            flagged.append((float("inf"), COLUMNS))
    names = tuple(name for _, name in sorted(flagged, key=lambda pair: -pair[0]))
    return VersionDrift(version, inputs, outputs, window, processes, thresholds, names)


def metrics_of(drift: VersionDrift) -> dict[str, float]:
    """What the write-back logs (without its ``production_`` prefix): ``drift_max_psi``, the
    window's rows, whether it drifts, and each feature's PSI and outlier share."""
    figures = {
        "drift_max_psi": drift.max_psi,
        "drift_rows": float(drift.window.rows),
        "drift_flagged": float(len(drift.flagged)),
    }
    for kind, feature in drift.worst_first():
        key = metric_key(feature.name if kind == "input" else f"output_{feature.name}")
        if feature.psi is not None:
            figures[f"drift_psi_{key}"] = feature.psi
        figures[f"drift_outlier_share_{key}"] = feature.outlier_share
    return figures


def metric_key(name: str) -> str:
    """A column's name as an MLflow metric name allows it (letters, digits, ``_-./ ``)."""
    return "".join(ch if ch.isalnum() or ch in "_-./" else "_" for ch in name)


def feature_json(kind: str, feature: FeatureDrift, thresholds: Thresholds) -> dict[str, Any]:
    return {
        "feature": feature.name,
        "kind": kind,
        "psi": feature.psi,
        "test": feature.test,
        "statistic": feature.statistic,
        "p_value": feature.p_value,
        "missing_share": feature.missing_share,
        "outlier_share": feature.outlier_share,
        "rows": feature.rows,
        "flagged": is_flagged(feature, thresholds),
    }


def document_of(drift: VersionDrift) -> dict[str, Any]:
    """The per-feature detail the write-back logs as a JSON artifact."""
    t = drift.thresholds
    return {
        "model": drift.id.name,
        "version": drift.id.version,
        "rows": drift.window.rows,
        "requests": drift.window.requests,
        "mismatched_requests": drift.window.mismatched,
        "unreadable_requests": drift.window.unreadable,
        "processes": drift.processes,
        "thresholds": {"psi": t.psi, "p_value": t.p_value, "outlier_share": t.outlier_share, "min_rows": t.min_rows},
        "flagged": list(drift.flagged),
        "features": [feature_json(kind, f, t) for kind, f in drift.worst_first()],
    }
