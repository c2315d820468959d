"""deploy/nginx, the simple option, run by Debian's nginx on loopback in front of stub replicas.

`nginx -t`, then the routing live: model affinity on every protocol (MLflow and OIP REST
paths, /invocations, X-Model-Name, gRPC's x-model-name through grpc_pass), retries, the
sync-bound routes and request ids; and what nginx lacks, as deploy/README.md says: a hot model
stays on one replica (no bound on its load).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from tests.deploy import routing
from tests.deploy.files import NGINX, upstream_servers
from tests.deploy.proxies import debian_binary, free_port, running
from tests.deploy.replicas import StubReplica

DEFAULT_MODEL = "fraud"


def _nginx_binary() -> str:
    return debian_binary("nginx", "nginx-light")


def _loopback_config(directory: Path, *, listen_port: int, grpc_port: int, servers: dict[str, StubReplica]) -> Path:
    """deploy/nginx with every upstream server moved to 127.0.0.1, its listens to free ports, the
    default model set, and all paths in `directory`. `servers` maps each server name of
    upstream.conf (gateway-1, sync, ...) to its stub: :8000 goes to its HTTP port, :8001 to gRPC."""
    upstream = (NGINX / "upstream.conf").read_text()
    names = {s.split(":")[0] for block in upstream_servers(upstream).values() for s in block}
    assert names == set(servers), "upstream.conf and the test disagree on the servers"

    def server(match: re.Match[str]) -> str:
        stub = servers[match["name"]]
        return f"server 127.0.0.1:{stub.grpc_port if match['port'] == '8001' else stub.http_port}"

    upstream = re.sub(r"\bserver\s+(?P<name>[\w.-]+):(?P<port>\d+)", server, upstream)
    upstream, defaults = re.subn(
        r"(map \$request_method \$gateway_default_model \{\s*default\s+)\"\";", rf'\1"{DEFAULT_MODEL}";', upstream
    )
    assert defaults == 1
    routing_conf, listens = re.subn(
        r"^(\s*)listen\s+8080;",
        rf"\1listen 127.0.0.1:{listen_port};",
        (NGINX / "registry-gateway.conf").read_text(),
        flags=re.M,
    )
    grpc_conf, grpc_listens = re.subn(
        r"^(\s*)listen\s+8081 http2;",
        rf"\1listen 127.0.0.1:{grpc_port} http2;",
        (NGINX / "grpc.conf").read_text(),
        flags=re.M,
    )
    assert (listens, grpc_listens) == (1, 1)
    (directory / "upstream.conf").write_text(upstream)
    (directory / "registry-gateway.conf").write_text(routing_conf)
    (directory / "grpc.conf").write_text(grpc_conf)
    conf = directory / "nginx.conf"
    temp_paths = " ".join(f"{kind}_temp_path {directory / kind};" for kind in ("client_body", "proxy", "fastcgi"))
    conf.write_text(
        # As root, the workers would drop to `nobody`, which can't enter pytest's 0700 dirs.
        ("user root;\n" if os.geteuid() == 0 else "") + f"pid {directory / 'nginx.pid'};\n"
        f"error_log {directory / 'error.log'} warn;\n"
        "worker_processes 1;\n"
        "events { worker_connections 256; }\n"
        "http {\n"
        f"  {temp_paths} uwsgi_temp_path {directory / 'uwsgi'}; scgi_temp_path {directory / 'scgi'};\n"
        f"  include {directory / 'upstream.conf'};\n"
        f"  include {directory / 'registry-gateway.conf'};\n"
        f"  include {directory / 'grpc.conf'};\n"
        "}\n"
    )
    return conf


def _nginx_command(nginx: str, conf: Path) -> list[str]:
    return [nginx, "-p", str(conf.parent), "-e", str(conf.parent / "error.log"), "-c", str(conf)]


@pytest.fixture(scope="module")
def stubs() -> Iterator[dict[str, StubReplica]]:
    replicas = {name: StubReplica(name) for name in routing.REPLICAS}
    for name, replica in replicas.items():
        replica.start()
        if name != "sync":
            replica.start_grpc()
    yield replicas
    for replica in replicas.values():
        replica.stop()


def test_nginx_config_is_valid(tmp_path: Path, stubs: dict[str, StubReplica]) -> None:
    nginx = _nginx_binary()
    conf = _loopback_config(tmp_path, listen_port=free_port(), grpc_port=free_port(), servers=stubs)
    result = subprocess.run([*_nginx_command(nginx, conf), "-t"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def fleet(stubs: dict[str, StubReplica], tmp_path_factory: pytest.TempPathFactory) -> Iterator[routing.Fleet]:
    """deploy/nginx running on loopback in front of three stub gateways and a stub sync."""
    nginx = _nginx_binary()
    directory = tmp_path_factory.mktemp("nginx")
    listen, grpc_port = free_port(), free_port()
    conf = _loopback_config(directory, listen_port=listen, grpc_port=grpc_port, servers=stubs)
    client = httpx.Client(base_url=f"http://127.0.0.1:{listen}", timeout=30)
    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
    with running(
        [*_nginx_command(nginx, conf), "-g", "daemon off;"],
        log=directory / "nginx.log",
        what="nginx",
        answering=lambda: client.get("/nginx-health").status_code == 200,  # no readiness signal but its port
    ):
        yield routing.Fleet(
            http=client, replicas=stubs, grpc=channel, grpc_target=f"127.0.0.1:{grpc_port}", default_model=DEFAULT_MODEL
        )
    channel.close()
    client.close()


@pytest.fixture(autouse=True)
def _reset(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "fleet" in request.fixturenames:
        request.getfixturevalue("fleet").reset()


def test_nginx_sends_each_model_to_one_replica(fleet: routing.Fleet) -> None:
    """Per protocol: a model's MLflow and OIP paths, X-Model-Name, and gRPC's x-model-name each
    reach one replica (HTTP and gRPC may differ: nginx rings servers by address, port included)."""
    placement: dict[str, str] = {}
    for i in range(30):
        model = f"model-{i}"
        served = routing.replicas_serving(fleet, model)
        assert len(served.pop("grpc")) == 1, model
        http = set().union(*served.values())
        assert len(http) == 1, f"{model} was served by {served}"
        placement[model] = http.pop()
    assert set(placement.values()) == set(routing.GATEWAYS), "every replica gets models"


def test_a_name_beyond_ascii_routes_alike(fleet: routing.Fleet) -> None:
    served = routing.replicas_serving(fleet, "iris модель")
    served.pop("grpc")
    assert len(set().union(*served.values())) == 1, served


def test_nginx_spreads_requests_without_a_model(fleet: routing.Fleet) -> None:
    routing.assert_requests_without_a_model_spread(fleet)


def test_invocations_go_with_the_default_model(fleet: routing.Fleet) -> None:
    routing.assert_invocations_go_with_the_default_model(fleet)


def test_nginx_keeps_a_hot_model_on_one_replica(fleet: routing.Fleet) -> None:
    """What nginx lacks (deploy/README.md): no bound on a replica's load."""
    received = routing.hot_model(fleet, "hot-model", waves=1)
    assert list(received.values()) == [12], received


def test_nginx_retries_a_draining_replica_on_the_next(fleet: routing.Fleet) -> None:
    routing.assert_a_draining_replica_is_retried_on_another(fleet)


def test_nginx_does_not_retry_a_deadline(fleet: routing.Fleet) -> None:
    routing.assert_a_deadline_is_not_retried(fleet)


def test_nginx_skips_a_gone_replica(fleet: routing.Fleet) -> None:
    routing.assert_a_gone_replica_is_skipped(fleet)


def test_nginx_sends_sync_work_to_sync_and_makes_request_ids(fleet: routing.Fleet) -> None:
    routing.assert_sync_work_goes_to_sync_and_request_ids_are_kept_or_made(fleet, made=r"[0-9a-f]{32}")
