"""The Open Inference Protocol rows (issue 13): ``--only oip``.

One gateway (``serve --grpc-port``) on the bench registry, the same iris version
(``iris/1``) and the same one row, spoken four ways at 1 and 32 connections: the MLflow
protocol (``dataframe_split``, the baseline), OIP REST JSON, OIP REST with the binary
tensor extension (what tritonclient sends by default) and OIP gRPC (``ModelInfer`` with
``raw_input_contents``, what tritonclient.grpc sends). Then MLServer (mlserver-mlflow) on
the same version: its V2 REST with the same JSON body, and its gRPC with the same message.
REST load is wrk (or bench/loadgen.py); gRPC load is bench/grpc_load.py.

This module holds the bodies, the verdicts and the report; bench/sections/oip.py starts the servers.
"""

from __future__ import annotations

import json
import statistics
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from report import Row, fmt, rate

MLFLOW = "MLflow REST (dataframe_split)"
REST_JSON = "OIP REST JSON"
REST_BINARY = "OIP REST binary"
GRPC = "OIP gRPC (raw contents)"
GRPC_ONE = "OIP gRPC, one acceptor"
GATEWAY = "gateway"
MLSERVER = "MLServer (mlserver-mlflow)"
HEADER_LENGTH = "Inference-Header-Content-Length"


def rest_json_body(columns: list[str], row: list[float]) -> dict[str, Any]:
    """One FP64 tensor of shape [1, 1] per column, as MLServer's mlflow runtime maps a
    column signature; ``content_type: pd`` so that MLServer decodes it as a frame too."""
    inputs = [{"name": c, "datatype": "FP64", "shape": [1, 1], "data": [v]} for c, v in zip(columns, row, strict=True)]
    return {"inputs": inputs, "parameters": {"content_type": "pd"}}


def rest_binary_body(columns: list[str], row: list[float]) -> tuple[bytes, int]:
    """The binary tensor extension as tritonclient sends it: a JSON header (each input's
    ``binary_data_size``; outputs asked for in binary), then each tensor's little-endian
    bytes. Returns the body and the header's length (``Inference-Header-Content-Length``)."""
    inputs = [{"name": c, "datatype": "FP64", "shape": [1, 1], "parameters": {"binary_data_size": 8}} for c in columns]
    header = json.dumps(
        {"inputs": inputs, "parameters": {"content_type": "pd", "binary_data_output": True}}, separators=(",", ":")
    ).encode()
    return header + b"".join(struct.pack("<d", value) for value in row), len(header)


def grpc_body(columns: list[str], row: list[float], *, model: str, version: str) -> bytes:
    """A serialized ``ModelInferRequest``: one FP64 [1, 1] input per column, in
    ``raw_input_contents`` (tritonclient.grpc's way)."""
    from gateway.protocols.proto import grpc_service_pb2 as pb

    request = pb.ModelInferRequest(model_name=model, model_version=version)
    request.parameters["content_type"].string_param = "pd"
    for column, value in zip(columns, row, strict=True):
        request.inputs.add(name=column, datatype="FP64", shape=[1, 1])
        request.raw_input_contents.append(struct.pack("<d", value))
    return bytes(request.SerializeToString())


@dataclass(frozen=True)
class Bodies:
    json: Path
    binary: Path
    binary_header_length: int  # Inference-Header-Content-Length
    grpc: Path  # a serialized ModelInferRequest for iris/1
    grpc_unversioned: Path  # the same for iris, no version: MLServer's model has none


def write_bodies(work: Path, columns: list[str], row: list[float]) -> Bodies:
    binary, header_length = rest_binary_body(columns, row)
    bodies = Bodies(
        work / "oip.json", work / "oip-binary.bin", header_length, work / "oip-grpc.bin", work / "oip-grpc-nov.bin"
    )
    bodies.json.write_text(json.dumps(rest_json_body(columns, row)))
    bodies.binary.write_bytes(binary)
    bodies.grpc.write_bytes(grpc_body(columns, row, model="iris", version="1"))
    bodies.grpc_unversioned.write_bytes(grpc_body(columns, row, model="iris", version=""))
    return bodies


# --- verdicts ------------------------------------------------------------------------------
#
# The gateway's points run in rounds (bench/sections/oip.py: OIP_ROUNDS), every protocol once a round
# at each connection count, so that a point is compared with the MLflow-protocol point of its
# own round, seconds away, not minutes: on a shared VM one run drifts by 10-20%. A row's ratio
# is the median of its rounds' ratios. MLServer's points are one round, after the gateway's.


def _rounds(rows: list[Row], server: str, protocol: str, connections: int) -> list[Row]:
    return [r for r in rows if (r["server"], r["protocol"], r["connections"]) == (server, protocol, connections)]


def find(rows: list[Row], server: str, protocol: str, connections: int, round_: int | None = None) -> Row | None:
    points = _rounds(rows, server, protocol, connections)
    return next((r for r in points if round_ is None or r.get("round", 1) == round_), None)


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _median_of(points: list[Row], field: str) -> float | None:
    return _median([float(r[field]) for r in points if r.get(field) is not None])


def _median_rate(rows: list[Row], server: str, protocol: str, connections: int) -> float | None:
    return _median([v for v in (rate(r) for r in _rounds(rows, server, protocol, connections)) if v])


def round_ratios(rows: list[Row], protocol: str, connections: int, over: tuple[str, ...] = (MLFLOW,)) -> list[float]:
    """Each round's gateway ``protocol`` req/s over the fastest of ``over`` in the same round."""
    out = []
    for entry in _rounds(rows, GATEWAY, protocol, connections):
        mine = rate(entry)
        theirs = [rate(find(rows, GATEWAY, p, connections, entry.get("round", 1))) for p in over]
        known = [value for value in theirs if value]
        if mine is not None and len(known) == len(over):
            out.append(mine / max(known))
    return out


def summary(rows: list[Row]) -> list[Row]:
    """One row per server, protocol and connection count, in the order first measured: the
    medians of its rounds (req/s, p50, p99, requests per batch, client CPU), errors summed, and
    ``ratio``: over the gateway's MLflow protocol, the median of the rounds' ratios for the
    gateway's rows, the medians' ratio for MLServer's."""
    keys: list[tuple[str, str, int]] = []
    for entry in rows:
        key = (entry["server"], entry["protocol"], int(entry["connections"]))
        if key not in keys:
            keys.append(key)
    out = []
    for server, protocol, connections in keys:
        points = _rounds(rows, server, protocol, connections)
        measured = [r for r in points if rate(r) is not None]
        shares = [
            float(r["client_cpu_s"]) / float(r["seconds"])
            for r in measured
            if r.get("client_cpu_s") is not None and r.get("seconds")
        ]
        if server == GATEWAY:
            ratio = _median(round_ratios(rows, protocol, connections))
        else:
            base, mine = _median_rate(rows, GATEWAY, MLFLOW, connections), _median_of(measured, "req_s")
            ratio = mine / base if mine is not None and base else None
        out.append(
            {
                "server": server,
                "protocol": protocol,
                "connections": connections,
                "rounds": len(points),
                "req_s": _median_of(measured, "req_s"),
                "p50_ms": _median_of(measured, "p50_ms"),
                "p99_ms": _median_of(measured, "p99_ms"),
                "errors": sum(int(r.get("errors") or 0) for r in points),
                "ratio": ratio,
                "requests_per_batch": _median_of(measured, "requests_per_batch"),
                "client_cpu": _median(shares),
            }
        )
    return out


def targets(data: dict[str, Any] | None) -> list[tuple[str, str, bool | None]]:
    """Issue 13's targets at each connection count measured, on the medians of the rounds'
    ratios: OIP REST (JSON, binary) within 10% of the gateway's MLflow protocol; gRPC at least
    as fast as the faster REST row of its round; and, at 32 connections, OIP REST JSON >= 10x
    MLServer's V2 REST (medians)."""
    if not data:
        return []
    rows: list[Row] = data.get("rows", [])
    out: list[tuple[str, str, bool | None]] = []
    for connections in data.get("connections", [1, 32]):
        for protocol in (REST_JSON, REST_BINARY):
            name = f"OIP: {protocol} at {connections} conns within 10% of the MLflow protocol's req/s"
            ratio = _median(round_ratios(rows, protocol, connections))
            out.append((name, "not measured", False) if ratio is None else (name, f"{ratio:.2f}×", ratio >= 0.9))
        name = f"OIP: gRPC at {connections} conns ≥ the faster OIP REST row's req/s"
        ratio = _median(round_ratios(rows, GRPC, connections, over=(REST_JSON, REST_BINARY)))
        out.append((name, "not measured", False) if ratio is None else (name, f"{ratio:.2f}×", ratio >= 1.0))
    name = "OIP: REST JSON at 32 conns ≥ 10× MLServer's V2 REST"
    theirs, mine = _median_rate(rows, MLSERVER, REST_JSON, 32), _median_rate(rows, GATEWAY, REST_JSON, 32)
    if data.get("mlserver_skipped"):
        out.append((name, f"MLServer skipped: {data['mlserver_skipped']}", None))
    elif theirs is None or mine is None:
        out.append((name, "not measured", False))
    else:
        out.append((name, f"{mine / theirs:.1f}×", mine >= 10 * theirs))
    return out


# --- the report ------------------------------------------------------------------------------


def render(data: dict[str, Any] | None) -> list[str]:
    if not data:
        return []
    rows: list[Row] = data.get("rows", [])
    rounds = max((int(r.get("round", 1)) for r in rows if r["server"] == GATEWAY), default=1)
    lines = ["", "## Open Inference Protocol (issue 13)", ""]
    lines += [
        "The same version (`iris/1`) and row through the gateway's MLflow protocol and its OIP "
        "(REST JSON, REST with the binary tensor extension, gRPC with `raw_input_contents`), and "
        "through MLServer's V2 (same JSON body, same gRPC message). Each server pinned to one core as "
        f"in the main table. The gateway's points ran in {rounds} rounds, every protocol once a round; a "
        "row gives the medians of its rounds, and **÷ gateway MLflow** the median of its rounds' ratios to "
        "the MLflow-protocol point of the same round. "
        f"**{GRPC_ONE}**: a second gateway, alike but for `GATEWAY_GRPC_ACCEPTORS=1`, measured in the "
        "same rounds. **req/batch**: requests per predict call, from the gateway's `gateway_batch_size`. "
        "REST load from the main table's load generator; gRPC load from "
        "`bench/grpc_load.py` (Python, asyncio, one channel per connection, bytes in and out): "
        "**client CPU** is its CPU-seconds per second of load, near 1.00 meaning the client, not the "
        "server, was the limit.",
        "",
    ]
    lines += [
        "| server | protocol | conns | req/s | p50 ms | p99 ms | errors | ÷ gateway MLflow | req/batch | client CPU |"
    ]
    lines += ["|---|---|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for entry in summary(rows):
        ratio = f"{entry['ratio']:.2f}×" if entry["ratio"] is not None else "–"
        share = fmt(entry["client_cpu"], 2)
        lines.append(
            f"| {entry['server']} | {entry['protocol']} | {entry['connections']} | {fmt(entry['req_s'], 0)} | "
            f"{fmt(entry['p50_ms'], 2)} | {fmt(entry['p99_ms'], 2)} | {entry['errors']} | {ratio} | "
            f"{fmt(entry['requests_per_batch'], 2)} | {share} |"
        )
    per_round = []
    for connections in data.get("connections", [1, 32]):
        for protocol in (REST_JSON, REST_BINARY, GRPC, GRPC_ONE):
            ratios = round_ratios(rows, protocol, connections)
            if len(ratios) > 1:
                per_round.append(f"{protocol} at {connections}: " + ", ".join(f"{r:.2f}×" for r in ratios))
    if per_round:
        lines += ["", "Each round's ratio to the MLflow protocol: " + "; ".join(per_round) + "."]
    if data.get("mlserver_skipped"):
        lines += ["", f"MLServer skipped: {data['mlserver_skipped']}."]
    for note in data.get("notes", []):
        lines += ["", note]
    return lines
