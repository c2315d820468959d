"""Interleaved rounds: how a feature's cost of a few percent is told from the machine's drift.

A feature costs a few percent of c32 throughput, and on a shared 2-core machine a point drifts
by more than that between points a minute apart (the observability run of 2026-11-23 put the
default's two points 12% apart). So the configurations being compared run at once, each a
gateway of its own pinned to the same CPU (an idle one waits on its socket), and the load
visits each in turn, round after round, rotating which goes first so that none always follows
the same one. Each point is divided by the baseline's point of its own round; a verdict takes
the median of those ratios over the rounds, and the table shows their range beside it.

Pure parts only (the order of a round, ratios, verdicts, the table); bench/harness.py (``interleaved_points``) and
bench/sections/spread.py drive.
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


def ratios(data: dict[str, Any], label: str, base: str, *, per_cpu: bool = False) -> list[float]:
    """``label``'s req/s over ``base``'s in each round where both were measured without errors.

    ``per_cpu``: requests per second of the server's CPU instead (``base``'s CPU microseconds a
    request over ``label``'s), where both points have them. Throughput on a shared machine moves
    with what else holds the core (the load generator, the hypervisor); the CPU a server spends
    on a request is its own, so a cost of a few percent stands out of less noise."""
    column = "cpu_us" if per_cpu else "req_s"
    by_round: dict[int, dict[str, Row]] = {}
    for entry in data.get("rows", []):
        by_round.setdefault(entry["round"], {})[entry["point"]] = entry
    out = []
    for points in by_round.values():
        mine, theirs = points.get(label), points.get(base)
        if _usable(mine) and _usable(theirs) and mine.get(column) and theirs.get(column):  # type: ignore[union-attr]
            pair = (theirs[column], mine[column]) if per_cpu else (mine[column], theirs[column])  # type: ignore[index]
            out.append(pair[0] / pair[1])
    return out


def _usable(entry: Row | None) -> bool:
    return bool(entry and entry.get("requests") and entry.get("req_s") and not entry.get("errors"))


def median_of(data: dict[str, Any], label: str, column: str) -> float | None:
    rows = data.get("rows", [])
    values = [e[column] for e in rows if e["point"] == label and _usable(e) and e.get(column) is not None]
    return statistics.median(values) if values else None


def errors_of(data: dict[str, Any], label: str) -> int:
    return sum(int(entry.get("errors") or 0) for entry in data.get("rows", []) if entry["point"] == label)


def verdict(
    data: dict[str, Any], label: str, base: str, target: float | None, name: str, *, per_cpu: bool = False
) -> tuple[str, str, bool | None]:
    """``label``'s median ratio to ``base`` (see :func:`ratios`) against ``target`` (None:
    information only). A point with errors measured refusals, not the feature: it fails the
    verdict."""
    found = ratios(data, label, base, per_cpu=per_cpu)
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
    with_cpu = any(entry.get("cpu_us") for entry in data.get("rows", []))
    head = f"| configuration | rounds | req/s (median) | p50 ms | p99 ms | errors | {against} (median) | range |"
    rule = "|---|--:|--:|--:|--:|--:|--:|--|"
    if with_cpu:
        head += f" server CPU µs a request | per CPU-second {against} (median) | range |"
        rule += "--:|--:|--|"
    lines = [head, rule]
    for label in labels:
        rounds = sum(1 for entry in data["rows"] if entry["point"] == label)
        line = (
            f"| {label} | {rounds} | {fmt(median_of(data, label, 'req_s'), 0)} | "
            f"{fmt(median_of(data, label, 'p50_ms'), 2)} | {fmt(median_of(data, label, 'p99_ms'), 2)} | "
            f"{errors_of(data, label)} | {_ratio_cells(data, label, base, per_cpu=False)} |"
        )
        if with_cpu:
            line += f" {fmt(median_of(data, label, 'cpu_us'), 1)} | {_ratio_cells(data, label, base, per_cpu=True)} |"
        lines.append(line)
    return lines


def _ratio_cells(data: dict[str, Any], label: str, base: str, *, per_cpu: bool) -> str:
    """A ratio's median and range, as two cells of the table."""
    found = ratios(data, label, base, per_cpu=per_cpu) if label != base else []
    ratio = f"{statistics.median(found):.3f}×" if found else ("1" if label == base else "–")
    spread = f"{min(found):.3f}–{max(found):.3f}" if found else ""
    return f"{ratio} | {spread}"
