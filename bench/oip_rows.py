"""The Open Inference Protocol rows (issue 13): ``--only oip``.

One gateway (``serve --grpc-port``) on the bench registry, the same iris version
(``iris/1``) and the same one row, spoken four ways at 1 and 32 connections: the MLflow
protocol (``dataframe_split``, the baseline), OIP REST JSON, OIP REST with the binary
tensor extension (what tritonclient sends by default) and OIP gRPC (``ModelInfer`` with
``raw_input_contents``, what tritonclient.grpc sends). Then MLServer (mlserver-mlflow) on
the same version: its V2 REST with the same JSON body, and its gRPC with the same message.
REST load is wrk (or bench/loadgen.py); gRPC load is bench/grpc_load.py.

This module holds the bodies, the verdicts and the report; bench/run.py starts the servers.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from report import Row, fmt, rate

MLFLOW = "MLflow REST (dataframe_split)"
REST_JSON = "OIP REST JSON"
REST_BINARY = "OIP REST binary"
GRPC = "OIP gRPC (raw contents)"
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


def find(rows: list[Row], server: str, protocol: str, connections: int) -> Row | None:
    return next(
        (r for r in rows if r["server"] == server and r["protocol"] == protocol and r["connections"] == connections),
        None,
    )


def targets(data: dict[str, Any] | None) -> list[tuple[str, str, bool | None]]:
    """Issue 13's targets at each connection count measured: OIP REST (JSON, binary) within
    10% of the gateway's MLflow protocol; gRPC at least as fast as the faster REST row; and,
    at 32 connections, OIP REST JSON >= 10x MLServer's V2 REST."""
    if not data:
        return []
    rows: list[Row] = data.get("rows", [])
    out: list[tuple[str, str, bool | None]] = []
    for connections in data.get("connections", [1, 32]):
        base = rate(find(rows, GATEWAY, MLFLOW, connections))
        for protocol in (REST_JSON, REST_BINARY):
            name = f"OIP: {protocol} at {connections} conns within 10% of the MLflow protocol's req/s"
            mine = rate(find(rows, GATEWAY, protocol, connections))
            if base is None or mine is None:
                out.append((name, "not measured", False))
            else:
                out.append((name, f"{mine / base:.2f}×", mine >= 0.9 * base))
        rest = [r for r in (rate(find(rows, GATEWAY, p, connections)) for p in (REST_JSON, REST_BINARY)) if r]
        grpc_rate = rate(find(rows, GATEWAY, GRPC, connections))
        name = f"OIP: gRPC at {connections} conns ≥ the faster OIP REST row's req/s"
        if not rest or grpc_rate is None:
            out.append((name, "not measured", False))
        else:
            out.append((name, f"{grpc_rate / max(rest):.2f}×", grpc_rate >= max(rest)))
    name = "OIP: REST JSON at 32 conns ≥ 10× MLServer's V2 REST"
    theirs = rate(find(rows, MLSERVER, REST_JSON, 32))
    mine = rate(find(rows, GATEWAY, REST_JSON, 32))
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
    lines = ["", "## Open Inference Protocol (issue 13)", ""]
    lines += [
        "The same version (`iris/1`) and row through the gateway's MLflow protocol and its OIP "
        "(REST JSON, REST with the binary tensor extension, gRPC with `raw_input_contents`), and "
        "through MLServer's V2 (same JSON body, same gRPC message). Each server pinned to one core as "
        "in the main table. REST load from the main table's load generator; gRPC load from "
        "`bench/grpc_load.py` (Python, asyncio, one channel per connection, bytes in and out): "
        "**client CPU** is its CPU-seconds per second of load, near 1.00 meaning the client, not the "
        "server, was the limit.",
        "",
    ]
    lines += ["| server | protocol | conns | req/s | p50 ms | p99 ms | errors | ÷ gateway MLflow | client CPU |"]
    lines += ["|---|---|--:|--:|--:|--:|--:|--:|--:|"]
    for entry in rows:
        base = rate(find(rows, GATEWAY, MLFLOW, int(entry["connections"])))
        mine = rate(entry)
        ratio = f"{mine / base:.2f}×" if base and mine is not None else "–"
        cpu = entry.get("client_cpu_s")
        share = f"{float(cpu) / float(entry['seconds']):.2f}" if cpu is not None and entry.get("seconds") else "–"
        lines.append(
            f"| {entry['server']} | {entry['protocol']} | {entry['connections']} | {fmt(entry['req_s'], 0)} | "
            f"{fmt(entry['p50_ms'], 2)} | {fmt(entry['p99_ms'], 2)} | {entry['errors']} | {ratio} | {share} |"
        )
    if data.get("mlserver_skipped"):
        lines += ["", f"MLServer skipped: {data['mlserver_skipped']}."]
    for note in data.get("notes", []):
        lines += ["", note]
    return lines
