"""What every section's report shares: numbers as the tables print them, and a section's
measured points looked up by label."""

from __future__ import annotations

import math
from typing import Any

Row = dict[str, Any]


def fmt(value: object, digits: int = 1) -> str:
    """``1,234.5``; a dash for no measurement (None or NaN)."""
    if value is None:
        return "–"
    as_float = float(value)  # type: ignore[arg-type]
    return "–" if math.isnan(as_float) else f"{as_float:,.{digits}f}"


def rate(row: Row | None) -> float | None:
    """A point's req/s, or None when it was not measured (no row, no requests, NaN)."""
    if row is None or not row.get("requests"):
        return None
    value = float(row["req_s"])
    return None if math.isnan(value) else value


def point(data: dict[str, Any], label: str) -> Row | None:
    return next((r for r in data.get("rows", []) if r["point"] == label), None)


def mean_rate(data: dict[str, Any], labels: tuple[str, ...]) -> float | None:
    """The mean req/s of the points of these labels that were measured."""
    rates = [r for r in (rate(point(data, label)) for label in labels) if r is not None]
    return sum(rates) / len(rates) if rates else None


def ratio_table(data: dict[str, Any], base: float | None, against: str) -> list[str]:
    """Each point's req/s, p50, p99 and errors, and its req/s over ``base`` (column ``against``)."""
    lines = [f"| point | req/s | p50 ms | p99 ms | errors | {against} |", "|---|--:|--:|--:|--:|--:|"]
    for entry in data.get("rows", []):
        mine = rate(entry)
        ratio = f"{mine / base:.2f}×" if base and mine is not None else "–"
        lines.append(
            f"| {entry['point']} | {fmt(entry['req_s'], 0)} | {fmt(entry['p50_ms'], 2)} | {fmt(entry['p99_ms'], 2)} | "
            f"{entry['errors']} | {ratio} |"
        )
    return lines


def ratio_target(
    data: dict[str, Any], label: str, base: float | None, target: float, name: str
) -> tuple[str, str, bool | None]:
    """The verdict of one point against ``target`` × ``base``: not measured, failed with errors,
    or its ratio (a point with errors measured refusals, not the feature)."""
    measured = point(data, label)
    mine = rate(measured)
    if base is None or mine is None:
        return (name, "not measured", False)
    if measured is None or measured.get("errors"):
        return (name, f"{mine / base:.2f}×, but {measured['errors'] if measured else '?'} errors", False)
    return (name, f"{mine / base:.2f}×", mine >= target * base)
