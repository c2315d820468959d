"""What every section of the benchmark shares: the run and its options, the bench registry and
request bodies, the servers (a gateway on the bench registry, MLServer, the floors), a POST, a
measured point and its row, and the interleaved contenders (bench/interleaved.py).

bench/run.py runs the sections (bench/sections/) and writes the report; see bench/README.md.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import auth_cost
import interleaved
import mlserver_env
import spread
from load import Result, drive
from servers import Server, free_port, gateway_server

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work"
RESULTS = HERE / "results"
VENV_BIN = Path(sys.executable).parent
COLUMNS = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
ROW = [6.7, 3.0, 5.2, 2.3]
ZIPF_MODELS = 50
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


def check_grpc(port: int, body: Path) -> None:
    """One ModelInfer call; raises unless it answers."""
    import grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")(body.read_bytes(), timeout=60)


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


def create_key(gw: Server, name: str, *extra: str) -> str:
    """``registry-gateway keys create`` against the gateway's GATEWAY_DATABASE_URL; the secret."""
    argv = [str(VENV_BIN / "registry-gateway"), "keys", "create", name, "--scopes", auth_cost.SCOPES, *extra]
    done = subprocess.run(argv, env=gw.env, capture_output=True, text=True, check=True)
    return auth_cost.secret_from(done.stdout)


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


def guarded(run: Run, what: str, step: Callable[[], None]) -> None:
    """Run one server or section; a failure becomes a note, not the end of the run."""
    try:
        step()
    except Exception as exc:  # noqa: BLE001 - any failure of one section is reported, the run goes on
        run.notes.append(f"{what} failed: {type(exc).__name__}: {exc}")
        run.log(f"{what} FAILED: {exc}")
