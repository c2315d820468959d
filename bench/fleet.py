"""A fleet that adds up (issue 40): ``--only fleet``.

One host, one state database (sqlite), one ``--role sync`` process and three ``--role gateway``
replicas, each with room for 25 of the 60 models (``GATEWAY_MAX_LOADED_MODELS=25``): ``zipf-00``
… ``zipf-59``, iris LogisticRegressions of their own, each with a ``champion`` alias. Each
replica is a first start (no history): the warm rule warms nothing, so every load counts.

Behind each proxy in turn, a fresh fleet of the three:

- **haproxy, as shipped**: deploy/haproxy/haproxy.cfg (consistent hashing on the model; a hot
  model, a tenth of the requests or more, with ``hash-balance-factor 150``);
- **haproxy, bound on every model**: the same file with the bound on every model's requests
  (what it shipped with first: a busy replica's quiet models spill too);
- **haproxy, round robin**: the same file with ``balance roundrobin`` (no affinity);
- **nginx, hash**: deploy/nginx as shipped (consistent hashing, no bound on a replica's load).

For each: the loads at start; then Zipf traffic (s = 1.1) over the 60 models from 32 connections
(wrk), and the loads it caused per model it touched; then one hot model from 12 connections,
and each replica's share of its requests.

Last, **a rolling restart behind an L4 balancer**: HAProxy in TCP mode, round robin over the
replicas its health checks of ``/health/ready`` call up, no retries (what a Kubernetes Service or
a cloud balancer does), ``GATEWAY_DRAIN_SECONDS=2``: a steady Zipf run for the p99, then the
same load while the three replicas restart one at a time (SIGTERM, wait for the exit, start, wait
for ready); failed requests (wrk's socket errors and non-2xx answers) and the p99 over that run.

Targets (issue 40): loads at start 0 on a fresh fleet; at most 1.3 loads per model touched
behind HAProxy as shipped; the hot model served by at least two replicas, none above 60% of it;
the rolling restart with 0 failed requests and its p99 within 3× the steady one.

The pure parts (plans, configurations, verdicts, report) are tested in tests/test_bench.py;
bench/sections/fleet.py calls :func:`run_section`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import re
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from load import Result, drive
from report import fmt
from servers import Server, free_port, gateway_server

MODELS = 60
FITS = 25  # models each replica's cache holds
REPLICAS = 3
ZIPF_S = 1.1
CONNECTIONS = 32
HOT_CONNECTIONS = 12
HOT_MODEL = "zipf-00"
DRAIN_SECONDS = 2.0
TARGET_LOADS_PER_MODEL = 1.3
TARGET_HOT_REPLICAS = 2
TARGET_HOT_SHARE = 0.6
TARGET_RESTART_P99 = 3.0
BOUNDED, EVERY_MODEL = "haproxy, as shipped", "haproxy, bound on every model"
ROUND_ROBIN, NGINX = "haproxy, round robin", "nginx, hash"
PROXIES = (BOUNDED, EVERY_MODEL, ROUND_ROBIN, NGINX)


def models(count: int = MODELS) -> list[str]:
    return [f"zipf-{index:02d}" for index in range(count)]


def paths(count: int = MODELS) -> list[str]:
    return [f"/models/{name}/predict" for name in models(count)]


# --- the proxies' configurations --------------------------------------------------------


def _local_fleet() -> ModuleType:
    """deploy/local_fleet.py (deploy/ is no package), whose rewrite of the shipped file users run."""
    path = Path(__file__).resolve().parents[1] / "deploy" / "local_fleet.py"
    spec = importlib.util.spec_from_file_location("deploy_local_fleet", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def haproxy_config(shipped: str, *, http_port: int, grpc_port: int, gateways: list[int], sync: int) -> str:
    """deploy/haproxy/haproxy.cfg with its frontends on loopback ports and its servers on the
    replicas' loopback ports (the gRPC backend's too: the bench sends no gRPC), rewritten as
    `make fleet` does (deploy/local_fleet.py), without a log line a request."""
    text = _local_fleet().haproxy_on_loopback(
        shipped,
        http=http_port,
        grpc=grpc_port,
        gateways={f"gateway-{i + 1}": (port, port) for i, port in enumerate(gateways)},
        sync=sync,
    )
    return re.sub(r"^(\s*log\s+stdout.*)$", r"#\1", text, flags=re.M)  # quiet: one line a request


def bound_on_every_model(config: str) -> str:
    """The same routing with the bound on every model's requests, not only a hot model's."""
    text = re.sub(r"^\s*use_backend registry_gateways(_grpc)?_hot\b.*\n", "", config, flags=re.M)
    return re.sub(
        r"^(\s*)hash-type consistent\n(?!\s*hash-balance-factor)",
        r"\1hash-type consistent\n\1hash-balance-factor 150\n",
        text,
        flags=re.M,
    )


def round_robin(config: str) -> str:
    """The same routing without affinity: every backend's hash replaced by round robin."""
    text = re.sub(r"^(\s*)balance\s+(hash|hdr)\b.*$", r"\1balance roundrobin", config, flags=re.M)
    return re.sub(r"^\s*hash-(type|balance-factor)\b.*\n", "", text, flags=re.M)


def nginx_config(directory: Path, routing: str, *, port: int, gateways: list[int], sync: int) -> Path:
    """deploy/nginx's routing on a loopback port, with upstreams of the loopback replicas."""
    routing, moved = re.subn(r"^(\s*)listen\s+\d+;", rf"\1listen 127.0.0.1:{port};", routing, count=1, flags=re.M)
    assert moved == 1, "deploy/nginx/registry-gateway.conf should listen once"
    routing = re.sub(r"^(\s*access_log\s+)\S+(.*)$", r"\1off;", routing, flags=re.M)
    (directory / "registry-gateway.conf").write_text(routing)
    servers = "".join(f"    server 127.0.0.1:{p} max_fails=3 fail_timeout=10s;\n" for p in gateways)
    (directory / "upstream.conf").write_text(
        'map $request_method $gateway_default_model {\n    default "";\n}\n'
        "upstream registry_gateways {\n    hash $gateway_hash_key consistent;\n"
        f"{servers}    keepalive 64;\n}}\nupstream registry_sync {{\n    server 127.0.0.1:{sync};\n}}\n"
    )
    temp = " ".join(f"{kind}_temp_path {directory / kind};" for kind in ("client_body", "proxy", "fastcgi"))
    conf = directory / "nginx.conf"
    conf.write_text(
        f"pid {directory / 'nginx.pid'};\nerror_log {directory / 'error.log'} warn;\nworker_processes 1;\n"
        "events { worker_connections 1024; }\n"
        f"http {{\n  {temp} uwsgi_temp_path {directory / 'uwsgi'}; scgi_temp_path {directory / 'scgi'};\n"
        f"  include {directory / 'upstream.conf'};\n  include {directory / 'registry-gateway.conf'};\n}}\n"
    )
    return conf


def l4_config(*, port: int, gateways: list[int]) -> str:
    servers = "".join(
        f"    server g{i} 127.0.0.1:{p} check inter 200ms fall 2 rise 2\n" for i, p in enumerate(gateways)
    )
    return (
        "global\n    maxconn 4000\n"
        "defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 60s\n    timeout server 60s\n"
        "    retries 0\n"
        f"frontend l4\n    bind 127.0.0.1:{port}\n    default_backend gateways\n"
        "backend gateways\n    balance roundrobin\n    option httpchk GET /health/ready\n"
        f"    http-check expect status 200\n{servers}"
    )


# --- what a replica says -----------------------------------------------------------------


def counters(metrics: str, name: str, *, label: str) -> dict[str, float]:
    """A counter's totals by one label (``model``), from a /metrics page."""
    totals: dict[str, float] = {}
    pattern = re.compile(rf'^{name}_total\{{[^}}]*\b{label}="([^"]*)"[^}}]*\}} (\S+)$')
    for line in metrics.splitlines():
        match = pattern.match(line)
        if match:
            totals[match.group(1)] = totals.get(match.group(1), 0.0) + float(match.group(2))
    return totals


def successful_loads(metrics: str) -> dict[str, float]:
    totals: dict[str, float] = {}
    pattern = re.compile(r"^gateway_model_loads_total\{([^}]*)\} (\S+)$")
    for line in metrics.splitlines():
        match = pattern.match(line)
        if match and 'outcome="success"' in match.group(1):
            model = re.search(r'model="([^"]*)"', match.group(1))
            if model:
                totals[model.group(1)] = totals.get(model.group(1), 0.0) + float(match.group(2))
    return totals


# --- verdicts and report -------------------------------------------------------------------


def proxy_row(
    proxy: str,
    *,
    start_loads: float,
    zipf: Result,
    loads: dict[str, float],
    requests: dict[str, float],
    hot: dict[str, float],
) -> dict[str, Any]:
    """One proxy's figures: ``loads`` and ``requests`` by model over the Zipf run (summed over
    the replicas), ``hot`` the hot model's requests by replica."""
    touched = [name for name, count in requests.items() if count > 0]
    total_hot = sum(hot.values())
    shares = sorted((count / total_hot for count in hot.values()), reverse=True) if total_hot else []
    return {
        "proxy": proxy,
        "start_loads": start_loads,
        **{f"zipf_{key}": value for key, value in zipf.as_dict().items()},
        "models_touched": len(touched),
        "loads": sum(loads.get(name, 0.0) for name in touched),
        "loads_per_model": sum(loads.get(name, 0.0) for name in touched) / len(touched) if touched else None,
        "hot_requests": total_hot,
        "hot_replicas": sum(1 for count in hot.values() if count > 0),
        "hot_shares": shares,
    }


def targets(data: dict[str, Any] | None) -> list[tuple[str, str, bool | None]]:
    """(target, what was measured, met) for the report's summary."""
    if not data:
        return []
    out: list[tuple[str, str, bool | None]] = []
    rows = {row["proxy"]: row for row in data.get("proxies", [])}
    if rows:
        loads = sum(row["start_loads"] for row in rows.values())
        out.append(("fleet: loads at start on a fresh fleet are 0", f"{loads:g} ({len(rows)} fleets)", loads == 0))
    bounded = rows.get(BOUNDED)
    if bounded is not None:
        per_model = bounded["loads_per_model"]
        out.append(
            (
                f"fleet: at most {TARGET_LOADS_PER_MODEL} loads per model touched (HAProxy as shipped)",
                f"{fmt(per_model, 2)} ({bounded['loads']:g} loads, {bounded['models_touched']} models)",
                per_model is not None and per_model <= TARGET_LOADS_PER_MODEL,
            )
        )
        top = bounded["hot_shares"][0] if bounded["hot_shares"] else None
        out.append(
            (
                f"fleet: a hot model at {HOT_CONNECTIONS} connections on at least {TARGET_HOT_REPLICAS} replicas, "
                f"none above {TARGET_HOT_SHARE:.0%} of it",
                f"{bounded['hot_replicas']} replicas, the busiest {fmt(top * 100 if top is not None else None, 0)}%",
                bounded["hot_replicas"] >= TARGET_HOT_REPLICAS and top is not None and top <= TARGET_HOT_SHARE,
            )
        )
    restart = data.get("restart")
    if restart:
        ratio = restart["restart_p99_ms"] / restart["steady_p99_ms"] if restart["steady_p99_ms"] else None
        out.append(
            (
                "fleet: a rolling restart behind an L4 balancer fails no request",
                f"{restart['failed']} failed of {restart['requests']}",
                restart["failed"] == 0 and restart["requests"] > 0,
            )
        )
        out.append(
            (
                f"fleet: its p99 within {TARGET_RESTART_P99:g}× the steady p99",
                f"{fmt(ratio, 2)}× ({fmt(restart['restart_p99_ms'], 1)} ms against "
                f"{fmt(restart['steady_p99_ms'], 1)} ms)",
                ratio is not None and ratio <= TARGET_RESTART_P99,
            )
        )
    return out


def render(data: dict[str, Any] | None) -> list[str]:
    if not data:
        return []
    lines = ["", "## A fleet of three replicas behind a proxy (issue 40)", ""]
    lines += [
        f"One host: one `--role sync` process and {REPLICAS} `--role gateway` replicas on one sqlite state "
        f"database, each with room for {FITS} of the {MODELS} models (`zipf-00` … `zipf-{MODELS - 1:02d}`, each "
        f"with a `champion`); a fresh fleet (no history) behind each proxy. Zipf (s = {ZIPF_S}) over the "
        f"{MODELS} models from {CONNECTIONS} connections, then `{HOT_MODEL}` alone from {HOT_CONNECTIONS} "
        "connections. Loads are successful loads summed over the replicas; the hot model's shares are each "
        "replica's part of its requests, the busiest first. Errors are wrk's: a request unanswered after 5 s "
        "counts as one; on a fresh fleet they are the first requests, which wait for a replica's first "
        "load (its flavor's libraries imported: seconds on a busy 2-core host) and the loads queued behind it.",
        "",
        "| proxy | loads at start | Zipf req/s | p50 ms | p99 ms | errors | models touched | loads | "
        "loads per model | hot model: replicas | shares |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for row in data.get("proxies", []):
        shares = " / ".join(f"{share * 100:.0f}%" for share in row["hot_shares"]) or "–"
        lines.append(
            f"| {row['proxy']} | {row['start_loads']:g} | {fmt(row['zipf_req_s'], 0)} | {fmt(row['zipf_p50_ms'], 2)} "
            f"| {fmt(row['zipf_p99_ms'], 2)} | {row['zipf_errors']} | {row['models_touched']} | {row['loads']:g} | "
            f"{fmt(row['loads_per_model'], 2)} | {row['hot_replicas']} | {shares} |"
        )
    restart = data.get("restart")
    if restart:
        lines += [
            "",
            f"A rolling restart behind HAProxy in TCP mode (health checks of `/health/ready` every 0.2 s, no "
            f"retries), `GATEWAY_DRAIN_SECONDS={DRAIN_SECONDS:g}`, Zipf from {CONNECTIONS} connections: "
            f"{restart['requests']} requests during the restart of the {REPLICAS} replicas "
            f"({fmt(restart['restart_seconds'], 0)} s), {restart['failed']} failed; p99 "
            f"{fmt(restart['restart_p99_ms'], 1)} ms against {fmt(restart['steady_p99_ms'], 1)} ms steady "
            f"({fmt(restart['steady_req_s'], 0)} and {fmt(restart['restart_req_s'], 0)} req/s).",
        ]
    return lines


# --- the driver ------------------------------------------------------------------------------


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return str(answer.read().decode())


class Fleet:
    """A sync process and three replicas on one fresh state database under ``root``."""

    def __init__(self, root: Path, venv_bin: Path, tracking_uri: str, *, env: dict[str, str] | None = None) -> None:
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        common = {
            "MLFLOW_TRACKING_URI": tracking_uri,
            "GATEWAY_DATABASE_URL": f"sqlite:///{root / 'state.db'}",
            "GATEWAY_WARM_ALIASES": "champion",
            "GATEWAY_PREDICTION_CACHE": "off",
            "GATEWAY_ACCESS_LOG": "false",
            "GATEWAY_HEARTBEAT_SECONDS": "1",
            "GATEWAY_LOG_LEVEL": "warning",
            **(env or {}),
        }
        self.sync = gateway_server(
            "sync",
            venv_bin,
            port=free_port(),
            predict_path="/health/ready",
            log=root / "sync.log",
            env={**common, "GATEWAY_ARTIFACT_CACHE_DIR": str(root / "cache-sync")},
            args=["--role", "sync"],
        )
        self.replicas: list[Server] = []
        for index in range(1, REPLICAS + 1):
            self.replicas.append(
                gateway_server(
                    f"gateway-{index}",
                    venv_bin,
                    port=free_port(),
                    predict_path=f"/models/{HOT_MODEL}/predict",
                    log=root / f"gateway-{index}.log",
                    env={
                        **common,
                        "GATEWAY_ARTIFACT_CACHE_DIR": str(root / f"cache-{index}"),
                        "GATEWAY_MAX_LOADED_MODELS": str(FITS),
                        "GATEWAY_REPLICA_ID": f"gateway-{index}",
                        "GATEWAY_DRAIN_SECONDS": str(DRAIN_SECONDS),
                    },
                    args=["--role", "gateway"],
                )
            )

    def __enter__(self) -> Fleet:
        self.sync.start()
        for replica in self.replicas:
            replica.launch()
        for replica in self.replicas:
            replica.wait_ready()
        return self

    def __exit__(self, *exc: object) -> None:
        for server in (*self.replicas, self.sync):
            server.stop()

    def loads(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for replica in self.replicas:
            for name, count in successful_loads(_get(replica.url + "/metrics")).items():
                totals[name] = totals.get(name, 0.0) + count
        return totals

    def requests_by_replica(self, model: str) -> dict[str, float]:
        return {
            replica.name: counters(_get(replica.url + "/metrics"), "gateway_requests", label="model").get(model, 0.0)
            for replica in self.replicas
        }

    def requests(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for replica in self.replicas:
            for name, count in counters(_get(replica.url + "/metrics"), "gateway_requests", label="model").items():
                totals[name] = totals.get(name, 0.0) + count
        return totals


@contextlib.contextmanager
def proxy(kind: str, work: Path, fleet: Fleet, deploy: Path) -> Iterator[str]:
    """``kind`` running in front of ``fleet``; yields its base URL."""
    port = free_port()
    gateways = [replica.port for replica in fleet.replicas]
    work.mkdir(parents=True, exist_ok=True)
    if kind == NGINX:
        conf = nginx_config(
            work,
            (deploy / "nginx" / "registry-gateway.conf").read_text(),
            port=port,
            gateways=gateways,
            sync=fleet.sync.port,
        )
        argv = ["nginx", "-p", str(work), "-e", str(work / "error.log"), "-c", str(conf), "-g", "daemon off;"]
        health = "/nginx-health"
    else:
        shipped = (deploy / "haproxy" / "haproxy.cfg").read_text()
        text = haproxy_config(shipped, http_port=port, grpc_port=free_port(), gateways=gateways, sync=fleet.sync.port)
        if kind == ROUND_ROBIN:
            text = round_robin(text)
        elif kind == EVERY_MODEL:
            text = bound_on_every_model(text)
        elif kind not in (BOUNDED, EVERY_MODEL):
            text = l4_config(port=port, gateways=gateways)
        (work / "haproxy.cfg").write_text(text)
        argv = ["haproxy", "-db", "-f", str(work / "haproxy.cfg")]
        health = "/health/live"
    with (work / "proxy.log").open("ab") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                _get(url + health)
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{kind} did not start; see {work / 'proxy.log'}") from None
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)


def run_section(
    work: Path,
    venv_bin: Path,
    tracking_uri: str,
    body: Path,
    deploy: Path,
    *,
    seconds: float,
    log: Callable[[str], None],
) -> dict[str, Any]:
    data: dict[str, Any] = {"proxies": []}
    for kind in PROXIES:
        with Fleet(work / "fleet", venv_bin, tracking_uri) as fleet:
            start_loads = sum(fleet.loads().values())
            log(f"fleet ({kind}): ready; {start_loads:g} loads at start")
            with proxy(kind, work / "proxy", fleet, deploy) as url:
                before_loads, before_requests = fleet.loads(), fleet.requests()
                zipf = drive(url, body, connections=CONNECTIONS, duration=seconds, paths=paths(), zipf=ZIPF_S)
                loads = _minus(fleet.loads(), before_loads)
                requests = _minus(fleet.requests(), before_requests)
                before_hot = fleet.requests_by_replica(HOT_MODEL)
                drive(f"{url}/models/{HOT_MODEL}/predict", body, connections=HOT_CONNECTIONS, duration=seconds / 2)
                hot = _minus(fleet.requests_by_replica(HOT_MODEL), before_hot)
            row = proxy_row(kind, start_loads=start_loads, zipf=zipf, loads=loads, requests=requests, hot=hot)
            data["proxies"].append(row)
            log(
                f"fleet ({kind}): {zipf.req_s:.0f} req/s, {row['loads']:g} loads for {row['models_touched']} "
                f"models, hot model on {row['hot_replicas']} replicas ({row['hot_shares']})"
            )
    data["restart"] = _rolling_restart(work, venv_bin, tracking_uri, body, deploy, seconds=seconds, log=log)
    return data


def _rolling_restart(
    work: Path,
    venv_bin: Path,
    tracking_uri: str,
    body: Path,
    deploy: Path,
    *,
    seconds: float,
    log: Callable[[str], None],
) -> dict[str, Any]:
    with Fleet(work / "fleet", venv_bin, tracking_uri) as fleet, proxy("l4", work / "proxy", fleet, deploy) as url:
        options: dict[str, Any] = {"connections": CONNECTIONS, "paths": paths(), "zipf": ZIPF_S}
        drive(url, body, duration=seconds / 2, **options)  # every replica loads what it is sent
        steady = drive(url, body, duration=seconds, **options)
        one_start = max(replica.ready_seconds for replica in fleet.replicas)
        budget = REPLICAS * (one_start + DRAIN_SECONDS + 5) + 10  # wrk runs longer than the restarts
        results: list[Result] = []
        running = threading.Thread(target=lambda: results.append(drive(url, body, duration=budget, **options)))
        running.start()
        time.sleep(2)  # the load under way first
        began = time.monotonic()
        for replica in fleet.replicas:
            replica.stop()  # SIGTERM: the drain
            replica.start()
        restarted = time.monotonic() - began
        running.join()
        during = results[0]
        log(
            f"fleet rolling restart: {during.requests} requests in {budget:.0f} s ({restarted:.0f} s of restarts), "
            f"{during.errors} failed, p99 {during.p99_ms:.1f} ms against {steady.p99_ms:.1f} ms steady"
        )
        return {
            "requests": during.requests,
            "failed": during.errors,
            "restart_seconds": restarted,
            "load_seconds": budget,
            "steady_p99_ms": steady.p99_ms,
            "restart_p99_ms": during.p99_ms,
            "steady_req_s": steady.req_s,
            "restart_req_s": during.req_s,
        }


def _minus(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {key: value - before.get(key, 0.0) for key, value in after.items()}
