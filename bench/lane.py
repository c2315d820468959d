"""The predict lane against its floor (issue 28): ``--only lane``.

Interleaved rounds (bench/interleaved.py) of: the gateway with the access log off at 32 and at
1 connection (``POST /models/iris/predict``, iris LogisticRegression, one row); the same
gateway's configuration with the access log on (the default) at 32; and the **bare ASGI
floor** (bench/floor_app.py ``--bare``: a bare ASGI callable answering a constant under the
same uvicorn options) with uvicorn's access log off, at 32 and at 1; and the **predicting
floor** (``floor_app.py --predicting``: that callable plus the least a batching server that
calls the same model's ``predict`` does), at 32 and at 1, which says how much of the distance
to the bare floor is the model and batching, paid by any server. Every server pinned to
the server CPU, wrk on the other. Targets: at 32 connections the gateway >= 0.5x the floor's
req/s; at 1 connection its p50 within 0.2 ms of the floor's; the access log on costs <= 10%
of the gateway's c32 req/s. Each over the rounds' medians of per-round figures.

This module holds the pure parts (labels, verdicts, report); bench/sections/lane.py drives.
"""

from __future__ import annotations

import statistics
from typing import Any

import interleaved

GATEWAY_32 = "gateway, access log off, 32 conns"
GATEWAY_1 = "gateway, access log off, 1 conn"
LOGGED_32 = "gateway, access log on (the default), 32 conns"
FLOOR_32 = "bare ASGI floor, access log off, 32 conns"
FLOOR_1 = "bare ASGI floor, access log off, 1 conn"
PREDICTING_32 = "predicting floor (bare ASGI, batched sklearn predict), 32 conns"
PREDICTING_1 = "predicting floor (bare ASGI, batched sklearn predict), 1 conn"
TARGET_RATIO = 0.5
TARGET_GAP_MS = 0.2
TARGET_ACCESS_LOG = 0.9


def p50_gaps(data: dict[str, Any], label: str, base: str) -> list[float]:
    """``label``'s p50 minus ``base``'s in each round where both were measured without errors."""
    by_round: dict[int, dict[str, dict[str, Any]]] = {}
    for entry in data.get("rows", []):
        by_round.setdefault(entry["round"], {})[entry["point"]] = entry
    gaps = []
    for points in by_round.values():
        mine, theirs = points.get(label), points.get(base)
        if mine and theirs and mine.get("requests") and theirs.get("requests"):
            if not mine.get("errors") and not theirs.get("errors"):
                gaps.append(float(mine["p50_ms"]) - float(theirs["p50_ms"]))
    return gaps


def targets(data: dict[str, Any] | None) -> list[tuple[str, str, bool | None]]:
    if not data:
        return []
    out = [
        interleaved.verdict(
            data, GATEWAY_32, FLOOR_32, TARGET_RATIO, "lane: 32 conns, access logs off, >= 0.5x the bare ASGI floor"
        ),
        interleaved.verdict(
            data, LOGGED_32, GATEWAY_32, TARGET_ACCESS_LOG, "lane: the access log (on by default) costs <= 10% at 32"
        ),
    ]
    gaps = p50_gaps(data, GATEWAY_1, FLOOR_1)
    name = "lane: 1 conn p50 within 0.2 ms of the bare ASGI floor's"
    if not gaps:
        out.append((name, "not measured", False))
    else:
        gap = statistics.median(gaps)
        shown = f"+{gap:.3f} ms (median of {len(gaps)} rounds; {min(gaps):+.3f} to {max(gaps):+.3f})"
        out.append((name, shown, gap <= TARGET_GAP_MS))
    # What the stack allows a server that predicts at all: the same two targets for the
    # predicting floor, as information (None: no verdict on the gateway).
    out.append(
        interleaved.verdict(data, PREDICTING_32, FLOOR_32, None, "(reach) the predicting floor at 32, ÷ bare floor")
    )
    out.append(
        interleaved.verdict(data, GATEWAY_32, PREDICTING_32, None, "(reach) the gateway at 32, ÷ predicting floor")
    )
    floor_gaps = p50_gaps(data, PREDICTING_1, FLOOR_1)
    if floor_gaps:
        gap = statistics.median(floor_gaps)
        out.append(
            (
                "(reach) the predicting floor's 1 conn p50 over the bare floor's",
                f"+{gap:.3f} ms (median of {len(floor_gaps)} rounds; {min(floor_gaps):+.3f} to {max(floor_gaps):+.3f})",
                None,
            )
        )
    return out


def render(data: dict[str, Any] | None) -> list[str]:
    if not data:
        return []
    lines = ["", "## The predict lane against the bare ASGI floor (issue 28)", ""]
    lines += [
        "Interleaved rounds: the gateway (access log off; and on, the default, at 32) on `POST "
        "/models/iris/predict` and the bare ASGI floor (`bench/floor_app.py --bare`, uvicorn's access log "
        "off), each pinned to the server CPU, and the predicting floor (`floor_app.py --predicting`: the bare "
        "callable plus orjson, one batching queue and the same model's `predict`; no routing, checks, metrics or "
        "ids), which is what any server that batches and calls this model's `predict` on this stack pays. "
        "÷ floor at 32: the median over the rounds of each round's ratio; the c1 rows are compared by p50 (see "
        "the targets).",
        "",
    ]
    lines += interleaved.table(data, FLOOR_32, "÷ floor c32")
    return lines
