"""`--only oip`: the gateway's OIP (REST JSON, REST binary, gRPC) against its MLflow protocol and
against MLServer's V2 REST and gRPC: bench/oip_rows.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import oip_rows
from harness import COLUMNS, ROW, WORK, Run, check_grpc, gateway, metric_totals, mlserver, post, row
from load import Result, drive, drive_grpc
from servers import Server, free_port

OIP_CONNECTIONS = (1, 32)
OIP_ROUNDS = 3
OIP_POINT_SECONDS = 4.0  # each gateway point's load (at most --duration), after a warm-up of at most:
OIP_WARMUP_SECONDS = 1.0


def _oip_point(
    run: Run,
    server: Server,
    protocol: str,
    connections: int,
    go: Callable[[float], Result],
    *,
    round_: int | None = None,
) -> None:
    """One OIP point: a warm-up, then the load; ``go(seconds)`` drives it. A gateway's point
    (``round_`` set) is one of OIP_ROUNDS, as long as OIP_POINT_SECONDS at most, and counts the
    requests per predict call it made."""
    seconds, warmup = run.duration, run.warmup
    if round_ is not None:
        seconds, warmup = min(seconds, OIP_POINT_SECONDS), min(warmup, OIP_WARMUP_SECONDS)
    if warmup:
        go(warmup)
    batches = ["gateway_batch_size_sum", "gateway_batch_size_count"]
    before = metric_totals(server.url, batches) if round_ is not None else None
    result = go(seconds)
    rows = run.sections.setdefault("oip", {"rows": [], "connections": list(OIP_CONNECTIONS)})["rows"]  # type: ignore[index]
    entry = {"server": server.name, "protocol": protocol, **row(server.name, connections, result, server.peak_rss_mb())}
    if before is not None:
        after = metric_totals(server.url, batches)
        calls = after["gateway_batch_size_count"] - before["gateway_batch_size_count"]
        served = after["gateway_batch_size_sum"] - before["gateway_batch_size_sum"]
        entry |= {"round": round_, "requests_per_batch": served / calls if calls else None}
    rows.append(entry)
    error = f", first error: {entry['first_error']}" if entry.get("first_error") else ""
    where = f" (round {round_})" if round_ is not None else ""
    run.log(
        f"{server.name} {protocol} c={connections}{where}: {result.req_s:.0f} req/s p50 {result.p50_ms:.2f} ms{error}"
    )


def _oip_rest(run: Run, url: str, body: Path, connections: int, **options: object) -> Callable[[float], Result]:
    return lambda seconds: drive(url, body, connections=connections, duration=seconds, cpus=run.load_cpus, **options)  # type: ignore[arg-type]


def _oip_grpc(run: Run, port: int, body: Path, connections: int) -> Callable[[float], Result]:
    target = f"127.0.0.1:{port}"
    return lambda seconds: drive_grpc(target, body, connections=connections, duration=seconds, cpus=run.load_cpus)


def section(run: Run, tracking_uri: str, bodies: dict[str, Path], mlserver_reason: str | None) -> None:
    """The gateway's OIP (REST JSON, REST binary, gRPC) against its MLflow protocol and against
    MLServer's V2 REST and gRPC: bench/oip_rows.py."""
    oip = oip_rows.write_bodies(WORK, COLUMNS, ROW)
    data: dict[str, object] = {"rows": [], "connections": list(OIP_CONNECTIONS), "notes": []}
    run.sections["oip"] = data
    binary_options = {
        "content_type": "application/octet-stream",
        "headers": {oip_rows.HEADER_LENGTH: str(oip.binary_header_length)},
    }
    grpc_port, one_port = free_port(), free_port()
    one_acceptor = {"GATEWAY_GRPC_ACCEPTORS": "1"}
    with (
        gateway(tracking_uri, "oip", cpus=run.server_cpus, args=["--grpc-port", str(grpc_port)]) as gw,
        gateway(
            tracking_uri, "oip-one", cpus=run.server_cpus, env=one_acceptor, args=["--grpc-port", str(one_port)]
        ) as one,
    ):
        run.log(f"gateways (--grpc-port) ready in {gw.ready_seconds:.1f} and {one.ready_seconds:.1f} s")
        gw.name = one.name = oip_rows.GATEWAY
        mlflow_url = gw.url + "/models/iris/versions/1/predict"
        json_url = gw.url + "/v2/models/iris/versions/1/infer"
        post(mlflow_url, bodies["iris"].read_bytes())  # each raises unless 2xx
        post(json_url, oip.json.read_bytes())
        post(json_url, oip.binary.read_bytes(), binary_options["headers"])  # type: ignore[arg-type]
        check_grpc(grpc_port, oip.grpc)
        check_grpc(one_port, oip.grpc)
        for n in range(1, OIP_ROUNDS + 1):
            for c in OIP_CONNECTIONS:
                _oip_point(run, gw, oip_rows.MLFLOW, c, _oip_rest(run, mlflow_url, bodies["iris"], c), round_=n)
                _oip_point(run, gw, oip_rows.REST_JSON, c, _oip_rest(run, json_url, oip.json, c), round_=n)
                go = _oip_rest(run, json_url, oip.binary, c, **binary_options)
                _oip_point(run, gw, oip_rows.REST_BINARY, c, go, round_=n)
                _oip_point(run, gw, oip_rows.GRPC, c, _oip_grpc(run, grpc_port, oip.grpc, c), round_=n)
                _oip_point(run, one, oip_rows.GRPC_ONE, c, _oip_grpc(run, one_port, oip.grpc, c), round_=n)
    if mlserver_reason:
        data["mlserver_skipped"] = mlserver_reason
        return
    with mlserver(run, tracking_uri) as ml:
        run.log(f"MLServer ready in {ml.ready_seconds:.1f} s")
        assert ml.grpc_port is not None
        url = ml.url + "/v2/models/iris/infer"  # MLServer serves one version per model name
        post(url, oip.json.read_bytes())
        for connections in OIP_CONNECTIONS:
            _oip_point(run, ml, oip_rows.REST_JSON, connections, _oip_rest(run, url, oip.json, connections))
        try:
            check_grpc(ml.grpc_port, oip.grpc_unversioned)
        except Exception as exc:  # noqa: BLE001 - MLServer's gRPC is a bonus row: say why it is missing
            data["notes"].append(f"MLServer's gRPC rows skipped: {type(exc).__name__}: {exc}")  # type: ignore[attr-defined]
            return
        for connections in OIP_CONNECTIONS:
            go = _oip_grpc(run, ml.grpc_port, oip.grpc_unversioned, connections)
            _oip_point(run, ml, oip_rows.GRPC, connections, go)
