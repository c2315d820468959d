"""The cost of a traffic split and of a shadow (issue 14): ``--only traffic``.

One gateway on the bench registry; load on the default route (``/models/iris/predict``,
``champion`` -> v1) at 32 connections. Six rounds of 5 s points, each: no split; v2 tagged
``gateway.traffic.weight=10`` (a 2-arm split: 90% v1, 10% v2); no split; the same split with
every request carrying a route key of its own (``X-Route-Key``, a new random value each time:
callers spread over a keyed split, each hashed to its arm; issue 28's "keyed canary split");
no split; v2 tagged ``gateway.traffic.shadow=25`` instead (every answer from v1, 25% of
requests also run on v2 after it); and a last no-split point after the rounds. Then a 25% shadow to a slow version
(50 ms, no CPU) and one to a failing version (raises on the bench's row), each followed by a
no-split point: the primary must answer every request, at a p99 no worse than the worst of
the no-split and healthy-shadow points (bench/shadow_probes.py). Each tag is set in the bench's scratch
registry, then ``POST /admin/sync``, and the point starts only once
``GET /models/iris/traffic`` shows it as served (the canary warm with its weight, the shadow
warm). Every split or shadow point sits between two no-split points and is compared with
their mean, and the verdict takes the median over the rounds: on a shared VM the same
no-split point has measured 12% apart within one run, so one point against one baseline
says more about the machine than about the split.

This module holds the pure parts (reading /traffic, verdicts, report); bench/sections/traffic.py drives.
"""

from __future__ import annotations

import statistics
from typing import Any

from report import fmt, rate

WEIGHT_TAG = "gateway.traffic.weight"
SHADOW_TAG = "gateway.traffic.shadow"
MODEL = "iris"
ARM_VERSION = 2  # the canary / shadow; champion (the default) is v1
WEIGHT = 10
SHADOW = 25
CONNECTIONS = 32
ROUNDS = 6
POINT_SECONDS = 5.0  # each point's load (at most --duration), after a warm-up of at most:
WARMUP_SECONDS = 1.0
# Six rounds of 5 s points rather than three of 10 s, in the same time: on a shared VM the
# no-split points drift by up to 20% within a run, and a point is compared with neighbours
# measured seconds, not half a minute, away; the median of six shrugs off a burst.
NONE, SPLIT, KEYED, SHADOWED = "no split", "split 90/10", "keyed split 90/10", "shadow 25%"
KEY_HEADER = "X-Route-Key"  # the gateway's default GATEWAY_ROUTE_KEY_HEADER
SLOW, FAILING = "slow", "failing"  # the probe versions' bench.shadow_probe tags
PROBE_TAG = "bench.shadow_probe"
PROBED = {SLOW: "shadow 25% to a slow version", FAILING: "shadow 25% to a failing version"}

Point = tuple[str, float, float, str | None]
"""(label, weight, shadow, probe): the arm is v{ARM_VERSION}, or the probe version so tagged."""


def plan(rounds: int = ROUNDS, *, probes: bool = True, keyed: bool = True) -> list[Point]:
    """Each point in order: every arm point between two no-split ones; then the probes'. A
    keyed point has the split's weight; its load sends route keys (:func:`keyed_point`)."""
    points: list[Point] = []
    for n in range(1, rounds + 1):
        points += [(NONE, 0, 0, None), (f"{SPLIT} #{n}", WEIGHT, 0, None)]
        if keyed:
            points += [(NONE, 0, 0, None), (f"{KEYED} #{n}", WEIGHT, 0, None)]
        points += [(NONE, 0, 0, None), (f"{SHADOWED} #{n}", 0, SHADOW, None)]
    points.append((NONE, 0, 0, None))
    if probes:
        for probe, label in PROBED.items():
            points += [(label, 0, SHADOW, probe), (NONE, 0, 0, None)]
    return points


def kind(label: str) -> str:
    return label.split(" #")[0]


def keyed_point(label: str) -> bool:
    """Whether the point's requests each carry a random route key (in :data:`KEY_HEADER`)."""
    return kind(label) == KEYED


def served(detail: dict[str, Any], *, weight: float = 0.0, shadow: float = 0.0, version: int = ARM_VERSION) -> bool:
    """Whether ``GET /models/{name}/traffic`` shows the arm as served: no arm at all when
    both are 0; else the arm (``version``) warm with that served weight and shadow."""
    arms = [arm for arm in detail.get("arms", []) if arm.get("weight") or arm.get("shadow")]
    if not weight and not shadow:
        return not arms
    for arm in arms:
        if arm.get("version") == version:
            return bool(arm.get("warm")) and arm.get("served_weight") == weight and arm.get("shadow") == shadow
    return False


def arm_requests(detail: dict[str, Any]) -> dict[str, int]:
    """Requests answered per arm since start, from /traffic's stats (``arm:version``)."""
    return {f"{s['arm']}:{s['version']}": int(s["requests"]) for s in detail.get("stats", [])}


def shadow_counts(detail: dict[str, Any], version: int) -> dict[str, int]:
    """This process's shadow copies to ``version`` since start, from /traffic's ``replicas``
    (``this_replica``): ``requests`` run (answered or failed), ``errors``, ``dropped``."""
    mine = [r for r in detail.get("replicas") or [] if r.get("this_replica")]
    for count in mine[0].get("counts", []) if mine else []:
        if count.get("arm") == "shadow" and count.get("version") == version:
            return {field: int(count.get(field, 0)) for field in ("requests", "errors", "dropped")}
    return {"requests": 0, "errors": 0, "dropped": 0}


def ratios(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Each split or shadow point against the mean of the no-split points either side of it:
    req/s (its over theirs) and CPU per request (theirs over its, so that above 1 is better
    too). A point whose neighbours were not measured has no ratio."""
    rows = data.get("rows", [])
    out = []
    for i, entry in enumerate(rows):
        if kind(entry["point"]) == NONE:
            continue
        sides = [rows[j] for j in (i - 1, i + 1) if 0 <= j < len(rows) and kind(rows[j]["point"]) == NONE]
        mine, theirs = rate(entry), [r for r in (rate(side) for side in sides) if r is not None]
        cpu, cpus = entry.get("cpu_us_per_request"), [c for c in (s.get("cpu_us_per_request") for s in sides) if c]
        out.append(
            {
                "point": entry["point"],
                "kind": kind(entry["point"]),
                "req_s": mine / statistics.fmean(theirs) if mine is not None and len(theirs) == 2 else None,
                "cpu": statistics.fmean(cpus) / cpu if cpu and len(cpus) == 2 else None,
                "still_served": entry.get("still_served", True),
            }
        )
    return out


def median_ratio(data: dict[str, Any], which: str, field: str = "req_s") -> float | None:
    return _median(ratios(data), which, field)


def _median(points: list[dict[str, Any]], which: str, field: str = "req_s") -> float | None:
    measured = [r[field] for r in points if r["kind"] == which and r[field] is not None and r["still_served"]]
    return statistics.median(measured) if measured else None


def targets(data: dict[str, Any] | None) -> list[tuple[str, str, bool | None]]:
    """Issue 14: a 2-arm split within 5% of no split; a 25% shadow within 30%. Issue 28: the
    split keyed by route keys within 3%. Each the median over the rounds of each point's ratio
    to its neighbouring no-split points; a kind the run did not plan has no target."""
    if not data:
        return []
    out: list[tuple[str, str, bool | None]] = []
    compared = ratios(data)
    planned = {kind(r["point"]) for r in data.get("rows", [])} | {SPLIT, SHADOWED}
    limits = ((SPLIT, 0.95, "within 5%"), (KEYED, 0.97, "within 3%"), (SHADOWED, 0.70, "within 30%"))
    for label, floor, what in limits:
        if label not in planned:
            continue
        name = f"traffic: {label} at {CONNECTIONS} conns {what} of no split's req/s (median of rounds)"
        points = [r for r in compared if r["kind"] == label]
        mine = _median(compared, label)
        if points and not all(r["still_served"] for r in points):
            out.append((name, "not measured: the arm was no longer served at the end of a point", False))
        elif mine is None:
            out.append((name, "not measured", False))
        else:
            out.append((name, f"{mine:.2f}×", mine >= floor))
    return out + probe_targets(data)


def probe_targets(data: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """Issue 14: a slow or failing shadow changes neither the primary's answers (every request
    answered 2xx) nor its p99: no worse than the worst of the run's points without a faulty
    shadow (no split, and the same shadow to a healthy version). That is the spread the run
    measured where nothing was faulty, not a number chosen here; the healthy shadow is in it
    because the fault is what is judged, not shadowing itself (whose CPU the shadow points'
    ratios give)."""
    rows = data.get("rows", [])
    baseline = [r["p99_ms"] for r in rows if kind(r["point"]) in (NONE, SHADOWED) and r.get("p99_ms") is not None]
    out: list[tuple[str, str, bool | None]] = []
    for label in PROBED.values():
        name = f"traffic: {label}: the primary answers every request, p99 within the healthy points'"
        entry = next((r for r in rows if r["point"] == label), None)
        if entry is None:
            continue  # not in this run's plan
        if not baseline or entry.get("p99_ms") is None or not entry.get("still_served", True):
            out.append((name, "not measured", False))
            continue
        p99, errors, worst = entry["p99_ms"], entry["errors"], max(baseline)
        measured = f"p99 {p99:.2f} ms (healthy {min(baseline):.2f}-{worst:.2f} ms), {errors} errors"
        if entry.get("shadow_errors") is not None:
            measured += f"; shadows: {entry.get('shadows_run'):.0f} run, {entry['shadow_errors']:.0f} failed"
            measured += f", {entry.get('shadows_dropped'):.0f} dropped"
        out.append((name, measured, errors == 0 and p99 <= worst))
    return out


def render(data: dict[str, Any] | None) -> list[str]:
    if not data:
        return []
    compared = ratios(data)
    by_point = {r["point"]: r for r in compared}
    lines = ["", "## A traffic split and a shadow (issue 14)", ""]
    lines += [
        f"`POST /models/{MODEL}/predict` (the default route: `champion` → v1) at {CONNECTIONS} conns, "
        f"{POINT_SECONDS:g} s points (at most; after at most {WARMUP_SECONDS:g} s of warm-up), "
        f"in {ROUNDS} rounds of: no split; split (v{ARM_VERSION} tagged `{WEIGHT_TAG}={WEIGHT}`); no split; "
        f"the same split keyed (every request with a `{KEY_HEADER}` of its own, a new random value each time, "
        "so that each is hashed to its arm); no split; "
        f"shadow (v{ARM_VERSION} tagged `{SHADOW_TAG}={SHADOW}` instead); then no split once more; then the "
        f"same shadow to a version that answers 50 ms late without using the CPU, no split, the same shadow "
        "to a version that fails on the bench's row, and no split (bench/shadow_probes.py). "
        f"Each point starts once `GET /models/{MODEL}/traffic` shows the tag as served "
        "(the guard's thresholds raised out of reach, so that it cannot take the split away). "
        "**÷ no split**: the point's req/s over the mean of the no-split points either side of it; "
        "**CPU ÷**: the same for the server's CPU per request, inverted (their µs over its µs: "
        "below 1 costs more); the targets take the median over the rounds. **Canary share**: "
        "the share of the point's requests the canary arm answered (/traffic's counts); **shadows run**: "
        "shadow requests answered or failed during the point, and shadow requests dropped.",
        "",
    ]
    lines += [
        "| point | req/s | p50 ms | p99 ms | errors | server CPU µs/req | ÷ no split | CPU ÷ | canary share "
        "| shadows run | dropped |"
    ]
    lines += ["|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for entry in data.get("rows", []):
        ratio = by_point.get(entry["point"], {})
        share = entry.get("canary_share")
        lines.append(
            f"| {entry['point']} | {fmt(entry['req_s'], 0)} | {fmt(entry['p50_ms'], 2)} | {fmt(entry['p99_ms'], 2)} | "
            f"{entry['errors']} | {fmt(entry.get('cpu_us_per_request'), 1)} | {_times(ratio.get('req_s'))} | "
            f"{_times(ratio.get('cpu'))} | {'–' if share is None else f'{share:.1%}'} | "
            f"{fmt(entry.get('shadows_run'), 0)} | {fmt(entry.get('shadows_dropped'), 0)} |"
        )
    for label in (SPLIT, KEYED, SHADOWED):
        if _median(compared, label) is None:
            continue
        lines += [
            "",
            f"Median over the rounds, {label}: {_times(_median(compared, label))} no split's req/s, "
            f"{_times(_median(compared, label, 'cpu'))} by CPU per request.",
        ]
    for name, measured, ok in probe_targets(data):
        lines += ["", f"{name.removeprefix('traffic: ')}: {measured}: {'pass' if ok else 'FAIL'}."]
    for note in data.get("notes", []):
        lines += ["", note]
    return lines


def _times(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}×"
