"""The benchmark: the gateway against `mlflow models serve`, MLServer and a constant floor.

``make bench`` (or ``.venv/bin/python bench/run.py``) builds one scratch registry in
bench/.work/, starts each server on it in turn, drives each with the same load, and
writes bench/results/<UTC time>.md and .json and bench/results/latest.md.
See bench/README.md for what each section measures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import auth_cost  # noqa: E402
import flavor_rows  # noqa: E402
import fleet  # noqa: E402
import grpc_rows  # noqa: E402
import interleaved  # noqa: E402
import isolated_cost  # noqa: E402
import lane  # noqa: E402
import memory_churn  # noqa: E402
import mlserver_env  # noqa: E402
import observability_cost  # noqa: E402
import oip_rows  # noqa: E402
import registry_scale  # noqa: E402
import spread  # noqa: E402
import traffic_split  # noqa: E402
from load import H2LOAD, Result, drive, drive_grpc, wrk_version  # noqa: E402
from report import fmt  # noqa: E402
from servers import Server, free_port, gateway_server  # noqa: E402

WORK = HERE / ".work"
RESULTS = HERE / "results"
VENV_BIN = Path(sys.executable).parent
SECTIONS = (
    "main",
    "cold",
    "alias",
    "zipf",
    "torch",
    "workers",
    "registry-scale",
    "memory",
    "oip",
    "traffic",
    "auth",
    "isolated",
    "observability",
    "grpc",
    "lane",
    "spread",
    "cold-sizes",
    "fleet",
    "flavors",
)
COLUMNS = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
ROW = [6.7, 3.0, 5.2, 2.3]
ZIPF_MODELS = 50
ZIPF_ROOM = 10
ZIPF_S = 1.1
ADMIN_TOKEN = "bench-admin-token"
FLOOR = "floor (constant FastAPI)"
BARE_FLOOR = "floor (bare ASGI)"
PREDICTING_FLOOR = "floor (bare ASGI, batching sklearn's predict)"


@dataclass
class Run:
    """Options and everything measured, in the order it is written out."""

    duration: float
    warmup: float
    connections: list[int]
    pin: bool
    rounds: int = 6  # interleaved sections (bench/interleaved.py)
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    main: list[dict[str, object]] = field(default_factory=list)
    sections: dict[str, object] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def server_cpus(self) -> str | None:
        return "0" if self.pin else None

    @property
    def load_cpus(self) -> str | None:
        return "1" if self.pin else None

    def log(self, message: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- the registry --------------------------------------------------------------------------


def build_registry(path: Path) -> str:
    """iris v1/v2 (champion -> 1, challenger -> 2), tiny-torch v1, zipf-00..49: built once, reused."""
    tracking_uri = f"sqlite:///{path / 'mlflow.db'}"
    done = path / ".complete"
    if done.exists():
        return tracking_uri
    from gateway.demo import build_demo_registry, log_iris_version, using_registry

    build_demo_registry(path)  # iris v1/v2 with their aliases, tiny-torch when torch is installed
    with using_registry(tracking_uri, path / "artifacts") as client:
        existing = {model.name for model in client.search_registered_models(max_results=1000)}
        for index in range(ZIPF_MODELS):
            if f"zipf-{index:02d}" not in existing:
                log_iris_version(f"zipf-{index:02d}", c=0.1 + index / 10)
    done.touch()
    return tracking_uri


def write_bodies(work: Path) -> dict[str, Path]:
    bodies = {
        "iris": {"dataframe_split": {"columns": COLUMNS, "data": [ROW]}},
        "torch": {"inputs": [[0.1, 0.2, 0.3, 0.4]]},
    }
    paths = {}
    for name, body in bodies.items():
        paths[name] = work / f"{name}.json"
        paths[name].write_text(json.dumps(body))
    return paths


# --- the servers ---------------------------------------------------------------------------


def gateway(
    tracking_uri: str,
    label: str,
    *,
    cpus: str | None,
    workers: int = 1,
    env: dict[str, str] | None = None,
    args: list[str] | None = None,
) -> Server:
    """A gateway on the bench registry with a fresh state database; ``label`` names its files."""
    state = WORK / "gateway" / label
    state.mkdir(parents=True, exist_ok=True)
    for stale in state.glob("state.db*"):
        stale.unlink()  # a fresh state database per start; the artifact cache is kept
    port = free_port()
    settings = {
        "MLFLOW_TRACKING_URI": tracking_uri,
        "GATEWAY_DATABASE_URL": f"sqlite:///{state / 'state.db'}",
        "GATEWAY_ARTIFACT_CACHE_DIR": str(state / "artifacts"),
        "GATEWAY_WARM_ALIASES": "champion",
        "GATEWAY_PREDICTION_CACHE": "off",
        "GATEWAY_ADMIN_TOKEN": ADMIN_TOKEN,
        **(env or {}),
    }
    return gateway_server(
        "gateway" if label == "main" else f"gateway ({label})",
        VENV_BIN,
        port=port,
        predict_path="/models/iris/versions/1/predict",
        log=WORK / f"gateway-{label}.log",
        env=settings,
        cpus=cpus,
        args=["--workers", str(workers), *(args or [])],
    )


def mlflow_serve(run: Run, tracking_uri: str) -> Server:
    port = free_port()
    argv = [str(VENV_BIN / "mlflow"), "models", "serve", "-m", "models:/iris/1", "--env-manager", "local"]
    return Server(
        "mlflow models serve",
        [*argv, "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        port=port,
        ready_path="/ping",
        predict_path="/invocations",
        log=WORK / "mlflow-serve.log",
        env={"MLFLOW_TRACKING_URI": tracking_uri},
        cpus=run.server_cpus,
    )


def floor(run: Run, *, bare: bool = False, access_log: bool = True, predicting_from: str | None = None) -> Server:
    """bench/floor_app.py: a constant from FastAPI, or with ``bare`` from a bare ASGI callable;
    with ``predicting_from`` (the registry's tracking URI), the predicting floor: the bare one
    plus the least a batching server that calls the same model's predict does."""
    port = free_port()
    options = (["--bare"] if bare else []) + ([] if access_log else ["--no-access-log"])
    name, log = (BARE_FLOOR, "floor-bare.log") if bare else (FLOOR, "floor.log")
    env = None
    if predicting_from is not None:
        options += ["--predicting", "models:/iris/1"]
        name, log, env = PREDICTING_FLOOR, "floor-predicting.log", {"MLFLOW_TRACKING_URI": predicting_from}
    return Server(
        name,
        [sys.executable, str(HERE / "floor_app.py"), "--port", str(port), *options],
        port=port,
        ready_path="/health/ready",
        predict_path="/invocations",
        log=WORK / log,
        env=env,
        cpus=run.server_cpus,
        cwd=HERE,
    )


def ensure_mlserver(run: Run) -> str | None:
    """MLServer + mlserver-mlflow in the environment `make mlserver-env` builds; the reason when
    it can't be had."""
    if not mlserver_env.built():
        run.log("building .venv-mlserver with `make mlserver-env` (once; a few minutes)")
    return mlserver_env.ensure(WORK / "mlserver-install.log")


def mlserver(run: Run, tracking_uri: str) -> Server:
    """MLServer serving `models:/iris/1` as model iris, version 1."""
    models = WORK / "mlserver"
    mlserver_env.add_version(models, "iris", 1, tracking_uri)
    ports = mlserver_env.Ports.pick()
    mlserver_env.write_settings(models, ports)
    server = Server(
        "MLServer (mlserver-mlflow)",
        mlserver_env.argv(models),
        port=ports.http,
        ready_path="/v2/models/iris/ready",
        predict_path="/invocations",
        log=WORK / "mlserver.log",
        cpus=run.server_cpus,
    )
    server.grpc_port = ports.grpc
    return server


# --- helpers -------------------------------------------------------------------------------


def post(url: str, body: bytes, headers: dict[str, str] | None = None, timeout: float = 120) -> dict[str, str]:
    """POST and return the answer's headers, names in lower case; raises unless the answer is 2xx."""
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        answer.read()
        return {name.lower(): value for name, value in answer.headers.items()}


def metric_totals(url: str, names: list[str]) -> dict[str, float]:
    """Sum each named Prometheus counter over its labels."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as answer:
        text = answer.read().decode()
    totals = dict.fromkeys(names, 0.0)
    for line in text.splitlines():
        for name in names:
            if line.startswith(name + "{") or line.startswith(name + " "):
                totals[name] += float(line.rsplit(" ", 1)[1])
    return totals


def measure(run: Run, server: Server, body: Path, connections: int, *, cpus: str | None = None) -> Result:
    url = server.url + server.predict_path
    cpus = cpus if cpus is not None else run.load_cpus
    if run.warmup:
        drive(url, body, connections=connections, duration=run.warmup, cpus=cpus)
    return drive(url, body, connections=connections, duration=run.duration, cpus=cpus)


def row(server: str, connections: int, result: Result, rss_mb: float) -> dict[str, object]:
    return {"server": server, "connections": connections, **result.as_dict(), "peak_rss_mb": rss_mb}


def main_points(run: Run, server: Server, bodies: dict[str, Path]) -> None:
    """The main table's rows for one running server: every connection count."""
    post(server.url + server.predict_path, bodies["iris"].read_bytes())  # raises unless 2xx
    for connections in run.connections:
        result = measure(run, server, bodies["iris"], connections)
        run.main.append(row(server.name, connections, result, server.peak_rss_mb()))
        if not result.requests:
            point = f"the {run.duration:g} s point at {connections} conns"
            run.notes.append(f"{server.name} answered no request within {point} (wrk's timeout is 5 s).")
        run.log(f"{server.name} c={connections}: {result.req_s:.0f} req/s p50 {result.p50_ms:.2f} ms")


def serve_main(run: Run, server: Server, bodies: dict[str, Path]) -> None:
    with server:
        run.log(f"{server.name} ready in {server.ready_seconds:.1f} s")
        main_points(run, server, bodies)


# --- sections ------------------------------------------------------------------------------


def cold_section(run: Run, gw: Server, tracking_uri: str, bodies: dict[str, Path]) -> None:
    """First request to versions the gateway has never loaded, against load_model + predict."""
    cold = ["iris/2", f"zipf-{ZIPF_MODELS - 1:02d}/1"]
    rows = []
    for ref in cold:
        name, version = ref.split("/")
        url = f"{gw.url}/models/{name}/versions/{version}/predict"
        timings = []
        for _ in range(2):
            started = time.perf_counter()
            post(url, bodies["iris"].read_bytes())
            timings.append((time.perf_counter() - started) * 1000)
        rows.append({"version": ref, "gateway_first_ms": timings[0], "gateway_second_ms": timings[1]})
    argv = [sys.executable, str(HERE / "cold_load.py"), "--warm", "models:/iris/1"]
    argv += ["--columns", json.dumps(COLUMNS), "--row", json.dumps(ROW), *(f"models:/{ref}" for ref in cold)]
    done = subprocess.run(
        argv, capture_output=True, text=True, check=True, env={**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}
    )
    baseline = json.loads(done.stdout.strip().splitlines()[-1])
    for entry in rows:
        entry["load_model_predict_ms"] = baseline[f"models:/{entry['version']}"]
    run.sections["cold"] = rows


def alias_section(run: Run, gw: Server, tracking_uri: str, bodies: dict[str, Path]) -> None:
    """p99 on /versions/champion while champion flips between v1 and v2 every second."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    gw.predict_path = "/models/iris/versions/champion/predict"
    steady = measure(run, gw, bodies["iris"], 32)
    stop = threading.Event()
    swaps: list[float] = []
    not_served: list[int] = []
    sync = (gw.url + "/admin/sync?model=iris", b"", {"Authorization": f"Bearer {ADMIN_TOKEN}"})

    def flip() -> None:
        version, tick = 2, time.perf_counter()
        while not stop.wait(max(0.0, tick + 1.0 - time.perf_counter())):
            tick = time.perf_counter()
            client.set_registered_model_alias("iris", "champion", str(version))
            post(*sync)
            swaps.append((time.perf_counter() - tick) * 1000)
            # Once the sync has answered, the alias must serve the new version.
            if post(gw.url + gw.predict_path, bodies["iris"].read_bytes()).get("x-model-version") != str(version):
                not_served.append(version)
            version = 3 - version

    flipper = threading.Thread(target=flip)
    flipper.start()
    try:
        url = gw.url + gw.predict_path
        moving = drive(url, bodies["iris"], connections=32, duration=run.duration, cpus=run.load_cpus)
    finally:
        stop.set()
        flipper.join()
        client.set_registered_model_alias("iris", "champion", "1")
        post(*sync)
        gw.predict_path = "/models/iris/versions/1/predict"
    run.sections["alias"] = {
        "connections": 32,
        "steady": steady.as_dict(),
        "moving": moving.as_dict(),
        "flips": len(swaps),
        "flips_not_served": len(not_served),
        "flip_ms_median": statistics.median(swaps) if swaps else float("nan"),
        "flip_ms_max": max(swaps, default=float("nan")),
    }


def torch_section(run: Run, gw: Server, bodies: dict[str, Path]) -> None:
    gw.predict_path = "/models/tiny-torch/versions/1/predict"
    try:
        post(gw.url + gw.predict_path, bodies["torch"].read_bytes())
        rows = [row("gateway tiny-torch", c, measure(run, gw, bodies["torch"], c), gw.peak_rss_mb()) for c in (1, 32)]
    finally:
        gw.predict_path = "/models/iris/versions/1/predict"
    run.sections["torch"] = rows


def zipf_section(run: Run, tracking_uri: str, bodies: dict[str, Path]) -> None:
    """Zipf traffic over 50 models with room for 10 in the gateway's LRU."""
    env = {"GATEWAY_MAX_LOADED_MODELS": str(ZIPF_ROOM)}
    names = ["gateway_cache_hits_total", "gateway_cache_misses_total", "gateway_cache_evictions_total"]
    names += ["gateway_model_loads_total"]
    with gateway(tracking_uri, "zipf", cpus=run.server_cpus, env=env) as gw:
        before = metric_totals(gw.url, names)
        paths = [f"/models/zipf-{index:02d}/versions/1/predict" for index in range(ZIPF_MODELS)]
        duration = max(run.duration, 5) * 2
        result = drive(
            gw.url,
            bodies["iris"],
            connections=8,
            duration=duration,
            cpus=run.load_cpus,
            paths=paths,
            zipf=ZIPF_S,
            force_python=True,  # as in every run before wrk could spread requests over paths
        )
        after = metric_totals(gw.url, names)
        rss = gw.peak_rss_mb()
    delta = {name.removeprefix("gateway_").removesuffix("_total"): after[name] - before[name] for name in names}
    lookups = delta["cache_hits"] + delta["cache_misses"]
    # The best any LRU of this size can do: the share of traffic on the 10 most popular models.
    weights = [1 / rank**ZIPF_S for rank in range(1, ZIPF_MODELS + 1)]
    run.sections["zipf"] = {
        "models": ZIPF_MODELS,
        "room": ZIPF_ROOM,
        "s": ZIPF_S,
        "connections": 8,
        "seconds": duration,
        **result.as_dict(),
        **delta,
        "hit_rate": delta["cache_hits"] / lookups if lookups else float("nan"),
        "top10_share": sum(weights[:ZIPF_ROOM]) / sum(weights),
        "peak_rss_mb": rss,
    }


def workers_plan(cpus: int) -> tuple[list[int], bool]:
    """Worker counts to try, and whether each gets cores of its own: N server cores and N
    more for the load generator. With fewer than 4 CPUs nothing can be dedicated, so 1 and
    2 workers share every core with the load generator."""
    if cpus >= 4:
        return [n for n in (1, 2, 4, 8) if 2 * n <= cpus], True
    return [1, 2], False


def workers_section(run: Run, tracking_uri: str, bodies: dict[str, Path]) -> None:
    """--workers N at 32·N connections; req/s, and requests per CPU-second of the server's
    processes (which shows whether workers get in each other's way when the cores are shared)."""
    cpus = os.cpu_count() or 1
    counts, dedicated = workers_plan(cpus)
    everything = f"0-{cpus - 1}"
    rows: list[dict[str, object]] = []
    for workers in counts:
        server_cpus = f"0-{workers - 1}" if dedicated else everything
        load_cpus = f"{workers}-{2 * workers - 1}" if dedicated else everything
        connections = 32 * workers
        with gateway(tracking_uri, f"workers{workers}", cpus=server_cpus, workers=workers) as gw:
            url, body = gw.url + gw.predict_path, bodies["iris"]
            post(url, body.read_bytes())
            threads = workers if dedicated else 1
            drive(url, body, connections=connections, duration=max(run.warmup, 1.0), cpus=load_cpus, threads=threads)
            before = gw.cpu_seconds()
            result = drive(url, body, connections=connections, duration=run.duration, cpus=load_cpus, threads=threads)
            busy = gw.cpu_seconds() - before
            entry = row(f"gateway --workers {workers}", connections, result, gw.peak_rss_mb())
            entry |= {"workers": workers, "server_cpu_s": busy, "req_per_cpu_s": result.requests / busy if busy else 0}
            rows.append(entry)
            run.log(f"--workers {workers} c={connections}: {result.req_s:.0f} req/s, {busy:.1f} CPU-s")
    run.sections["workers"] = rows
    run.sections["workers_dedicated"] = dedicated


def scale_section(run: Run, sizes: list[int]) -> None:
    """Registries of 1,000 and 10,000 versions: bench/registry_scale.py."""
    run.sections["registry-scale"] = registry_scale.section(
        WORK, sizes=sizes, venv_bin=VENV_BIN, cpus=run.server_cpus, log=run.log
    )


def memory_section(run: Run, quick: bool) -> None:
    """RSS against the memory budget under cache churn: bench/memory_churn.py."""
    plan = memory_churn.QUICK if quick else memory_churn.Plan()
    run.sections["memory"] = memory_churn.section(WORK, venv_bin=VENV_BIN, cpus=run.server_cpus, log=run.log, plan=plan)


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


def _check_grpc(port: int, body: Path) -> None:
    """One ModelInfer call; raises unless it answers."""
    import grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")(body.read_bytes(), timeout=60)


def oip_section(run: Run, tracking_uri: str, bodies: dict[str, Path], mlserver_reason: str | None) -> None:
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
        _check_grpc(grpc_port, oip.grpc)
        _check_grpc(one_port, oip.grpc)
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
            _check_grpc(ml.grpc_port, oip.grpc_unversioned)
        except Exception as exc:  # noqa: BLE001 - MLServer's gRPC is a bonus row: say why it is missing
            data["notes"].append(f"MLServer's gRPC rows skipped: {type(exc).__name__}: {exc}")  # type: ignore[attr-defined]
            return
        for connections in OIP_CONNECTIONS:
            go = _oip_grpc(run, ml.grpc_port, oip.grpc_unversioned, connections)
            _oip_point(run, ml, oip_rows.GRPC, connections, go)


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
    _check_grpc(port, body)
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


def grpc_section(run: Run, tracking_uri: str, mlserver_reason: str | None) -> None:
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


def ensure_spread_models(tracking_uri: str, path: Path, log: Callable[[str], None]) -> None:
    """zipf-50 … zipf-99 beside the registry's first 50 (the spread section's 100 models)."""
    from gateway.demo import log_iris_version, using_registry

    wanted = [f"zipf-{index:02d}" for index in range(max(spread.SPREAD_MODELS))]
    with using_registry(tracking_uri, path / "artifacts") as client:
        existing = {model.name for model in client.search_registered_models(max_results=1000)}
        missing = [name for name in wanted if name not in existing]
        if missing:
            log(f"spread: logging {len(missing)} more models (once)")
        for name in missing:
            log_iris_version(name, c=0.1 + int(name.removeprefix("zipf-")) / 10)


def fleet_section(run: Run, tracking_uri: str, bodies: dict[str, Path]) -> None:
    """Three replicas behind each proxy, then a rolling restart behind an L4 balancer: bench/fleet.py."""
    from gateway.demo import using_registry

    ensure_spread_models(tracking_uri, WORK / "registry", run.log)
    with using_registry(tracking_uri, WORK / "registry" / "artifacts") as client:
        for name in fleet.models():  # a champion each: what a replica of old preloaded, every one of them
            client.set_registered_model_alias(name, "champion", "1")
    missing = [tool for tool in ("haproxy", "nginx") if shutil.which(tool) is None]
    if missing:
        raise RuntimeError(f"{' and '.join(missing)} not installed (apt-get install haproxy nginx-light)")
    seconds = max(run.duration * 2, 10.0)
    run.sections["fleet"] = fleet.run_section(
        WORK / "fleet", VENV_BIN, tracking_uri, bodies["iris"], HERE.parent / "deploy", seconds=seconds, log=run.log
    )


def spread_section(run: Run, tracking_uri: str, bodies: dict[str, Path]) -> None:
    """The same Zipf load over 1, 10 and 100 loaded models, interleaved: bench/spread.py."""
    ensure_spread_models(tracking_uri, WORK / "registry", run.log)
    data: dict[str, list[object]] = {"rows": [], "notes": []}
    run.sections["spread"] = data
    most = max(spread.SPREAD_MODELS)
    env = {"GATEWAY_MAX_LOADED_MODELS": str(most + 10), "GATEWAY_ACCESS_LOG": "false", **QUIET_POLL}
    seconds = max(1.0, run.duration / 2)
    with gateway(tracking_uri, "spread", cpus=run.server_cpus, env=env) as gw:
        run.log(f"spread: gateway ready in {gw.ready_seconds:.1f} s")
        for path in spread.paths(most):
            post(gw.url + path, bodies["iris"].read_bytes())  # each loaded and warm before any point
        labels = [spread.label(models) for models in spread.SPREAD_MODELS]
        for round_index in range(run.rounds):
            for name in interleaved.order(labels, round_index):
                models = spread.SPREAD_MODELS[labels.index(name)]
                options = {"paths": spread.paths(models), "zipf": spread.SPREAD_S, "cpus": run.load_cpus}
                drive(gw.url, bodies["iris"], connections=spread.CONNECTIONS, duration=0.5, **options)  # type: ignore[arg-type]
                result = drive(gw.url, bodies["iris"], connections=spread.CONNECTIONS, duration=seconds, **options)  # type: ignore[arg-type]
                entry = {
                    "point": name,
                    "round": round_index,
                    **row(gw.name, spread.CONNECTIONS, result, gw.peak_rss_mb()),
                }
                data["rows"].append(entry)
                run.log(
                    f"spread round {round_index + 1}/{run.rounds} {name}: {result.req_s:.0f} req/s, "
                    f"{result.errors} errors"
                )
        loaded = metric_totals(gw.url, ["gateway_loaded_models"])["gateway_loaded_models"]
    data["notes"].append(f"Versions loaded at the end: {loaded:.0f}.")


def cold_sizes_section(run: Run) -> None:
    """LRU misses by model size on the memory section's registry: bench/spread.py."""
    built = memory_churn.build_registry(WORK, run.log)
    tracking_uri = memory_churn.tracking_uri(memory_churn.registry_path(WORK))
    samples: list[dict[str, object]] = []
    run.sections["cold-sizes"] = {"samples": samples}
    env = {"GATEWAY_MAX_LOADED_MODELS": "1", "GATEWAY_ACCESS_LOG": "false", "GATEWAY_WARM_ALIASES": "", **QUIET_POLL}
    with gateway(tracking_uri, "cold-sizes", cpus=run.server_cpus, env=env) as gw:
        run.log(f"cold-sizes: gateway ready in {gw.ready_seconds:.1f} s")
        for kind in memory_churn.KINDS:
            sizes = [entry["size_bytes"] for entry in built["kinds"][kind.key]["sizes"]]
            for pass_ in range(1, spread.COLD_PASSES + 1):
                for version in range(1, len(sizes) + 1):
                    url = f"{gw.url}/models/{kind.model}/versions/{version}/predict"
                    started = time.perf_counter()
                    try:
                        post(url, kind.body)
                        status = 200
                    except urllib.error.HTTPError as exc:
                        status = exc.code
                    seconds = time.perf_counter() - started
                    samples.append(
                        {
                            "kind": kind.what,
                            "version": version,
                            "pass": pass_,
                            "status": status,
                            "seconds": seconds,
                            "size_mib": sizes[version - 1] / memory_churn.MiB,
                        }
                    )
            run.log(f"cold-sizes: {kind.model} done")


def _traffic_detail(gw: Server) -> dict[str, object]:
    with urllib.request.urlopen(f"{gw.url}/models/{traffic_split.MODEL}/traffic", timeout=10) as answer:
        return json.loads(answer.read())  # type: ignore[no-any-return]


def _set_traffic(
    gw: Server,
    client: object,
    arms: list[int],
    *,
    version: int,
    weight: float = 0,
    shadow: float = 0,
    timeout: float = 90,
) -> float:
    """Tag ``version`` (a 0 removes the tag) and untag the other ``arms``, sync, and wait until
    /traffic shows it as served; returns the seconds that took."""
    started = time.perf_counter()
    name = traffic_split.MODEL
    for arm in arms:
        for tag, value in ((traffic_split.WEIGHT_TAG, weight), (traffic_split.SHADOW_TAG, shadow)):
            if value and arm == version:
                client.set_model_version_tag(name, str(arm), tag, f"{value:g}")  # type: ignore[attr-defined]
            else:
                _untag(client, name, arm, tag)
    sync = (f"{gw.url}/admin/sync?model={name}", b"", {"Authorization": f"Bearer {ADMIN_TOKEN}"})
    while time.perf_counter() - started < timeout:
        post(*sync)
        if traffic_split.served(_traffic_detail(gw), weight=weight, shadow=shadow, version=version):
            return time.perf_counter() - started
        time.sleep(0.5)
    raise RuntimeError(f"/traffic did not show weight={weight:g} shadow={shadow:g} as served within {timeout:.0f} s")


def _untag(client: object, name: str, version: int, tag: str) -> None:
    try:
        client.delete_model_version_tag(name, str(version), tag)  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001, S110 - not set: nothing to remove
        pass


def shadow_probe_versions(tracking_uri: str) -> dict[str, int]:
    """The iris versions tagged ``bench.shadow_probe`` (slow, failing: bench/shadow_probes.py),
    logged into the bench registry the first time they are wanted."""
    import mlflow.pyfunc
    import shadow_probes

    from gateway.demo import iris_frame, using_registry

    name, tag = traffic_split.MODEL, traffic_split.PROBE_TAG
    with using_registry(tracking_uri, WORK / "registry" / "artifacts") as client:
        found = {
            str(v.tags[tag]): int(v.version) for v in client.search_model_versions(f"name='{name}'") if tag in v.tags
        }
        models = {
            traffic_split.SLOW: shadow_probes.SlowVersion(),
            traffic_split.FAILING: shadow_probes.FailingVersion(),
        }
        for probe, model in models.items():
            if probe in found:
                continue
            features, _ = iris_frame()
            with mlflow.start_run(run_name=f"shadow-probe-{probe}"):
                info = mlflow.pyfunc.log_model(
                    name="model",
                    python_model=model,
                    registered_model_name=name,
                    input_example=features.head(2),  # the warm-up: passes, where the bench's row fails
                    code_paths=[str(HERE / "shadow_probes.py")],  # the gateway imports the classes from it
                    pip_requirements=["mlflow"],
                )
            found[probe] = int(info.registered_model_version)  # type: ignore[arg-type]
            client.set_model_version_tag(name, str(found[probe]), tag, probe)
    return found


def traffic_section(run: Run, tracking_uri: str, bodies: dict[str, Path]) -> None:
    """The default route at 32 connections with no split, a 90/10 split and a 25% shadow:
    bench/traffic_split.py."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    data: dict[str, object] = {"rows": [], "notes": []}
    run.sections["traffic"] = data
    env = {
        "GATEWAY_POLL_INTERVAL_SECONDS": "5",  # /admin/sync applies a tag at once; the poll is a fallback
        # The point measures the split, not the guard: under 32 connections the guard has rolled a
        # canary identical to the default back on p99 (9.4 ms against 4.5 ms), leaving no split.
        "GATEWAY_CANARY_MAX_LATENCY_RATIO": "1000",
        "GATEWAY_CANARY_MAX_ERROR_RATE": "1",
    }
    connections = traffic_split.CONNECTIONS
    seconds = min(run.duration, traffic_split.POINT_SECONDS)
    warmup = min(run.warmup, traffic_split.WARMUP_SECONDS)
    probes = shadow_probe_versions(tracking_uri)
    arms = [traffic_split.ARM_VERSION, *probes.values()]
    with gateway(tracking_uri, "traffic", cpus=run.server_cpus, env=env) as gw:
        run.log(f"gateway ready in {gw.ready_seconds:.1f} s")
        url = f"{gw.url}/models/{traffic_split.MODEL}/predict"
        try:
            for label, weight, shadow, probe in traffic_split.plan():
                version = probes[probe] if probe else traffic_split.ARM_VERSION
                took = _set_traffic(gw, client, arms, version=version, weight=weight, shadow=shadow)
                post(url, bodies["iris"].read_bytes())
                keys = traffic_split.KEY_HEADER if traffic_split.keyed_point(label) else None
                load = {"connections": connections, "cpus": run.load_cpus, "key_header": keys}
                if warmup:
                    drive(url, bodies["iris"], duration=warmup, **load)
                before, cpu = _traffic_detail(gw), gw.cpu_seconds()
                result = drive(url, bodies["iris"], duration=seconds, **load)
                cpu, after = gw.cpu_seconds() - cpu, _traffic_detail(gw)
                counts = [traffic_split.arm_requests(d) for d in (before, after)]
                delta = {arm: n - counts[0].get(arm, 0) for arm, n in counts[1].items()}
                shadows = [traffic_split.shadow_counts(d, version) for d in (before, after)]
                ran, failed, dropped = (shadows[1][k] - shadows[0][k] for k in ("requests", "errors", "dropped"))
                total = sum(n for arm, n in delta.items() if not arm.startswith("shadow"))
                canary = sum(n for arm, n in delta.items() if arm.startswith("canary"))
                entry = {"point": label, **row("gateway", connections, result, gw.peak_rss_mb())}
                entry |= {
                    "cpu_us_per_request": cpu / result.requests * 1e6 if result.requests else None,
                    "still_served": traffic_split.served(after, weight=weight, shadow=shadow, version=version),
                    "applied_s": took,
                    "arm_requests": delta,
                    "canary_share": canary / total if weight and total else None,
                    "shadows_run": ran if shadow else None,
                    "shadow_errors": failed if shadow else None,
                    "shadows_dropped": dropped if shadow else None,
                }
                data["rows"].append(entry)  # type: ignore[attr-defined]
                run.log(
                    f"traffic {label}: {result.req_s:.0f} req/s p50 {result.p50_ms:.2f} ms (applied in {took:.1f} s)"
                )
        finally:
            for arm in arms:
                for tag in (traffic_split.WEIGHT_TAG, traffic_split.SHADOW_TAG):
                    _untag(client, traffic_split.MODEL, arm, tag)


def _create_key(gw: Server, name: str, *extra: str) -> str:
    """``registry-gateway keys create`` against the gateway's GATEWAY_DATABASE_URL; the secret."""
    argv = [str(VENV_BIN / "registry-gateway"), "keys", "create", name, "--scopes", auth_cost.SCOPES, *extra]
    done = subprocess.run(argv, env=gw.env, capture_output=True, text=True, check=True)
    return auth_cost.secret_from(done.stdout)


def _refused_without_key(url: str, body: bytes) -> int | None:
    """The status of a request sent without a key (401 when keys are on), None if it passed."""
    try:
        post(url, body)
    except urllib.error.HTTPError as exc:
        return exc.code
    return None


@dataclass
class Contender:
    """One configuration of an interleaved section (bench/interleaved.py): a gateway not yet
    started (contenders may share one) and the headers its requests carry."""

    label: str
    server: Server
    headers: dict[str, str] = field(default_factory=dict)
    path: str = "/models/iris/predict"
    connections: int = 32


# Interleaved sections' gateways poll the registry once an hour: a pass costs CPU, and with
# several gateways on one CPU it would land in another's point.
QUIET_POLL = {"GATEWAY_POLL_INTERVAL_SECONDS": "3600"}


def interleaved_points(
    run: Run,
    section: str,
    contenders: list[Contender],
    body: Path,
    *,
    when_ready: Callable[[], None] | None = None,
    before_stop: Callable[[], None] | None = None,
) -> None:
    """Start every contender's server (then ``when_ready``), then ``run.rounds`` rounds in which
    each is driven in turn (its path at its connections, the default route at 32 by default,
    ``run.duration`` / 2 s a point after a short warm-up), rotating the order from round to
    round; ``before_stop`` while the servers still run. Rows carry their round."""
    rows: list[dict[str, object]] = run.sections[section]["rows"]  # type: ignore[index]
    seconds = max(1.0, run.duration / 2)
    with contextlib.ExitStack() as stack:
        servers = list({id(contender.server): contender.server for contender in contenders}.values())
        for server in servers:  # all start at once; each is stopped however the section ends
            stack.callback(server.stop)
            server.launch()
        for server in servers:
            server.wait_ready()
            run.log(f"{section}: {server.name} ready in {server.ready_seconds:.1f} s")
        for contender in contenders:
            url = contender.server.url + contender.path
            post(url, body.read_bytes(), contender.headers)  # raises unless 2xx (and loads the model)
            if run.warmup:
                drive(url, body, duration=run.warmup, **_load(run, contender))
        if when_ready is not None:
            when_ready()
        by_label = {contender.label: contender for contender in contenders}
        for round_index in range(run.rounds):
            for label in interleaved.order(list(by_label), round_index):
                contender = by_label[label]
                url = contender.server.url + contender.path
                drive(url, body, duration=0.5, **_load(run, contender))
                cpu = contender.server.cpu_seconds()
                result = drive(url, body, duration=seconds, **_load(run, contender))
                cpu = contender.server.cpu_seconds() - cpu  # every thread of it: exporters, writers
                rss = contender.server.peak_rss_mb()
                entry = row(contender.server.name, contender.connections, result, rss)
                if result.requests:
                    entry["cpu_us"] = cpu / result.requests * 1e6
                rows.append({"point": label, "round": round_index, **entry})
                run.log(
                    f"{section} round {round_index + 1}/{run.rounds} {label}: {result.req_s:.0f} req/s, "
                    f"p50 {result.p50_ms:.2f} ms, {result.errors} errors"
                )
        if before_stop is not None:
            before_stop()


def _load(run: Run, contender: Contender) -> dict[str, Any]:
    """drive()'s options for a contender's load: its connections and headers, from the load CPU."""
    return {"connections": contender.connections, "headers": contender.headers, "cpus": run.load_cpus}


def lane_section(run: Run, tracking_uri: str, bodies: dict[str, Path]) -> None:
    """The gateway against the bare ASGI floor, access logs off on both, interleaved: bench/lane.py."""
    run.sections["lane"] = {"rows": [], "notes": []}
    quiet = gateway(tracking_uri, "lane", cpus=run.server_cpus, env={"GATEWAY_ACCESS_LOG": "false", **QUIET_POLL})
    logged = gateway(tracking_uri, "lane-logged", cpus=run.server_cpus, env=QUIET_POLL)
    bare = floor(run, bare=True, access_log=False)
    predicting = floor(run, access_log=False, predicting_from=tracking_uri)
    contenders = [
        Contender(lane.GATEWAY_32, quiet),
        Contender(lane.FLOOR_32, bare, path="/invocations"),
        Contender(lane.PREDICTING_32, predicting, path="/invocations"),
        Contender(lane.LOGGED_32, logged),
        Contender(lane.GATEWAY_1, quiet, connections=1),
        Contender(lane.FLOOR_1, bare, path="/invocations", connections=1),
        Contender(lane.PREDICTING_1, predicting, path="/invocations", connections=1),
    ]
    interleaved_points(run, "lane", contenders, bodies["iris"])


def auth_section(run: Run, tracking_uri: str, bodies: dict[str, Path]) -> None:
    """Keys off, keys on and keys on with a per-key rate limit that never trips, interleaved:
    bench/auth_cost.py."""
    data: dict[str, object] = {"rows": [], "notes": []}
    run.sections["auth"] = data
    off = gateway(tracking_uri, "auth-off", cpus=run.server_cpus, env=QUIET_POLL)
    keyed = gateway(tracking_uri, "auth-keys", cpus=run.server_cpus, env={"GATEWAY_AUTH": "keys", **QUIET_POLL})
    secret = _create_key(keyed, auth_cost.KEY)  # before start: the gateway reads its keys at start
    limited = _create_key(keyed, auth_cost.LIMITED_KEY, "--rate", str(auth_cost.RATE))
    contenders = [
        Contender(auth_cost.OFF, off),
        Contender(auth_cost.KEYS, keyed, auth_cost.bearer(secret)),
        Contender(auth_cost.LIMITED, keyed, auth_cost.bearer(limited)),
    ]

    def refuses_keyless() -> None:  # a keyed gateway that lets a request through prices nothing
        status = _refused_without_key(f"{keyed.url}/models/{auth_cost.MODEL}/predict", bodies["iris"].read_bytes())
        if status != 401:
            raise RuntimeError(f"keys on, but a request without a key answered {status or '2xx'}, not 401")

    interleaved_points(run, "auth", contenders, bodies["iris"], when_ready=refuses_keyless)


@contextlib.contextmanager
def on_load_cpus(run: Run) -> Iterator[None]:
    """Run this process (and threads it starts meanwhile, such as an OTLP receiver's) on the
    load generator's CPU, away from the gateway's."""
    if run.load_cpus is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {int(cpu) for cpu in run.load_cpus.split(",")})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def observability_section(run: Run, tracking_uri: str, bodies: dict[str, Path]) -> None:
    """The default, tracing at 1% sampling, records at 10% to a file and the access log off,
    interleaved: bench/observability_cost.py."""
    sys.path.insert(0, str(HERE.parent))  # the suite's OTLP receiver, run here as the bench's own
    from tests.support.otlp import OtlpReceiver

    data: dict[str, list[object]] = {"rows": [], "notes": []}
    run.sections["observability"] = data
    cost = observability_cost
    records = WORK / "records"
    shutil.rmtree(records, ignore_errors=True)
    with on_load_cpus(run), OtlpReceiver("http/protobuf") as receiver:
        record_env = {"GATEWAY_RECORDS_SINK": f"file://{records}", "GATEWAY_RECORDS_SAMPLE": cost.RECORDS_SAMPLE}
        recording = gateway(tracking_uri, "observe-records", cpus=run.server_cpus, env={**record_env, **QUIET_POLL})
        contenders = [
            Contender(cost.DEFAULT, gateway(tracking_uri, "observe-default", cpus=run.server_cpus, env=QUIET_POLL)),
            Contender(
                cost.TRACING,
                gateway(
                    tracking_uri,
                    "observe-tracing",
                    cpus=run.server_cpus,
                    env={**cost.TRACING_ENV, **receiver.env(), **QUIET_POLL},
                ),
            ),
            Contender(cost.RECORDS, recording),
            Contender(
                cost.NO_ACCESS_LOG,
                gateway(
                    tracking_uri,
                    "observe-quiet",
                    cpus=run.server_cpus,
                    env={"GATEWAY_ACCESS_LOG": "false", **QUIET_POLL},
                ),
            ),
        ]
        counts: dict[str, float] = {}
        names = ["gateway_records_dropped_total", "gateway_records_written_total"]
        interleaved_points(
            run,
            "observability",
            contenders,
            bodies["iris"],
            before_stop=lambda: counts.update(metric_totals(recording.url, names)),
        )
        spans = len(receiver.spans())
    script = [sys.executable, str(HERE / "metrics_cost.py")]
    pinned = ["taskset", "-c", run.server_cpus, *script] if run.server_cpus else script
    data["metrics_us"] = float(subprocess.run(pinned, capture_output=True, text=True, check=True).stdout)  # type: ignore[assignment]
    data["notes"].append(f"Tracing: the receiver got {spans:,} spans from the tracing gateway.")
    data["notes"].append(
        f"Records: {counts.get('gateway_records_written_total', 0):,.0f} written, "
        f"{counts.get('gateway_records_dropped_total', 0):,.0f} dropped."
    )


def _own_rss_mb(server: Server) -> float:
    """The gateway process's own RSS (not its workers')."""
    assert server.process is not None
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan


def _runtime(server: Server, version: int) -> dict[str, object]:
    with urllib.request.urlopen(f"{server.url}/models/iris/versions/{version}", timeout=30) as answer:
        return json.loads(answer.read())["runtime"]  # type: ignore[no-any-return]


def isolated_section(run: Run, tracking_uri: str, bodies: dict[str, Path]) -> None:
    """The same version in process and in an isolated worker: bench/isolated_cost.py."""

    from gateway.runtimes.environments import EnvironmentStore
    from gateway.runtimes.requirements import Requirements

    data: dict[str, object] = {"rows": [], "notes": []}
    run.sections["isolated"] = data
    envs = WORK / "isolated-envs"
    shutil.rmtree(envs, ignore_errors=True)
    os.environ.setdefault("UV_CACHE_DIR", str(WORK / "uv-cache"))
    sklearn = Requirements(None, ("scikit-learn", "skops"), "requirements.txt")
    EnvironmentStore(WORK / "isolated-prime").ensure(sklearn)  # fills uv's cache
    shutil.rmtree(WORK / "isolated-prime", ignore_errors=True)
    started = time.perf_counter()
    EnvironmentStore(WORK / "isolated-warm").ensure(sklearn)
    data["warm_build_seconds"] = round(time.perf_counter() - started, 2)
    shutil.rmtree(WORK / "isolated-warm", ignore_errors=True)
    run.log(f"isolated: environment from a warm uv cache in {data['warm_build_seconds']} s")
    body = bodies["iris"]
    env = {"GATEWAY_ENV_DIR": str(envs), "UV_CACHE_DIR": os.environ["UV_CACHE_DIR"], "GATEWAY_WARM_ALIASES": ""}
    here = gateway(tracking_uri, "isolated-baseline", cpus=run.server_cpus, env=env)
    isolate = {**env, "GATEWAY_ENV_ISOLATE": "always"}
    there = gateway(tracking_uri, "isolated", cpus=run.server_cpus, env={**isolate, "GATEWAY_SANDBOX": "off"})
    boxed = gateway(tracking_uri, "sandboxed", cpus=run.server_cpus, env={**isolate, "GATEWAY_SANDBOX": "best-effort"})
    with here, there, boxed:
        before = _own_rss_mb(there)
        for server in (here, there, boxed):
            post(server.url + server.predict_path, body.read_bytes())
        if _runtime(there, 1).get("runtime") != "isolated" or _runtime(here, 1).get("runtime") != "in_process":
            raise RuntimeError("the gateways do not serve iris v1 where the section means to")
        sandbox = _runtime(boxed, 1).get("sandbox")
        if not isinstance(sandbox, dict) or _runtime(there, 1).get("sandbox") is not None:
            raise RuntimeError("the sandboxed gateway's worker is not sandboxed, or the other's is")
        data["sandbox_missing"] = sandbox.get("missing")
        servers = (
            (isolated_cost.IN_PROCESS, here),
            (isolated_cost.ISOLATED, there),
            (isolated_cost.SANDBOXED, boxed),
        )
        for index in range(isolated_cost.ROUNDS):
            for connections in isolated_cost.CONNECTIONS:
                for label, server in servers:
                    result = measure(run, server, body, connections)
                    entry = {"server": label, "connections": connections, "round": index, **result.as_dict()}
                    data["rows"].append(entry)  # type: ignore[attr-defined]
                    run.log(
                        f"isolated round {index} {label} c={connections}: {result.req_s:.0f} req/s "
                        f"p50 {result.p50_ms:.2f} ms"
                    )
        first = _runtime(there, 1)
        post(there.url + "/models/iris/versions/2/predict", body.read_bytes())
        second = _runtime(there, 2)
        data["second_version"] = {
            "same_environment": first["environment"] == second["environment"],
            "same_worker": first["worker_pid"] == second["worker_pid"],
            "environments_after": len(EnvironmentStore(envs).environments()),
        }
        data["gateway_rss_mb"] = {"before": before, "after": _own_rss_mb(there)}


def flavors_section(run: Run) -> None:
    """Every flavor of the matrix, the gateway against mlflow models serve: bench/flavor_rows.py."""

    def mlflow_server(tracking_uri: str, model_uri: str, env: dict[str, str]) -> Server:
        port = free_port()
        argv = [str(VENV_BIN / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local"]
        return Server(
            "mlflow models serve",
            [*argv, "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            port=port,
            ready_path="/ping",
            predict_path="/invocations",
            log=WORK / "mlflow-serve-flavors.log",
            env={"MLFLOW_TRACKING_URI": tracking_uri, **env},
            cpus=run.server_cpus,
        )

    run.sections["flavors"] = flavor_rows.section(
        run, work=WORK, gateway=gateway, mlflow_server=mlflow_server, drive=drive
    )


# --- the report ----------------------------------------------------------------------------


def _find(rows: list[dict[str, object]], server: str, connections: int) -> dict[str, object] | None:
    return next((r for r in rows if r["server"] == server and r["connections"] == connections), None)


def targets(run: Run) -> list[tuple[str, str, bool | None]]:
    gw, ml, fl = "gateway", "mlflow models serve", FLOOR
    g32, m32, f32 = (_find(run.main, name, 32) for name in (gw, ml, fl))
    g1, f1 = _find(run.main, gw, 1), _find(run.main, fl, 1)
    out: list[tuple[str, str, bool | None]] = []
    if g32 and m32:
        ratio = float(g32["req_s"]) / float(m32["req_s"])  # type: ignore[arg-type]
        out.append(("32 conns: req/s ≥ 6× mlflow models serve", f"{ratio:.1f}×", ratio >= 6))
    if g32 and f32:
        ratio = float(g32["req_s"]) / float(f32["req_s"])  # type: ignore[arg-type]
        out.append(("32 conns: req/s ≥ 0.6× the floor", f"{ratio:.2f}×", ratio >= 0.6))
    if g32:
        p99 = float(g32["p99_ms"])  # type: ignore[arg-type]
        out.append(("32 conns: p99 < 25 ms", f"{p99:.1f} ms", p99 < 25))
    if g1 and f1:
        gap = float(g1["p50_ms"]) - float(f1["p50_ms"])  # type: ignore[arg-type]
        out.append(("1 conn: p50 within 0.5 ms of the floor's", f"+{gap:.2f} ms", gap <= 0.5))
    workers = run.sections.get("workers")
    if isinstance(workers, list) and len(workers) > 1:
        one, most = workers[0], workers[-1]
        n = int(most["workers"])  # type: ignore[call-overload]
        scale = float(most["req_s"]) / float(one["req_s"])  # type: ignore[arg-type]
        per_cpu = float(most["req_per_cpu_s"]) / float(one["req_per_cpu_s"])  # type: ignore[arg-type]
        if run.sections.get("workers_dedicated"):
            out.append((f"{n} workers on {n} cores ≥ {0.8 * n:g}× one worker", f"{scale:.2f}×", scale >= 0.8 * n))
        else:
            note = (
                f"{n} workers on {n} cores ≥ {0.8 * n:g}× one worker: needs {2 * n}+ CPUs (the load generator "
                f"needs its own); here {n} workers gave {scale:.2f}× the req/s sharing the cores with it, "
                f"and {per_cpu:.2f}× the requests per CPU-second"
            )
            out.append((note, "not measurable here", None))
    out += registry_scale.targets(run.sections.get("registry-scale"))  # type: ignore[arg-type]
    out += memory_churn.targets(run.sections.get("memory"))  # type: ignore[arg-type]
    out += oip_rows.targets(run.sections.get("oip"))  # type: ignore[arg-type]
    out += traffic_split.targets(run.sections.get("traffic"))  # type: ignore[arg-type]
    out += auth_cost.targets(run.sections.get("auth"))  # type: ignore[arg-type]
    out += isolated_cost.targets(run.sections.get("isolated"))  # type: ignore[arg-type]
    out += observability_cost.targets(run.sections.get("observability"))  # type: ignore[arg-type]
    out += grpc_rows.targets(run.sections.get("grpc"))  # type: ignore[arg-type]
    out += spread.targets(run.sections.get("spread"))  # type: ignore[arg-type]
    out += lane.targets(run.sections.get("lane"))  # type: ignore[arg-type]
    out += fleet.targets(run.sections.get("fleet"))  # type: ignore[arg-type]
    out += flavor_rows.targets(run.sections.get("flavors"))  # type: ignore[arg-type]
    return out


def _json_safe(value: object) -> object:
    """NaN (no measurement) as null, so the .json file is strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    return value


def render(run: Run, machine: dict[str, str]) -> str:
    pinning = (
        "server pinned to CPU 0, load generator to CPU 1 (taskset)"
        if run.pin
        else "nothing pinned (fewer than 2 CPUs): server and load generator share the machine"
    )
    lines = [
        f"# Benchmark, {run.started:%Y-%m-%d %H:%M} UTC",
        "",
        f"- Machine: {machine['cpus']} CPUs ({machine['cpu']}), Python {platform.python_version()}, "
        f"load average before the run {machine['load_before']}, after {machine['load_after']}.",
        f"- {pinning}; load from {machine['loadgen']}, {run.duration:g} s per point after a {run.warmup:g} s warm-up.",
        "- One row per request: iris LogisticRegression, JSON `dataframe_split`, the same registry and "
        "version (`models:/iris/1`) for every server.",
        "- Gateway: one worker, **prediction cache off** (`GATEWAY_PREDICTION_CACHE=off`), everything else default.",
        "- Peak RSS: VmHWM summed over the server's process tree, read after each point.",
    ]
    if run.main:
        lines += ["", "## Throughput and latency", ""]
        lines += [
            "| server | conns | req/s | p50 ms | p99 ms | errors | peak RSS MiB | ÷ mlflow | ÷ floor | ÷ bare ASGI |"
        ]
        lines += ["|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for entry in run.main:
        conns = int(entry["connections"])  # type: ignore[call-overload]
        ratios = []
        for other in ("mlflow models serve", FLOOR, BARE_FLOOR):
            base = _find(run.main, other, conns)
            ratios.append(f"{float(entry['req_s']) / float(base['req_s']):.2f}×" if base else "–")  # type: ignore[arg-type]
        lines.append(
            f"| {entry['server']} | {conns} | {fmt(entry['req_s'], 0)} | {fmt(entry['p50_ms'], 2)} | "
            f"{fmt(entry['p99_ms'], 2)} | {entry['errors']} | {fmt(entry['peak_rss_mb'], 0)} | {' | '.join(ratios)} |"
        )
    checks = targets(run)
    if checks:
        lines += ["", "## Targets", "", "| target | measured | |", "|---|--:|---|"]
        verdicts = {True: "pass", False: "FAIL", None: "–"}
        lines += [f"| {name} | {value} | {verdicts[ok]} |" for name, value, ok in checks]
    cold = run.sections.get("cold")
    if isinstance(cold, list):
        lines += ["", "## A cold version: first request", ""]
        lines += ["A version the gateway had synced (fetched, hashed) but never loaded, against"]
        lines += ["`mlflow.pyfunc.load_model` + one predict in a process that had loaded another sklearn model.", ""]
        lines += ["| version | gateway 1st request ms | gateway 2nd ms | load_model + predict ms |"]
        lines += ["|---|--:|--:|--:|"]
        for entry in cold:
            lines.append(
                f"| {entry['version']} | {fmt(entry['gateway_first_ms'])} | {fmt(entry['gateway_second_ms'], 2)} | "
                f"{fmt(entry['load_model_predict_ms'])} |"
            )
    alias = run.sections.get("alias")
    if isinstance(alias, dict):
        steady, moving = alias["steady"], alias["moving"]
        lines += ["", "## An alias moving under load", ""]
        lines += [f"`/models/iris/versions/champion/predict` at {alias['connections']} conns; champion flips 1 ↔ 2"]
        lines += [f"every second (MLflow alias, then `POST /admin/sync`): {alias['flips']} flips, each done in"]
        lines += [f"{fmt(alias['flip_ms_median'], 0)} ms median, {fmt(alias['flip_ms_max'], 0)} ms max (from setting"]
        missed = alias["flips_not_served"]
        lines += [f"the alias to the sync's answer); {missed} flips not served by the next request.", ""]
        lines += ["| | req/s | p50 ms | p99 ms | errors |", "|---|--:|--:|--:|--:|"]
        for label, data in (("alias still", steady), ("alias moving", moving)):
            lines.append(
                f"| {label} | {fmt(data['req_s'], 0)} | {fmt(data['p50_ms'], 2)} | {fmt(data['p99_ms'], 2)} "
                f"| {data['errors']} |"
            )
    zipf = run.sections.get("zipf")
    if isinstance(zipf, dict):
        lines += ["", "## Zipf traffic over more models than fit", ""]
        lines += [f"{zipf['models']} models, `GATEWAY_MAX_LOADED_MODELS={zipf['room']}`, model picked by Zipf"]
        lines += [f"s={zipf['s']} (the {zipf['room']} most popular get {zipf['top10_share']:.0%} of requests),"]
        lines += [f"{zipf['connections']} conns for {zipf['seconds']:g} s, Python load generator.", ""]
        lines += ["| req/s | p50 ms | p99 ms | errors | hit rate | loads | evictions | peak RSS MiB |"]
        lines += ["|--:|--:|--:|--:|--:|--:|--:|--:|"]
        lines.append(
            f"| {fmt(zipf['req_s'], 0)} | {fmt(zipf['p50_ms'], 2)} | {fmt(zipf['p99_ms'], 2)} | {zipf['errors']} | "
            f"{zipf['hit_rate']:.1%} | {zipf['model_loads']:.0f} | {zipf['cache_evictions']:.0f} | "
            f"{fmt(zipf['peak_rss_mb'], 0)} |"
        )
    torch = run.sections.get("torch")
    if isinstance(torch, list):
        lines += ["", "## The torch model (tiny-torch, `inputs`)", ""]
        lines += ["| server | conns | req/s | p50 ms | p99 ms | errors | peak RSS MiB |"]
        lines += ["|---|--:|--:|--:|--:|--:|--:|"]
        for entry in torch:
            lines.append(
                f"| {entry['server']} | {entry['connections']} | {fmt(entry['req_s'], 0)} | "
                f"{fmt(entry['p50_ms'], 2)} | {fmt(entry['p99_ms'], 2)} | {entry['errors']} | "
                f"{fmt(entry['peak_rss_mb'], 0)} |"
            )
    workers = run.sections.get("workers")
    if isinstance(workers, list) and workers:
        lines += ["", "## Scaling with --workers", ""]
        if run.sections.get("workers_dedicated"):
            lines += ["N workers pinned to CPUs 0…N-1, wrk with N threads on CPUs N…2N-1; 32·N connections.", ""]
        else:
            lines += [
                "Too few CPUs to give workers and the load generator cores of their own: everything shares "
                "every CPU, so req/s mostly shows the load generator's share. Requests per CPU-second of the "
                "server's processes show whether workers cost each other anything. 32·N connections.",
                "",
            ]
        base = workers[0]
        lines += ["| workers | conns | req/s | × 1 worker | p50 ms | p99 ms | errors | server CPU-s | req per CPU-s |"]
        lines += ["|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
        for entry in workers:
            scale = float(entry["req_s"]) / float(base["req_s"])  # type: ignore[arg-type]
            lines.append(
                f"| {entry['workers']} | {entry['connections']} | {fmt(entry['req_s'], 0)} | {scale:.2f}× | "
                f"{fmt(entry['p50_ms'], 2)} | {fmt(entry['p99_ms'], 2)} | {entry['errors']} | "
                f"{fmt(entry['server_cpu_s'], 1)} | {fmt(entry['req_per_cpu_s'], 0)} |"
            )
    lines += registry_scale.render(run.sections.get("registry-scale"))  # type: ignore[arg-type]
    lines += memory_churn.render(run.sections.get("memory"))  # type: ignore[arg-type]
    lines += oip_rows.render(run.sections.get("oip"))  # type: ignore[arg-type]
    lines += traffic_split.render(run.sections.get("traffic"))  # type: ignore[arg-type]
    lines += auth_cost.render(run.sections.get("auth"))  # type: ignore[arg-type]
    lines += isolated_cost.render(run.sections.get("isolated"))  # type: ignore[arg-type]
    lines += observability_cost.render(run.sections.get("observability"))  # type: ignore[arg-type]
    lines += grpc_rows.render(run.sections.get("grpc"))  # type: ignore[arg-type]
    lines += lane.render(run.sections.get("lane"))  # type: ignore[arg-type]
    lines += spread.render(run.sections.get("spread"))  # type: ignore[arg-type]
    lines += spread.render_cold(run.sections.get("cold-sizes"))  # type: ignore[arg-type]
    lines += fleet.render(run.sections.get("fleet"))  # type: ignore[arg-type]
    lines += flavor_rows.render(run.sections.get("flavors"))  # type: ignore[arg-type]
    if run.notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in run.notes]
    return "\n".join(lines) + "\n"


def machine_facts(loadgen: str) -> dict[str, str]:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return {"cpus": str(os.cpu_count()), "cpu": cpu, "load_before": load, "load_after": "", "loadgen": loadgen}


# --- main ----------------------------------------------------------------------------------


def guarded(run: Run, what: str, step: Callable[[], None]) -> None:
    """Run one server or section; a failure becomes a note, not the end of the run."""
    try:
        step()
    except Exception as exc:  # noqa: BLE001 - any failure of one section is reported, the run goes on
        run.notes.append(f"{what} failed: {type(exc).__name__}: {exc}")
        run.log(f"{what} FAILED: {exc}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="Short smoke run (2 s points, 0.5 s warm-up).")
    parser.add_argument("--duration", type=float, default=None, help="Seconds per point (default 10).")
    parser.add_argument("--warmup", type=float, default=None, help="Warm-up seconds before each point (default 2).")
    parser.add_argument("--connections", default="1,8,32,128", help="Comma-separated (default 1,8,32,128).")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"Comma-separated of: {', '.join(SECTIONS)}.")
    parser.add_argument(
        "--rounds", type=int, default=6, help="Rounds of the interleaved sections (auth, observability; default 6)."
    )
    parser.add_argument("--no-mlserver", action="store_true", help="Skip MLServer.")
    parser.add_argument(
        "--scale-sizes",
        default=None,
        help="registry-scale: comma-separated version counts (default 1000,10000; 1000 with --quick).",
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    only = set(args.only.split(","))
    if unknown := only - set(SECTIONS):
        sys.exit(f"unknown sections: {', '.join(sorted(unknown))}")
    run = Run(
        duration=args.duration or (2.0 if args.quick else 10.0),
        warmup=args.warmup if args.warmup is not None else (0.5 if args.quick else 2.0),
        connections=[int(c) for c in args.connections.split(",")],
        pin=(os.cpu_count() or 1) >= 2,
        rounds=args.rounds,
    )
    loadgen = wrk_version() or "bench/loadgen.py (wrk not installed)"
    machine = machine_facts(f"{loadgen}, 1 thread" if loadgen.startswith("wrk") else loadgen)
    WORK.mkdir(exist_ok=True)
    RESULTS.mkdir(exist_ok=True)
    if only - {"registry-scale", "memory", "cold-sizes"}:  # those build registries of their own
        run.log(f"building (or reusing) the registry in {WORK / 'registry'}")
        tracking_uri = build_registry(WORK / "registry")
        bodies = write_bodies(WORK)

    def gateway_sections() -> None:
        with gateway(tracking_uri, "main", cpus=run.server_cpus) as gw:
            run.log(f"gateway ready in {gw.ready_seconds:.1f} s")
            run.notes.append(f"The gateway was ready {gw.ready_seconds:.1f} s after start (53 models to sync).")
            if "cold" in only:
                guarded(run, "cold", lambda: cold_section(run, gw, tracking_uri, bodies))
            if "main" in only:
                main_points(run, gw, bodies)
            if "torch" in only:
                guarded(run, "torch", lambda: torch_section(run, gw, bodies))
            if "alias" in only:
                guarded(run, "alias", lambda: alias_section(run, gw, tracking_uri, bodies))

    if only & {"main", "cold", "torch", "alias"}:
        guarded(run, "gateway", gateway_sections)
    if "main" in only:
        guarded(run, "mlflow models serve", lambda: serve_main(run, mlflow_serve(run, tracking_uri), bodies))
        reason = "--no-mlserver" if args.no_mlserver else ensure_mlserver(run)
        if reason:
            run.notes.append(f"MLServer skipped: {reason}.")
        else:
            run.notes.append(
                "MLServer runs with `parallel_workers=0` (inference in its server process): its default worker "
                "pool does not start under uvloop 0.22+ in MLServer 1.7."
            )
            guarded(run, "MLServer", lambda: serve_main(run, mlserver(run, tracking_uri), bodies))
        guarded(run, "floor", lambda: serve_main(run, floor(run), bodies))
        guarded(run, "bare floor", lambda: serve_main(run, floor(run, bare=True), bodies))
    if "zipf" in only:
        guarded(run, "zipf", lambda: zipf_section(run, tracking_uri, bodies))
    if "workers" in only:
        guarded(run, "workers", lambda: workers_section(run, tracking_uri, bodies))
    if "registry-scale" in only:
        sizes = [int(size) for size in (args.scale_sizes or ("1000" if args.quick else "1000,10000")).split(",")]
        guarded(run, "registry-scale", lambda: scale_section(run, sizes))
    if "memory" in only:
        guarded(run, "memory", lambda: memory_section(run, args.quick))
    if "oip" in only:
        reason = "--no-mlserver" if args.no_mlserver else ensure_mlserver(run)
        guarded(run, "oip", lambda: oip_section(run, tracking_uri, bodies, reason))
    if "traffic" in only:
        guarded(run, "traffic", lambda: traffic_section(run, tracking_uri, bodies))
    if "auth" in only:
        guarded(run, "auth", lambda: auth_section(run, tracking_uri, bodies))
    if "isolated" in only:
        guarded(run, "isolated", lambda: isolated_section(run, tracking_uri, bodies))
    if "observability" in only:
        guarded(run, "observability", lambda: observability_section(run, tracking_uri, bodies))
    if "lane" in only:
        guarded(run, "lane", lambda: lane_section(run, tracking_uri, bodies))
    if "spread" in only:
        guarded(run, "spread", lambda: spread_section(run, tracking_uri, bodies))
    if "cold-sizes" in only:
        guarded(run, "cold-sizes", lambda: cold_sizes_section(run))
    if "fleet" in only:
        guarded(run, "fleet", lambda: fleet_section(run, tracking_uri, bodies))
    if "flavors" in only:
        guarded(run, "flavors", lambda: flavors_section(run))
    if "grpc" in only:
        reason = "--no-mlserver" if args.no_mlserver else ensure_mlserver(run)
        guarded(run, "grpc", lambda: grpc_section(run, tracking_uri, reason))
    machine["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())

    report = render(run, machine)
    stamp = f"{run.started:%Y%m%dT%H%M%SZ}"
    (RESULTS / f"{stamp}.md").write_text(report)
    (RESULTS / "latest.md").write_text(report)
    payload = {"started": run.started.isoformat(), "machine": machine, "main": run.main, **run.sections}
    payload |= {"targets": targets(run), "notes": run.notes, "duration": run.duration, "warmup": run.warmup}
    (RESULTS / f"{stamp}.json").write_text(json.dumps(_json_safe(payload), indent=2, allow_nan=False) + "\n")
    print(report)
    run.log(f"wrote bench/results/{stamp}.md, .json and latest.md")


if __name__ == "__main__":
    main()
