"""Interleaved rounds: how a feature's cost of a few percent is told from the machine's drift.

A feature costs a few percent of c32 throughput, and on a shared 2-core machine a point drifts
by more than that between points a minute apart (the observability run of 2026-11-23 put the
default's two points 12% apart). So the configurations being compared run at once, each a
gateway of its own pinned to the same CPU (an idle one waits on its socket), and the load
visits each in turn, round after round, rotating which goes first so that none always follows
the same one. Each point is divided by the baseline's point of its own round; a verdict takes
the median of those ratios over the rounds, and the table shows their range beside it.

Pure parts only (the order of a round, ratios, verdicts, the table); bench/run.py drives.
"""

from __future__ import annotations

import statistics
from typing import Any

from report import fmt

Row = dict[str, Any]


def order(labels: list[str], round_index: int) -> list[str]:
    """The order of one round: the labels rotated by the round's index."""
    shift = round_index % len(labels) if labels else 0
    return labels[shift:] + labels[:shift]


def ratios(data: dict[str, Any], label: str, base: str) -> list[float]:
    """``label``'s req/s over ``base``'s in each round where both were measured without errors."""
    by_round: dict[int, dict[str, Row]] = {}
    for entry in data.get("rows", []):
        by_round.setdefault(entry["round"], {})[entry["point"]] = entry
    out = []
    for points in by_round.values():
        mine, theirs = points.get(label), points.get(base)
        if _usable(mine) and _usable(theirs):
            out.append(mine["req_s"] / theirs["req_s"])  # type: ignore[index]
    return out


def _usable(entry: Row | None) -> bool:
    return bool(entry and entry.get("requests") and entry.get("req_s") and not entry.get("errors"))


def median_of(data: dict[str, Any], label: str, column: str) -> float | None:
    values = [entry[column] for entry in data.get("rows", []) if entry["point"] == label and _usable(entry)]
    return statistics.median(values) if values else None


def errors_of(data: dict[str, Any], label: str) -> int:
    return sum(int(entry.get("errors") or 0) for entry in data.get("rows", []) if entry["point"] == label)


def verdict(
    data: dict[str, Any], label: str, base: str, target: float | None, name: str
) -> tuple[str, str, bool | None]:
    """``label``'s median ratio to ``base`` against ``target`` (None: information only). A
    point with errors measured refusals, not the feature: it fails the verdict."""
    found = ratios(data, label, base)
    if not found:
        return (name, "not measured", False if target is not None else None)
    median = statistics.median(found)
    shown = f"{median:.3f}× (median of {len(found)} rounds; {min(found):.3f}–{max(found):.3f})"
    if errors := errors_of(data, label):
        return (name, f"{shown}, but {errors} errors", False)
    return (name, shown, None if target is None else median >= target)


def table(data: dict[str, Any], base: str, against: str) -> list[str]:
    """One line per configuration: medians over the rounds and its ratios to ``base``."""
    labels: list[str] = []
    for entry in data.get("rows", []):
        if entry["point"] not in labels:
            labels.append(entry["point"])
    lines = [
        f"| configuration | rounds | req/s (median) | p50 ms | p99 ms | errors | {against} (median) | range |",
        "|---|--:|--:|--:|--:|--:|--:|--|",
    ]
    for label in labels:
        rounds = sum(1 for entry in data["rows"] if entry["point"] == label)
        found = ratios(data, label, base) if label != base else []
        ratio = f"{statistics.median(found):.3f}×" if found else ("1" if label == base else "–")
        spread = f"{min(found):.3f}–{max(found):.3f}" if found else ""
        lines.append(
            f"| {label} | {rounds} | {fmt(median_of(data, label, 'req_s'), 0)} | "
            f"{fmt(median_of(data, label, 'p50_ms'), 2)} | {fmt(median_of(data, label, 'p99_ms'), 2)} | "
            f"{errors_of(data, label)} | {ratio} | {spread} |"
        )
    return lines
