"""The whole scale-out topology on loopback, every part real:

PostgreSQL (the state database), moto's S3 server (the artifact store), ``mlflow server``
proxying artifacts to it, two ``registry-gateway serve --role sync`` processes (a leader
and a standby: the lease picks one), three ``--role gateway`` replicas, and Debian's nginx
with the routing of deploy/nginx/registry-gateway.conf in front of them.

It checks what the issue promises: an alias moved in MLflow reaches every replica; the
leader SIGKILLed, the standby takes over within two poll intervals and keeps them
following; a gateway SIGKILLed under a client's request loop through nginx loses nothing.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from gateway.demo import IRIS, log_iris_version, using_registry
from registry_sync.database import make_engine, upgrade
from registry_sync.lease import Lease
from tests.conftest import Registry, iris_split
from tests.support.postgres import in_ci, postgres_database
from tests.support.s3 import moto_s3
from tests.support.servers import LOOPBACK, SERVED_SKLEARN_FORMAT, Process, free_port, gateway_server, mlflow_server
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

DEPLOY_NGINX = Path(__file__).parent.parent / "deploy" / "nginx"
POLL_SECONDS = 2.0
ROW = iris_split([[6.7, 3.0, 5.2, 2.3]])


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    if found is None:
        if in_ci():
            pytest.fail("nginx is not installed (apt-get install nginx); CI=true: the topology test must run")
        pytest.skip("nginx is not installed (apt-get install nginx)")
    return found


def nginx_config(directory: Path, *, port: int, gateways: list[str], syncs: list[str]) -> Path:
    """A top-level nginx.conf: deploy/nginx's routing (its `listen` moved to a free loopback
    port) and upstreams listing the loopback processes."""
    routing, moved = re.subn(
        r"^(\s*)listen\s+\d+;",
        rf"\1listen 127.0.0.1:{port};",
        (DEPLOY_NGINX / "registry-gateway.conf").read_text(),
        flags=re.M,
    )
    assert moved == 1, "deploy/nginx/registry-gateway.conf should listen once"
    (directory / "registry-gateway.conf").write_text(routing)
    servers = "\n".join(f"    server {a} max_fails=3 fail_timeout=10s;" for a in gateways)
    (directory / "upstream.conf").write_text(
        "upstream registry_gateways {\n"
        "    hash $gateway_hash_key consistent;\n"
        f"{servers}\n"
        "    keepalive 16;\n"
        "}\n"
        "upstream registry_sync {\n" + "".join(f"    server {a};\n" for a in syncs) + "}\n"
    )
    temp = " ".join(
        f"{kind}_temp_path {directory / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf = directory / "nginx.conf"
    conf.write_text(
        ("user root;\n" if os.geteuid() == 0 else "")  # as root, workers would be `nobody`: no way into tmp dirs
        + f"pid {directory / 'nginx.pid'};\nerror_log {directory / 'error.log'} warn;\nworker_processes 1;\n"
        "events { worker_connections 256; }\n"
        f"http {{\n  {temp}\n"
        f"  include {directory / 'upstream.conf'};\n  include {directory / 'registry-gateway.conf'};\n}}\n"
    )
    return conf


def version_at(base: str, path: str = f"/models/{IRIS}/predict") -> str | None:
    try:
        response = LOOPBACK.post(base + path, json=ROW, timeout=5)
    except httpx.HTTPError:
        return None
    return response.headers.get("x-model-version") if response.status_code == 200 else None


def ready(base: str) -> dict[str, object] | None:
    try:
        return LOOPBACK.get(f"{base}/health/ready", timeout=2).json()  # type: ignore[no-any-return]
    except (httpx.HTTPError, ValueError):
        return None


def served_requests(base: str) -> float:
    text = LOOPBACK.get(f"{base}/metrics", timeout=5).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("gateway_requests_total{") and f'model="{IRIS}"' in line
    )


def test_the_whole_topology_on_loopback(tmp_path: Path) -> None:
    nginx = nginx_binary()
    with ExitStack() as stack:
        state_url = stack.enter_context(postgres_database())
        engine = make_engine(state_url)
        upgrade(engine)  # deploy's explicit step: `registry-gateway db upgrade`
        engine.dispose()
        s3 = stack.enter_context(moto_s3(tmp_path / "moto"))
        server = mlflow_server(
            tmp_path / "mlflow",
            extra_env=s3.client_env,  # only the tracking server talks to S3
            artifacts=["--artifacts-destination", f"s3://{s3.bucket}/artifacts"],
        )
        server.start()
        stack.callback(server.stop, signal.SIGKILL)  # a throwaway server: no need to wait for it
        tracking_uri = server.health_url.removesuffix("/health")

        common = {
            "GATEWAY_DATABASE_URL": state_url,
            "GATEWAY_POLL_INTERVAL_SECONDS": str(POLL_SECONDS),
            "GATEWAY_FOLLOW_INTERVAL_SECONDS": "0.25",
            "GATEWAY_LOG_LEVEL": "warning",
            "GATEWAY_ADMIN_TOKEN": "t0ken",
            **{key: "" for key in s3.client_env},  # proxied artifacts: the gateways need no AWS
        }

        def process(role: str, index: int) -> tuple[Process, str]:
            proc, base = gateway_server(tracking_uri=tracking_uri, workdir=tmp_path / f"{role}-{index}", env=common)
            proc.args += ["--role", role]
            proc.name = f"{role}-{index}"
            return proc, base

        syncs = [process("sync", i) for i in range(2)]
        gateways = [process("gateway", i) for i in range(3)]
        for proc, _ in syncs + gateways:
            stack.callback(proc.stop, signal.SIGKILL)
        with ThreadPoolExecutor(max_workers=5) as pool:  # all at once: the lease picks the leader
            starting = [pool.submit(p[0].start) for p in syncs + gateways]
            with using_registry(tracking_uri) as client:  # meanwhile, the models (the sync finds them)
                first = log_iris_version(IRIS, c=0.05, serialization_format=SERVED_SKLEARN_FORMAT)
                second = log_iris_version(IRIS, c=10.0, serialization_format=SERVED_SKLEARN_FORMAT)
                client.set_registered_model_alias(IRIS, "champion", str(first))
            for started in starting:
                started.result()

        port = free_port()
        conf = nginx_config(
            tmp_path,
            port=port,
            gateways=[base.removeprefix("http://") for _, base in gateways],
            syncs=[base.removeprefix("http://") for _, base in syncs],
        )
        front = Process(
            [nginx, "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c", str(conf), "-g", "daemon off;"],
            env=dict(os.environ),
            log=tmp_path / "nginx.log",
            health_url=f"http://127.0.0.1:{port}/nginx-health",
            name="nginx",
        )
        front.start(timeout=30)
        stack.callback(front.stop)
        nginx_url = f"http://127.0.0.1:{port}"

        # --- one leader; every replica ready with the champion warm -----------------------
        def leaders() -> list[bool]:
            return [(ready(base) or {}).get("leader") is True for _, base in syncs]

        wait_until(lambda: sorted(leaders()) == [False, True], timeout=10, what="exactly one sync leader")
        leading = leaders()
        leader, standby = syncs if leading[0] else syncs[::-1]
        for _, base in gateways:
            health = ready(base)
            assert health is not None and (health["role"], health["leader"]) == ("gateway", False)
            wait_until(lambda b=base: version_at(b) == str(first), timeout=30, what=f"{base} to serve {first}")
        assert version_at(nginx_url) == str(first)

        # --- an alias moved in MLflow reaches every replica -------------------------------
        client.set_registered_model_alias(IRIS, "champion", str(second))
        for _, base in gateways:
            wait_until(lambda b=base: version_at(b) == str(second), timeout=20, what=f"{base} to serve {second}")

        # --- the leader dies: the standby takes over within two poll intervals ------------
        leader[0].stop(signal.SIGKILL)
        killed = time.monotonic()
        wait_until(lambda: (ready(standby[1]) or {}).get("leader") is True, timeout=15, what="the standby to lead")
        took = time.monotonic() - killed
        assert took <= 2 * POLL_SECONDS, f"took over after {took:.1f} s"
        client.set_registered_model_alias(IRIS, "champion", str(first))  # and it syncs: replicas follow
        # /admin/sync through nginx goes to the sync processes (the dead one is skipped)
        synced = httpx.post(f"{nginx_url}/admin/sync", headers={"Authorization": "Bearer t0ken"}, timeout=60)
        assert synced.status_code == 200, synced.text
        for _, base in gateways:
            wait_until(lambda b=base: version_at(b) == str(first), timeout=20, what=f"{base} to serve {first} again")

        # --- a gateway dies under load: nginx retries, nothing is lost --------------------
        before = [served_requests(base) for _, base in gateways]
        for _ in range(5):
            assert version_at(nginx_url) == str(first)
        owner = max(range(3), key=lambda i: served_requests(gateways[i][1]) - before[i])  # the model's replica
        statuses: list[int] = []
        stop = threading.Event()

        def loop() -> None:
            with httpx.Client(base_url=nginx_url, timeout=30) as http:
                while not stop.is_set():
                    statuses.append(http.post(f"/models/{IRIS}/predict", json=ROW).status_code)

        clients = [threading.Thread(target=loop) for _ in range(4)]
        for thread in clients:
            thread.start()
        wait_until(lambda: len(statuses) >= 40, timeout=20, what="requests before the kill")
        gateways[owner][0].stop(signal.SIGKILL)
        at_kill = len(statuses)
        wait_until(lambda: len(statuses) >= at_kill + 80, timeout=30, what="requests after the kill")
        stop.set()
        for thread in clients:
            thread.join(timeout=30)
        assert statuses and set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
        survivors = [base for i, (_, base) in enumerate(gateways) if i != owner]
        assert sum(served_requests(base) for base in survivors) > 0
        subprocess.run([nginx, "-p", str(tmp_path), "-c", str(conf), "-s", "quit"], check=False, timeout=10)


def test_workers_on_sqlite_elect_one_leader(iris_registry: Registry, tmp_path: Path) -> None:
    """`serve --workers 2` (role all) on the default sqlite state database: the workers
    compete for the lease like replicas, one leads for good, and the other takes over when
    it dies (uvicorn starts a new worker in its place)."""
    state = tmp_path / "gateway" / "state.db"
    # A lease of a few seconds: one of 1 s can change hands when a loaded host starves the
    # holder's renewals (safe, fenced, but this test checks that it stays put).
    env = {"GATEWAY_POLL_INTERVAL_SECONDS": "1", "GATEWAY_LEASE_SECONDS": "5", "GATEWAY_LOG_LEVEL": "warning"}
    proc, base = gateway_server(
        tracking_uri=iris_registry.tracking_uri, workdir=tmp_path / "gateway", env=env, workers=2
    )
    proc.start()
    try:
        # Spread over the workers by the kernel; a worker still starting answers 503 until warm.
        wait_until(lambda: all(version_at(base) == "1" for _ in range(20)), timeout=60, what="every worker warm")
        engine = make_engine(f"sqlite:///{state}")
        try:
            lease = Lease(engine, ttl_seconds=1)  # only to read who holds it
            holder = lease.current()
            assert holder is not None and holder[1] == 1
            pid = int(holder[0].split(":")[1])
            assert lease.current() == holder  # renewed all along: no flapping between workers
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda: (lease.current() or ("", 0))[1] == 2, timeout=20, what="another worker to lead")
            assert (lease.current() or ("",))[0] != holder[0]
        finally:
            engine.dispose()
        # uvicorn starts a worker in the dead one's place; until it is warm it answers 503.
        wait_until(lambda: all(version_at(base) == "1" for _ in range(20)), timeout=60, what="the workers serve again")
    finally:
        proc.stop()
