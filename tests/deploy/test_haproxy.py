"""deploy/haproxy/haproxy.cfg, run by Debian's HAProxy on loopback in front of stub replicas.

The file is used as shipped, with only its addresses moved to loopback and its health checks
run every 100 ms instead of every second: model affinity on every protocol (MLflow and OIP
REST paths, /invocations, X-Model-Name, gRPC's x-model-name metadata), the same replica for
a model over HTTP and gRPC, a hot model spilling over (hash-balance-factor) while a quiet one
stays home, retries, health checks, the sync-bound routes and request ids.
"""

from __future__ import annotations

import re
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest

from tests.deploy import routing
from tests.deploy.files import HAPROXY, dev_module
from tests.deploy.proxies import debian_binary, free_port, haproxy_on_loopback, running
from tests.deploy.replicas import StubReplica
from tests.support.waiting import wait_until

CONFIG = HAPROXY / "haproxy.cfg"
DEFAULT_MODEL = "fraud@champion"  # GATEWAY_DEFAULT_MODEL as the gateways take it: routed as "fraud"


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


@pytest.fixture(scope="module")
def fleet(stubs: dict[str, StubReplica], tmp_path_factory: pytest.TempPathFactory) -> Iterator[routing.Fleet]:
    haproxy = debian_binary("haproxy", "haproxy")
    directory = tmp_path_factory.mktemp("haproxy")
    http, grpc_port = free_port(), free_port()
    conf = haproxy_on_loopback(directory, http=http, grpc_port=grpc_port, replicas=stubs)
    client = httpx.Client(base_url=f"http://127.0.0.1:{http}", timeout=30)
    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
    command = [haproxy, "-db", "-f", str(conf)]
    env = {"GATEWAY_DEFAULT_MODEL": DEFAULT_MODEL}
    with running(
        command,
        env=env,
        log=directory / "haproxy.log",
        what="haproxy",
        answering=lambda: client.get("/health/ready").status_code == 200,
    ):
        yield routing.Fleet(
            http=client, replicas=stubs, grpc=channel, grpc_target=f"127.0.0.1:{grpc_port}", default_model="fraud"
        )
    channel.close()
    client.close()


@pytest.fixture(autouse=True)
def _reset(fleet: routing.Fleet) -> Iterator[None]:
    yield
    fleet.reset()


def _warnings(config: Path) -> list[str]:
    haproxy = debian_binary("haproxy", "haproxy")
    result = subprocess.run([haproxy, "-c", "-f", str(config)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    return [line for line in (result.stdout + result.stderr).splitlines() if "WARNING" in line]


def test_haproxy_accepts_the_file_as_shipped_without_a_warning(tmp_path: Path, stubs: dict[str, StubReplica]) -> None:
    """No warning but the compose names that do not resolve here (init-addr ... none: they need
    not, HAProxy's resolver finds them when they do); on loopback, none at all. (Issue 49: eight
    "http-request rule placed after a use_backend rule" warnings.)"""
    shipped = _warnings(CONFIG)
    assert [w for w in shipped if "could not resolve address" not in w] == []
    assert _warnings(haproxy_on_loopback(tmp_path, http=free_port(), grpc_port=free_port(), replicas=stubs)) == []


def test_every_protocol_sends_a_model_to_one_replica(fleet: routing.Fleet) -> None:
    routing.assert_each_model_on_one_replica(fleet)


def test_a_name_beyond_ascii_routes_alike(fleet: routing.Fleet) -> None:
    routing.assert_a_name_beyond_ascii_routes_alike(fleet)


def test_requests_without_a_model_spread(fleet: routing.Fleet) -> None:
    routing.assert_requests_without_a_model_spread(fleet)


def test_invocations_go_with_the_default_model(fleet: routing.Fleet) -> None:
    routing.assert_invocations_go_with_the_default_model(fleet)


def make_hot(fleet: routing.Fleet, model: str, requests: int = 150) -> None:
    """Give `model` most of the last 10 s's requests, as a hot model has: HAProxy spreads a model
    only once it takes a tenth of them or more and 1.5 times its fair share among the models seen
    (the tests before sent hundreds for others)."""
    for _ in range(requests):
        assert fleet.predict(model, json={"inputs": [[1]]}).status_code == 200


@pytest.fixture
def fresh(stubs: dict[str, StubReplica], tmp_path: Path) -> Iterator[tuple[httpx.Client, Path]]:
    """HAProxy of its own, its stick tables empty (no model seen yet): a client and its log."""
    http, grpc_port = free_port(), free_port()
    conf = haproxy_on_loopback(tmp_path, http=http, grpc_port=grpc_port, replicas=stubs)
    log = tmp_path / "haproxy.log"
    with httpx.Client(base_url=f"http://127.0.0.1:{http}", timeout=30) as client:
        command = [debian_binary("haproxy", "haproxy"), "-db", "-f", str(conf)]
        with running(
            command, log=log, what="haproxy", answering=lambda: client.get("/health/ready").status_code == 200
        ):
            yield client, log


def backends(client: httpx.Client, log: Path, sequence: list[str]) -> dict[str, list[str]]:
    """Send a prediction for each model of `sequence`, one after another: the backend HAProxy
    chose for each, per model, in order (from its log: `option httplog`)."""
    for model in sequence:
        assert client.post(f"/models/{model}/predict", json={"inputs": [[1]]}).status_code == 200
    pattern = re.compile(r" (registry_gateways\w*)/\S+ .*\"POST /models/([\w-]+)/predict ")

    def chosen() -> list[tuple[str, str]]:
        return [m.groups() for m in map(pattern.search, log.read_text().splitlines()) if m]

    wait_until(lambda: len(chosen()) == len(sequence), timeout=10, what="HAProxy's log of every request")
    found: dict[str, list[str]] = {}
    for backend, model in chosen():
        found.setdefault(model, []).append(backend)
    return found


def test_two_models_sharing_the_requests_evenly_are_not_hot(fresh: tuple[httpx.Client, Path]) -> None:
    """Issue 49: with two models, each took half the requests, over the tenth that made a model
    hot, so every request went to the hot backend."""
    found = backends(*fresh, ["even-a", "even-b"] * 20)
    # The very first request finds its model alone in the window: hot, nothing to keep home.
    assert found["even-a"][0] == "registry_gateways_hot"
    assert set(found["even-a"][1:]) == set(found["even-b"]) == {"registry_gateways"}, found


def test_one_of_two_models_with_most_of_the_requests_is_hot(fresh: tuple[httpx.Client, Path]) -> None:
    found = backends(*fresh, (["most-a"] * 9 + ["most-b"]) * 5)
    assert found["most-a"][-20:] == ["registry_gateways_hot"] * 20, found
    assert set(found["most-b"]) == {"registry_gateways"}, found


def test_a_model_alone_is_hot(fresh: tuple[httpx.Client, Path]) -> None:
    assert backends(*fresh, ["alone"] * 10) == {"alone": ["registry_gateways_hot"] * 10}


def test_a_hot_model_spills_over_to_other_replicas(fleet: routing.Fleet) -> None:
    make_hot(fleet, "hot-model")
    received = routing.hot_model(fleet, "hot-model")
    assert len(received) >= 2, f"one replica took every request: {received}"
    total = sum(received.values())
    assert max(received.values()) <= 0.6 * total, f"one replica took over 60%: {received}"


def test_a_quiet_model_stays_home_while_a_hot_one_spills(fleet: routing.Fleet) -> None:
    """Only a hot model spreads: a model with a small share of the requests goes to its home
    replica even while that replica holds the bound of hot requests in flight and more (with
    the bound on every model, it would be loaded on a second replica, evicting one of that
    replica's own models: a fleet whose caches fit their shares then thrashes)."""
    make_hot(fleet, "hot-model")
    home = fleet.owner("hot-model")
    quiet = next(f"quiet-{i}" for i in range(50) if fleet.owner(f"quiet-{i}") == home)
    gate = threading.Event()
    for name in routing.GATEWAYS:
        fleet.replicas[name].gate = gate
    base = str(fleet.http.base_url)
    hot_path, quiet_path = "/models/hot-model/predict", f"/models/{quiet}/predict"
    before = routing.arrived(fleet, hot_path)
    with ThreadPoolExecutor(18) as pool:
        hot = [pool.submit(routing.post, base, hot_path) for _ in range(12)]
        try:
            wait_until(
                lambda: (routing.arrived(fleet, hot_path) - before).total() == 12, timeout=15, what="12 hot requests"
            )
            held = routing.arrived(fleet, hot_path) - before
            assert held[home] >= 2 and len(held) >= 2, f"the hot model did not spill: {held}"
            answers = [pool.submit(routing.post, base, quiet_path) for _ in range(6)]
            wait_until(lambda: routing.arrived(fleet, quiet_path).total() == 6, timeout=15, what="the quiet requests")
        finally:
            gate.set()
        assert {answer.result().json()["replica"] for answer in answers} == {home}
        assert all(f.result().status_code == 200 for f in hot)
    assert set(routing.arrived(fleet, quiet_path)) == {home}


def test_a_draining_replica_is_retried_on_another(fleet: routing.Fleet) -> None:
    routing.assert_a_draining_replica_is_retried_on_another(fleet)


def test_a_deadline_is_not_retried(fleet: routing.Fleet) -> None:
    routing.assert_a_deadline_is_not_retried(fleet)


def test_a_gone_replica_is_skipped(fleet: routing.Fleet) -> None:
    routing.assert_a_gone_replica_is_skipped(fleet)


def test_an_unready_replica_is_skipped(fleet: routing.Fleet) -> None:
    routing.assert_an_unready_replica_is_skipped(fleet)


def test_sync_work_goes_to_sync_and_request_ids_are_kept_or_made(fleet: routing.Fleet) -> None:
    routing.assert_sync_work_goes_to_sync_and_request_ids_are_kept_or_made(
        fleet, made=r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    )


def test_tritonclient_sends_the_model_as_metadata(fleet: routing.Fleet, stubs: dict[str, StubReplica]) -> None:
    """deploy/README.md's call, made by Triton's own client: `headers={"x-model-name": ...}`."""
    triton = dev_module("tritonclient.grpc")
    assert fleet.grpc_target is not None
    client = triton.InferenceServerClient(fleet.grpc_target)
    tensor = triton.InferInput("x", [1, 1], "FP32")
    tensor.set_data_from_numpy(np.ones((1, 1), dtype=np.float32))
    owner = fleet.owner("iris")
    for _ in range(3):
        result = client.infer("iris", [tensor], headers={"x-model-name": "iris"})
        assert result.get_response().parameters["replica"].string_param == owner
    assert stubs[owner].grpc_seen[-1]["metadata"]["x-model-name"] == "iris"
    client.close()
