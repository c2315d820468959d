"""The cost of a traffic split and of a shadow (issue 14): ``--only traffic``.

One gateway on the bench registry; load on the default route (``/models/iris/predict``,
``champion`` -> v1) at 32 connections. Points, in this order: no split; v2 tagged
``gateway.traffic.weight=10`` (a 2-arm split: 90% v1, 10% v2); the weight tag removed and v2
tagged ``gateway.traffic.shadow=25`` (every answer from v1, 25% of requests also run on v2
after it); no split again. Each tag is set in the bench's scratch registry, then
``POST /admin/sync``, and the point starts only once ``GET /models/iris/traffic`` shows it as
served (the canary warm with its weight, the shadow warm). The baseline is the mean of
the two no-split points, so that drift over the run (other work on the machine) shows.

This module holds the pure parts (reading /traffic, verdicts, report); bench/run.py drives.
"""

from __future__ import annotations

from typing import Any

from report import fmt, mean_rate, point, rate

WEIGHT_TAG = "gateway.traffic.weight"
SHADOW_TAG = "gateway.traffic.shadow"
MODEL = "iris"
ARM_VERSION = 2  # the canary / shadow; champion (the default) is v1
WEIGHT = 10
SHADOW = 25
CONNECTIONS = 32
NONE_BEFORE, SPLIT, SHADOWED, NONE_AFTER = "no split", "split 90/10", "shadow 25%", "no split (again)"


def served(detail: dict[str, Any], *, weight: float = 0.0, shadow: float = 0.0) -> bool:
    """Whether ``GET /models/{name}/traffic`` shows the arm as served: no arm at all when
    both are 0; else the arm warm with that served weight and shadow."""
    arms = [arm for arm in detail.get("arms", []) if arm.get("weight") or arm.get("shadow")]
    if not weight and not shadow:
        return not arms
    for arm in arms:
        if arm.get("version") == ARM_VERSION:
            return bool(arm.get("warm")) and arm.get("served_weight") == weight and arm.get("shadow") == shadow
    return False


def arm_requests(detail: dict[str, Any]) -> dict[str, int]:
    """Requests answered per arm since start, from /traffic's stats (``arm:version``)."""
    return {f"{s['arm']}:{s['version']}": int(s["requests"]) for s in detail.get("stats", [])}


def shadows_run(detail: dict[str, Any]) -> float:
    agreement = detail.get("shadow_agreement") or {}
    return float(sum(agreement.values()))


def baseline(data: dict[str, Any]) -> float | None:
    """The mean req/s of the no-split points that were measured."""
    return mean_rate(data, (NONE_BEFORE, NONE_AFTER))


def targets(data: dict[str, Any] | None) -> list[tuple[str, str, bool | None]]:
    """Issue 14: a 2-arm split within 5% of no split; a 25% shadow within 30%."""
    if not data:
        return []
    base = baseline(data)
    out: list[tuple[str, str, bool | None]] = []
    for label, floor, what in ((SPLIT, 0.95, "within 5%"), (SHADOWED, 0.70, "within 30%")):
        name = f"traffic: {label} at {CONNECTIONS} conns {what} of no split's req/s"
        measured = point(data, label)
        mine = rate(measured)
        if measured is not None and measured.get("still_served") is False:
            out.append((name, "not measured: the arm was no longer served at the end", False))
        elif base is None or mine is None:
            out.append((name, "not measured", False))
        else:
            out.append((name, f"{mine / base:.2f}×", mine >= floor * base))
    return out


def render(data: dict[str, Any] | None) -> list[str]:
    if not data:
        return []
    base = baseline(data)
    lines = ["", "## A traffic split and a shadow (issue 14)", ""]
    lines += [
        f"`POST /models/{MODEL}/predict` (the default route: `champion` → v1) at {CONNECTIONS} conns. "
        f"Split: v{ARM_VERSION} tagged `{WEIGHT_TAG}={WEIGHT}`; shadow: the weight tag removed and "
        f"v{ARM_VERSION} tagged `{SHADOW_TAG}={SHADOW}`. Each point starts once `GET /models/{MODEL}/traffic` "
        "shows the tag as served "
        "(the guard's thresholds raised out of reach, so that it cannot take the split away). "
        "÷ no split: over the mean of the two no-split points. **Canary share**: "
        "the share of the point's requests the canary arm answered (/traffic's counts); **shadows run**: "
        "shadow answers compared with the primary's during the point, and shadow requests dropped.",
        "",
    ]
    lines += ["| point | req/s | p50 ms | p99 ms | errors | ÷ no split | canary share | shadows run | dropped |"]
    lines += ["|---|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for entry in data.get("rows", []):
        mine = rate(entry)
        ratio = f"{mine / base:.2f}×" if base and mine is not None else "–"
        share = entry.get("canary_share")
        lines.append(
            f"| {entry['point']} | {fmt(entry['req_s'], 0)} | {fmt(entry['p50_ms'], 2)} | {fmt(entry['p99_ms'], 2)} | "
            f"{entry['errors']} | {ratio} | {'–' if share is None else f'{share:.1%}'} | "
            f"{fmt(entry.get('shadows_run'), 0)} | {fmt(entry.get('shadows_dropped'), 0)} |"
        )
    for note in data.get("notes", []):
        lines += ["", note]
    return lines
