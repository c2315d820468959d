"""gRPC against its own floor and MLServer, and calls that share one connection (issue 28):
``--only grpc``.

Three servers, each pinned to the server CPU in turn: the gateway (``serve --grpc-port``, the
access log off as on the floor), the **grpcio floor** (bench/grpc_floor.py: grpc.aio answering
a constant, no parsing, no model) and MLServer (mlserver-mlflow, the same version). The same
``ModelInferRequest`` (iris, one row, raw contents) at: 1 connection; 32 connections (32
channels, one call in flight each: bench/grpc_load.py); 16 calls in flight on ONE channel
(``grpc_load.py --shared``); and 16 threads sharing one tritonclient client
(bench/triton_threads.py), the way most tritonclient users call; and the 32 connections and
the one shared connection again from h2load (a client in C, where installed: ``make bench``).
For the gateway, the requests per predict call (``gateway_batch_size``) of each point.

This module holds the pure parts (verdicts, report); bench/sections/grpc.py drives.
"""

from __future__ import annotations

from typing import Any

from report import Row, fmt, rate

GATEWAY, FLOOR, MLSERVER = "gateway", "grpcio floor (constant answer)", "MLServer (mlserver-mlflow)"
C1, C32, SHARED, TRITON = (
    "1 connection",
    "32 connections",
    "16 calls on one channel",
    "16 threads, one tritonclient",
)
C32_H2, SHARED_H2 = "32 connections (h2load)", "16 calls on one connection (h2load)"
POINTS = ((C1, 1, "grpc_load.py", False), (C32, 32, "grpc_load.py", False))
POINTS += ((SHARED, 16, "grpc_load.py", True), (TRITON, 16, "triton_threads.py", True))
# The same loads from a client in C (bench/load.py drive_h2load): the Python client above spends
# most of a CPU at the grpcio floor's rate, so the floor's figure is partly the client's.
POINTS += ((C32_H2, 32, "h2load", False), (SHARED_H2, 16, "h2load", True))
TARGET_BATCH = 4.0  # requests per predict call, 16 threads on one tritonclient
TARGET_FLOOR = 0.8  # gateway c32 over the grpcio floor's
TARGET_MLSERVER = 3.0  # gateway c32 over MLServer's gRPC


def find(data: dict[str, Any], server: str, point: str) -> Row | None:
    return next((r for r in data.get("rows", []) if r["server"] == server and r["point"] == point), None)


def _ratio(data: dict[str, Any], point: str, over: str) -> float | None:
    mine, theirs = rate(find(data, GATEWAY, point)), rate(find(data, over, point))
    return mine / theirs if mine and theirs else None


def targets(data: dict[str, Any] | None) -> list[tuple[str, str, bool | None]]:
    if not data:
        return []
    out: list[tuple[str, str, bool | None]] = []
    shared = find(data, GATEWAY, TRITON)
    per_batch = shared.get("requests_per_batch") if shared else None
    name = f"grpc: 16 threads on one tritonclient reach the batcher together (>= {TARGET_BATCH:.0f} per batch)"
    if per_batch is None:
        out.append((name, "not measured", False))
    else:
        out.append((name, f"{per_batch:.2f} requests per batch", per_batch >= TARGET_BATCH and not shared["errors"]))
    for over, target in ((FLOOR, TARGET_FLOOR), (MLSERVER, TARGET_MLSERVER)):
        # h2load's point where both were measured with it (the client is not the limit), else the Python client's
        point = C32_H2 if _ratio(data, C32_H2, over) is not None else C32
        ratio = _ratio(data, point, over)
        name = f"grpc: gateway at {point} >= {target}x {over}"
        if ratio is None:
            out.append((name, "not measured", None))
            continue
        errors = (find(data, GATEWAY, point) or {}).get("errors") or 0
        said = f"{ratio:.2f}×" + (f" ({errors} errors)" if errors else "")
        out.append((name, said, ratio >= target and not errors))
    return out


def render(data: dict[str, Any] | None) -> list[str]:
    if not data:
        return []
    lines = ["", "## gRPC: its floor, MLServer, one shared connection (issue 28)", ""]
    lines += [
        "The same `ModelInferRequest` (iris, one row, raw contents) to the gateway (`serve --grpc-port`, "
        "access log off), to the **grpcio floor** (`bench/grpc_floor.py`: grpc.aio answering a constant "
        "without parsing) and to MLServer, each pinned to the server CPU. **32 connections**: 32 channels, "
        "one call in flight each; **16 calls on one channel**: one HTTP/2 connection; **16 threads, one "
        "tritonclient**: `tritonclient.grpc.InferenceServerClient` shared by 16 threads; **(h2load)**: the "
        "same loads from nghttp2's h2load, a client in C (the targets read these rows where both servers "
        "have them; h2load sees HTTP statuses only, each server's first call is checked). Client CPU: the "
        "load generator's CPU-seconds per second (near 1.00: the client was the limit).",
        "",
        "| server | load | req/s | p50 ms | p99 ms | errors | ÷ floor | requests per batch | client CPU |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for entry in data.get("rows", []):
        floor = rate(find(data, FLOOR, entry["point"]))
        mine = rate(entry)
        ratio = f"{mine / floor:.2f}×" if mine and floor else "–"
        lines.append(
            f"| {entry['server']} | {entry['point']} | {fmt(entry['req_s'], 0)} | {fmt(entry['p50_ms'], 2)} | "
            f"{fmt(entry['p99_ms'], 2)} | {entry['errors']} | {ratio} | {fmt(entry.get('requests_per_batch'), 2)} | "
            f"{fmt(entry.get('client_cpu'), 2)} |"
        )
    for note in data.get("notes", []):
        lines += ["", note]
    return lines
