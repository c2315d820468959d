"""Cost as the work grows (issue 28): ``--only spread`` and ``--only cold-sizes``.

**spread**: one gateway (room for every model, the access log off) and the same total load, 32
connections, Zipf-distributed (s = 1.1) over 1, 10 and 100 loaded models (``zipf-00`` …
``zipf-99``: iris LogisticRegressions of their own, each warmed by a request first), measured
in interleaved rounds (bench/interleaved.py). The goal: 10 and 100 models within 10% of one.
wrk draws each request's model (bench/post.lua, ``BENCH_PATHS``).

**cold-sizes**: the latency of a request that misses the LRU, by model size, on the memory
section's registry (bench/memory_churn.py): a gateway with ``GATEWAY_MAX_LOADED_MODELS=1``, and
requests to v1 … v10 of one model in turn, three passes, so that every request evicts the
previous version and loads its own. The first pass also downloads each version into the
artifact cache; the later passes load from it (what an LRU miss costs once a host has seen a
version).

This module holds the pure parts (plans, verdicts, report); bench/sections/spread.py and cold_sizes.py drive.
"""

from __future__ import annotations

import statistics
from typing import Any

import interleaved
from report import fmt

SPREAD_MODELS = (1, 10, 100)
SPREAD_S = 1.1
CONNECTIONS = 32
TARGET = 0.9  # 10 and 100 models within 10% of one
COLD_PASSES = 3


def label(models: int) -> str:
    return f"{models} model{'s' if models > 1 else ''}"


def paths(models: int) -> list[str]:
    return [f"/models/zipf-{index:02d}/versions/1/predict" for index in range(models)]


def targets(data: dict[str, Any] | None) -> list[tuple[str, str, bool | None]]:
    if not data:
        return []
    base = label(SPREAD_MODELS[0])
    return [
        interleaved.verdict(
            data,
            label(models),
            base,
            TARGET,
            f"spread: Zipf traffic over {models} loaded models within 10% of one model's req/s",
        )
        for models in SPREAD_MODELS[1:]
    ]


def render(data: dict[str, Any] | None) -> list[str]:
    if not data:
        return []
    lines = ["", "## Cost as the work grows: 1, 10 and 100 loaded models (issue 28)", ""]
    lines += [
        f"One gateway with room for every model, the access log off; {CONNECTIONS} connections, each request's "
        f"model drawn by Zipf (s = {SPREAD_S}) from the first N of `zipf-00` … `zipf-99` (iris "
        "LogisticRegressions of their own, all loaded and warm), interleaved rounds. ÷ 1 model: the median "
        "over the rounds of each round's ratio.",
        "",
    ]
    lines += interleaved.table(data, label(SPREAD_MODELS[0]), "÷ 1 model")
    return lines


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def cold_summary(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per kind: first loads (download + load) and reloads (from the artifact cache), p50/p99."""
    out = []
    for kind in dict.fromkeys(sample["kind"] for sample in samples):
        mine = [s for s in samples if s["kind"] == kind and s["status"] == 200]
        first = [s["seconds"] * 1000 for s in mine if s["pass"] == 1]
        again = [s["seconds"] * 1000 for s in mine if s["pass"] > 1]
        size = statistics.median(s["size_mib"] for s in mine) if mine else None
        errors = sum(1 for s in samples if s["kind"] == kind and s["status"] != 200)
        out.append(
            {
                "kind": kind,
                "size_mib": size,
                "first_p50_ms": percentile(first, 0.5),
                "first_p99_ms": percentile(first, 0.99),
                "reload_p50_ms": percentile(again, 0.5),
                "reload_p99_ms": percentile(again, 0.99),
                "requests": len(first) + len(again),
                "errors": errors,
            }
        )
    return out


def render_cold(data: dict[str, Any] | None) -> list[str]:
    if not data:
        return []
    lines = ["", "## A request that misses the LRU, by model size (issue 28)", ""]
    lines += [
        "`GATEWAY_MAX_LOADED_MODELS=1`: requests to v1 … v10 of one model in turn, "
        f"{COLD_PASSES} passes, each request evicting the version before it. **First load**: the first pass "
        "(download into the artifact cache, load, warm-up, predict); **reload**: the later passes (from the "
        "artifact cache). Sizes are the gateway's own measure of each version (`size_bytes`).",
        "",
        "| model | size MiB | first load p50 ms | first load p99 ms | reload p50 ms | reload p99 ms "
        "| requests | errors |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for row in cold_summary(data.get("samples", [])):
        lines.append(
            f"| {row['kind']} | {fmt(row['size_mib'], 1)} | {fmt(row['first_p50_ms'], 0)} | "
            f"{fmt(row['first_p99_ms'], 0)} | {fmt(row['reload_p50_ms'], 0)} | {fmt(row['reload_p99_ms'], 0)} | "
            f"{row['requests']} | {row['errors']} |"
        )
    return lines
