"""What serving a version in an isolated worker costs (issue 24): ``--only isolated``.

Three gateways on the bench registry, each pinned like the other sections: one serving iris v1
in process (its requirements fit), one with ``GATEWAY_ENV_ISOLATE=always`` and
``GATEWAY_SANDBOX=off`` serving the same files from a worker on an environment built with uv,
and one with the sandbox on (issue 43: the default, every layer this host has). Their points alternate over
``ROUNDS`` rounds at 1 and 32 connections; each ratio is the median of the per-round ratios.
Beside them: an environment build from a warm uv cache (a fresh environment directory, the
cache of an earlier build), whether a second version with the same requirements added a build
or a process, and the isolated gateway's own RSS before and after its versions loaded.

This module holds the pure parts (verdicts, report); bench/sections/isolated.py drives.
"""

from __future__ import annotations

import statistics
from typing import Any

ROUNDS = 3
CONNECTIONS = (1, 32)
IN_PROCESS, ISOLATED, SANDBOXED = "in process", "isolated worker", "isolated + sandbox"
SERVERS = (IN_PROCESS, ISOLATED, SANDBOXED)
THROUGHPUT_TARGET = 0.6  # isolated c32 req/s at least this share of in-process
P50_OVERHEAD_MS = 0.3  # isolated c1 p50 at most this above in-process
BUILD_SECONDS = 10.0  # a scikit-learn environment from a warm uv cache
SANDBOX_P50_OVERHEAD_MS = 0.1  # sandboxed c1 p50 at most this above the unsandboxed worker's


def _points(data: dict[str, Any], server: str, connections: int) -> list[dict[str, Any]]:
    return [r for r in data["rows"] if r["server"] == server and r["connections"] == connections]


def ratios(
    data: dict[str, Any], connections: int, key: str, server: str = ISOLATED, base: str = IN_PROCESS
) -> list[float]:
    """Per round: ``server``'s ``key`` over ``base``'s (req/s), or minus (p50 ms)."""
    out = []
    for index in range(ROUNDS):
        mine = [r for r in _points(data, server, connections) if r["round"] == index]
        theirs = [r for r in _points(data, base, connections) if r["round"] == index]
        if mine and theirs and mine[0]["requests"] and theirs[0]["requests"]:
            if key == "req_s":
                out.append(mine[0]["req_s"] / theirs[0]["req_s"])
            else:
                out.append(mine[0][key] - theirs[0][key])
    return out


def targets(data: dict[str, Any] | None) -> list[tuple[str, str, bool | None]]:
    if not data:
        return []
    out: list[tuple[str, str, bool | None]] = []
    throughput = ratios(data, 32, "req_s")
    name = f"isolated: c32 throughput >= {THROUGHPUT_TARGET}x in-process (median of rounds)"
    if throughput:
        median = statistics.median(throughput)
        out.append((name, f"{median:.2f}×", median >= THROUGHPUT_TARGET))
    else:
        out.append((name, "not measured", False))
    overhead = ratios(data, 1, "p50_ms")
    name = f"isolated: c1 p50 overhead <= {P50_OVERHEAD_MS} ms (median of rounds)"
    if overhead:
        median = statistics.median(overhead)
        out.append((name, f"+{median:.3f} ms", median <= P50_OVERHEAD_MS))
    else:
        out.append((name, "not measured", False))
    boxed = ratios(data, 1, "p50_ms", SANDBOXED, ISOLATED)
    name = f"sandbox: c1 p50 overhead over the unsandboxed worker <= {SANDBOX_P50_OVERHEAD_MS} ms (median of rounds)"
    if boxed:
        median = statistics.median(boxed)
        out.append((name, f"{median:+.3f} ms", median <= SANDBOX_P50_OVERHEAD_MS))
    elif _points(data, SANDBOXED, 1):
        out.append((name, "not measured", False))
    build = data.get("warm_build_seconds")
    out.append(
        (
            f"isolated: a scikit-learn environment from a warm uv cache <= {BUILD_SECONDS:g} s",
            "not measured" if build is None else f"{build:.1f} s",
            None if build is None else build <= BUILD_SECONDS,
        )
    )
    second = data.get("second_version")
    if second is not None:
        shared = second["same_environment"] and second["same_worker"] and second["environments_after"] == 1
        out.append(
            (
                "isolated: a second version with the same requirements adds no build and no process",
                "yes" if shared else f"no: {second}",
                shared,
            )
        )
    rss = data.get("gateway_rss_mb")
    if rss is not None:
        grown = rss["after"] - rss["before"]
        out.append(
            (
                "isolated: the gateway process's own RSS does not grow with isolated versions",
                f"{rss['before']:.0f} → {rss['after']:.0f} MiB ({grown:+.0f})",
                grown < 20,
            )
        )
    return out


def render(data: dict[str, Any] | None) -> list[str]:
    if not data:
        return []
    lines = ["", "## Isolated workers (issue 24)", ""]
    lines.append(
        "iris v1, one row, `POST /models/iris/versions/1/predict`: a gateway serving it in process against one "
        "with `GATEWAY_ENV_ISOLATE=always` serving the same files from a worker on its own uv-built "
        f"environment; points alternate over {ROUNDS} rounds, ratios are medians of per-round ratios."
    )
    lines += [
        "",
        "| connections | server | req/s | ratio to in process | p50 | p99 |",
        "|--:|:--|--:|--:|--:|--:|",
    ]
    for connections in CONNECTIONS:
        for server in SERVERS:
            points = _points(data, server, connections)
            if not points:
                continue
            rate = ratios(data, connections, "req_s", server) if server != IN_PROCESS else [1.0]
            lines.append(
                f"| {connections} | {server} | {statistics.median(r['req_s'] for r in points):.0f} | "
                f"{statistics.median(rate) if rate else float('nan'):.2f}× | "
                f"{statistics.median(r['p50_ms'] for r in points):.2f} ms | "
                f"{statistics.median(r['p99_ms'] for r in points):.2f} ms |"
            )
    lines.append("")
    for name, value, ok in targets(data):
        mark = "" if ok is None else (" ✅" if ok else " ❌")
        lines.append(f"- {name}: **{value}**{mark}")
    for note in data.get("notes", []):
        lines.append(f"- {note}")
    return lines
