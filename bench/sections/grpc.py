"""`--only grpc`: the gateway's gRPC against the grpcio floor and MLServer's, and one shared
connection: bench/grpc_rows.py."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc_rows
import oip_rows
from harness import COLUMNS, HERE, QUIET_POLL, ROW, WORK, Run, check_grpc, gateway, metric_totals, mlserver
from load import H2LOAD, drive_grpc
from servers import free_port


@contextlib.contextmanager
def grpc_floor(run: Run) -> Iterator[int]:
    """bench/grpc_floor.py on a free port, pinned like the servers; yields the port."""
    port = free_port()
    argv = [sys.executable, str(HERE / "grpc_floor.py"), "--port", str(port)]
    argv = ["taskset", "-c", run.server_cpus, *argv] if run.server_cpus else argv
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert process.stdout is not None
        if process.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the grpcio floor did not start (exit {process.poll()})")
        yield port
    finally:
        process.terminate()
        process.wait(timeout=20)


def _grpc_points(run: Run, server: str, port: int, body: Path, metrics_url: str | None) -> None:
    """Each of grpc_rows.POINTS against one server; with ``metrics_url`` (the gateway), the
    requests per predict call of each."""
    rows: list[dict[str, object]] = run.sections["grpc"]["rows"]  # type: ignore[index]
    notes: list[str] = run.sections["grpc"]["notes"]  # type: ignore[index]
    check_grpc(port, body)
    seconds = max(1.0, run.duration / 2)
    batches = ["gateway_batch_size_sum", "gateway_batch_size_count"]
    for label, connections, script, shared in grpc_rows.POINTS:
        if script == H2LOAD and not shutil.which(H2LOAD):
            note = "The h2load rows were skipped: h2load is not installed (`make bench` installs nghttp2-client)."
            if note not in notes:
                notes.append(note)
            continue
        target = f"127.0.0.1:{port}"
        options = {"connections": connections, "cpus": run.load_cpus, "shared": shared, "script": script}
        if run.warmup:
            drive_grpc(target, body, duration=run.warmup, **options)  # type: ignore[arg-type]
        before = metric_totals(metrics_url, batches) if metrics_url else None
        result = drive_grpc(target, body, duration=seconds, **options)  # type: ignore[arg-type]
        entry: dict[str, object] = {"server": server, "point": label, **result.as_dict()}
        entry["client_cpu"] = result.extra["client_cpu_s"] / result.extra["seconds"]  # type: ignore[operator]
        entry["first_error"] = result.extra["first_error"]
        if before is not None and metrics_url:
            after = metric_totals(metrics_url, batches)
            calls = after["gateway_batch_size_count"] - before["gateway_batch_size_count"]
            served = after["gateway_batch_size_sum"] - before["gateway_batch_size_sum"]
            entry["requests_per_batch"] = served / calls if calls else None
            if script == H2LOAD and served < result.requests:
                # h2load counts a gRPC error (a 200 whose trailers say so) as an answer; every
                # answer of the gateway's (prediction cache off) ran in a batch, so the calls
                # answered that no batch served were errors
                entry["errors"] = int(result.errors + result.requests - served)
                entry["first_error"] = entry["first_error"] or "answered without a batch: a gRPC error"
        rows.append(entry)
        run.log(
            f"grpc {server} {label}: {result.req_s:.0f} req/s, p50 {result.p50_ms:.2f} ms, "
            f"{entry.get('requests_per_batch') or '–'} per batch, {result.errors} errors"
        )


def section(run: Run, tracking_uri: str, mlserver_reason: str | None) -> None:
    """The gateway's gRPC against the grpcio floor and MLServer's, and one shared connection:
    bench/grpc_rows.py."""
    oip = oip_rows.write_bodies(WORK, COLUMNS, ROW)
    data: dict[str, object] = {"rows": [], "notes": []}
    run.sections["grpc"] = data
    port = free_port()
    quiet = {"GATEWAY_ACCESS_LOG": "false", **QUIET_POLL}
    with gateway(tracking_uri, "grpc", cpus=run.server_cpus, env=quiet, args=["--grpc-port", str(port)]) as gw:
        run.log(f"grpc: gateway ready in {gw.ready_seconds:.1f} s")
        _grpc_points(run, grpc_rows.GATEWAY, port, oip.grpc, gw.url)
    with grpc_floor(run) as floor_port:
        _grpc_points(run, grpc_rows.FLOOR, floor_port, oip.grpc, None)
    if mlserver_reason:
        data["notes"].append(f"MLServer skipped: {mlserver_reason}.")  # type: ignore[attr-defined]
        return
    with mlserver(run, tracking_uri) as ml:
        assert ml.grpc_port is not None
        _grpc_points(run, grpc_rows.MLSERVER, ml.grpc_port, oip.grpc_unversioned, None)
