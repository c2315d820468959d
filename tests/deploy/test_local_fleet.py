"""deploy/local_fleet.py as docs/operations.md tells a user to run it: a sync, two gateways and
HAProxy from the shipped file on loopback, over a real MLflow registry and PostgreSQL; a
prediction through HAProxy over HTTP and gRPC, then a clean stop (issue 49: no by-hand fleet
recipe ran as written)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton

from gateway.demo import IRIS
from tests.conftest import Registry, iris_split
from tests.deploy.files import DEPLOY
from tests.deploy.proxies import debian_binary, free_port
from tests.gateway.protocols.test_oip_grpc import iris_inputs
from tests.support.postgres import postgres_database
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e
ROW = iris_split([[5.1, 3.5, 1.4, 0.2]])


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def fleet(iris_registry: Registry, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], dict[str, int], Path]]:
    haproxy = debian_binary("haproxy", "haproxy")
    ports = {name: free_port() for name in ("http", "grpc", "sync", "gateway", "gateway_grpc")}
    # gateway-2's ports are gateway-1's plus 10: free ones for both (the others run tests too)
    while not all(not _listening(ports[k] + 10) for k in ("gateway", "gateway_grpc")):
        ports["gateway"], ports["gateway_grpc"] = free_port(), free_port()
    output = tmp_path / "fleet.out"
    with postgres_database() as state_url:
        env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": iris_registry.tracking_uri,
            "GATEWAY_DATABASE_URL": state_url,
            "GATEWAY_ADMIN_TOKEN": "fleet-test-token",
            "GATEWAY_DRAIN_SECONDS": "0",
        }
        command = [sys.executable, str(DEPLOY / "local_fleet.py"), "--dir", str(tmp_path / "fleet")]
        command += ["--haproxy", haproxy, "--http-port", str(ports["http"]), "--grpc-port", str(ports["grpc"])]
        command += ["--sync-port", str(ports["sync"]), "--gateway-port", str(ports["gateway"])]
        command += ["--gateway-grpc-port", str(ports["gateway_grpc"]), "--timeout", "240"]
        with output.open("wb") as out:
            process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_until(
                lambda: "ready:" in output.read_text() or process.poll() is not None, timeout=300, what="the fleet"
            )
            assert process.poll() is None, output.read_text()
            yield process, ports, output
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def test_the_local_fleet_serves_through_haproxy_and_stops_cleanly(
    fleet: tuple[subprocess.Popen[bytes], dict[str, int], Path],
) -> None:
    process, ports, output = fleet
    with httpx.Client(base_url=f"http://127.0.0.1:{ports['http']}", timeout=120) as client:
        answer = client.post(f"/models/{IRIS}/predict", json=ROW)
        assert answer.status_code == 200, answer.text
        # every process on the one PostgreSQL database, the gateways under their replica ids
        fleet_view = client.get("/fleet").text
        assert "gateway-1" in fleet_view and "gateway-2" in fleet_view, fleet_view
        # /admin/sync goes to the sync process, with the token the recipe gave every process
        synced = client.post("/admin/sync", headers={"Authorization": "Bearer fleet-test-token"})
        assert synced.status_code in (200, 202), synced.text
    with triton.InferenceServerClient(f"127.0.0.1:{ports['grpc']}") as grpc_client:
        inputs = iris_inputs(np.array(ROW["dataframe_split"]["data"]))
        result = grpc_client.infer(IRIS, inputs, headers={"x-model-name": IRIS})
        assert result.get_response().outputs, result.get_response()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 0, output.read_text()
    assert "stopped" in output.read_text()
    gateway_ports = [ports["gateway"], ports["gateway"] + 10, ports["gateway_grpc"], ports["gateway_grpc"] + 10]
    for port in [ports["http"], ports["grpc"], ports["sync"], *gateway_ports]:
        assert not _listening(port), f"something still listens on {port} after the fleet stopped"
