"""The shipped proxy files in front of a real fleet: deploy/haproxy/haproxy.cfg and
deploy/envoy/envoy.yaml, as shipped but for their servers moved to loopback (and health
checks every 100 ms), in front of three real ``registry-gateway serve --role gateway``
processes (HTTP and gRPC) and a ``--role sync`` on PostgreSQL.

tests/deploy checks each proxy's routing against stub replicas; here the replicas are the
gateway itself, so what is checked is what a deployment gets: every request for a model, on
MLflow's routes, OIP REST and gRPC (``x-model-name``), answered by one replica; a hot model
spread over several, over HTTP and over gRPC (the hot backends); and a rolling restart of
the three replicas under load through both proxies, on both protocols, with no failed
request, each replica warm again (its models loaded before any request) once it is back.
Which replica answered is read from each replica's own /metrics.
"""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest

from gateway.protocols.proto import grpc_service_pb2 as pb
from gateway.protocols.proto import grpc_service_pb2_grpc as pb_grpc
from registry_sync.database import make_engine, upgrade
from tests.conftest import empty_registry
from tests.deploy.files import ENVOY, load_yaml
from tests.deploy.proxies import (
    debian_binary,
    envoy_binary,
    envoy_on_loopback,
    free_port,
    haproxy_on_loopback,
    running,
)
from tests.support.models import Doubler, FileGated, log_pyfunc
from tests.support.postgres import postgres_database
from tests.support.request_loop import RequestLoop, Session, http_session
from tests.support.servers import Process, assert_warmed_before_served, gateway_server, model_counters
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

GATEWAYS = ("gateway-1", "gateway-2", "gateway-3")
MODELS = tuple(f"fleet-{letter}" for letter in "abcdef")
HOT = "hot-model"
DRAIN_SECONDS = 1.5  # longer than the proxies' health checks (every 100 ms, two failures) take to see a replica go
ROW = {"dataframe_split": {"columns": ["x"], "data": [[1.0]]}}
OIP_ROW = {"inputs": [{"name": "x", "datatype": "FP64", "shape": [1], "data": [1.0]}]}


@dataclass
class Replica:
    name: str
    process: Process
    base: str
    http_port: int
    grpc_port: int

    def counter(self, metric: str, model: str) -> float:
        return model_counters(self.base, model, metric)[0]


@dataclass
class Front:
    """One proxy in front of the fleet: its HTTP base URL and its gRPC listener."""

    name: str
    http: str
    grpc_target: str


@dataclass
class Fleet:
    replicas: dict[str, Replica]
    fronts: dict[str, Front]
    gate: Path  # the hot model's predictions wait while this file is missing

    def answered(self, model: str) -> Counter[str]:
        """How many requests for `model` each replica has answered (its gateway_requests_total)."""
        return Counter({n: r.counter("gateway_requests_total", model) for n, r in self.replicas.items()})

    def arrived(self, model: str) -> float:
        """Requests for `model` that reached a replica, answered or held (each takes the cache once)."""
        return sum(
            r.counter("gateway_cache_hits_total", model) + r.counter("gateway_cache_misses_total", model)
            for r in self.replicas.values()
        )


def grpc_infer(channel: grpc.Channel, model: str) -> pb.ModelInferResponse:
    """A ModelInfer for `model`, naming it in the `x-model-name` metadata as deploy/README.md says."""
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="x", datatype="FP64", shape=[1]).contents.fp64_contents.append(1.0)
    answer: pb.ModelInferResponse = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
        request, metadata=[("x-model-name", model)], timeout=30
    )
    return answer


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    haproxy, envoy = debian_binary("haproxy", "haproxy"), envoy_binary()
    root = tmp_path_factory.mktemp("fleet")
    gate = root / "gate-open"
    with ExitStack() as stack:
        state_url = stack.enter_context(postgres_database())
        engine = make_engine(state_url)
        upgrade(engine)  # deploy's explicit step: `registry-gateway db upgrade`
        engine.dispose()
        registry = empty_registry(root / "registry")
        common = {
            "GATEWAY_DATABASE_URL": state_url,
            "GATEWAY_POLL_INTERVAL_SECONDS": "1",
            "GATEWAY_FOLLOW_INTERVAL_SECONDS": "0.25",
            "GATEWAY_LOG_LEVEL": "warning",
        }

        def process(name: str, role: str) -> Replica:
            grpc_port = free_port() if role == "gateway" else 0
            env = {**common, "GATEWAY_REPLICA_ID": name}
            if role == "gateway":
                env |= {"GATEWAY_DRAIN_SECONDS": str(DRAIN_SECONDS), "GATEWAY_GRPC_PORT": str(grpc_port)}
            proc, base = gateway_server(tracking_uri=registry.tracking_uri, workdir=root / name, env=env)
            proc.args += ["--role", role]
            proc.name = name
            stack.callback(proc.stop, signal.SIGKILL)
            return Replica(name, proc, base, int(base.rsplit(":", 1)[1]), grpc_port)

        replicas = {name: process(name, "gateway") for name in GATEWAYS}
        sync = process("sync", "sync")
        with ThreadPoolExecutor(max_workers=4) as pool:
            starting = [pool.submit(r.process.start) for r in (*replicas.values(), sync)]
            for model in MODELS:  # meanwhile, the models (the sync finds them)
                registry.log(log_pyfunc, model, Doubler())
            registry.log(log_pyfunc, HOT, FileGated(str(gate)))
            for name in (*MODELS, HOT):
                registry.client.set_registered_model_alias(name, "champion", "1")
            for started in starting:
                started.result()

        ends = {**replicas, "sync": sync}
        http, grpc_port = free_port(), free_port()
        conf = haproxy_on_loopback(root, http=http, grpc_port=grpc_port, replicas=ends)
        client = stack.enter_context(httpx.Client(base_url=f"http://127.0.0.1:{http}", timeout=30))
        stack.enter_context(
            running(
                [haproxy, "-db", "-f", str(conf)],
                log=root / "haproxy.log",
                what="haproxy",
                answering=lambda: client.get("/health/ready").status_code == 200,
            )
        )
        fronts = {"haproxy": Front("haproxy", f"http://127.0.0.1:{http}", f"127.0.0.1:{grpc_port}")}

        http, grpc_port = free_port(), free_port()
        conf = envoy_on_loopback(root, load_yaml(ENVOY / "envoy.yaml"), http=http, grpc_port=grpc_port, replicas=ends)
        envoy_client = stack.enter_context(httpx.Client(base_url=f"http://127.0.0.1:{http}", timeout=30))

        def every_replica_checked() -> bool:  # Envoy takes a host in once its first check passed
            return all(envoy_client.post(f"/models/{m}/predict", json=ROW).status_code == 200 for m in MODELS)

        stack.enter_context(
            running(
                [envoy, "-c", str(conf), "--concurrency", "1", "--disable-hot-restart", "--log-level", "warn"],
                log=root / "envoy.log",
                what="envoy",
                answering=every_replica_checked,
            )
        )
        fronts["envoy"] = Front("envoy", f"http://127.0.0.1:{http}", f"127.0.0.1:{grpc_port}")
        yield Fleet(replicas, fronts, gate)


@pytest.mark.parametrize("front", ["haproxy", "envoy"])
def test_each_model_meets_one_gateway_on_every_protocol(fleet: Fleet, front: str) -> None:
    """MLflow's routes, OIP REST and gRPC with x-model-name: all of a model's requests are
    answered by one replica, and the models are spread over the replicas."""
    proxy = fleet.fronts[front]
    homes: dict[str, str] = {}
    with httpx.Client(base_url=proxy.http, timeout=30) as http, grpc.insecure_channel(proxy.grpc_target) as channel:
        for model in MODELS:
            before = fleet.answered(model)
            answers = [
                http.post(f"/models/{model}/predict", json=ROW),
                http.post(f"/models/{model}/versions/1/predict", json=ROW),
                http.post(f"/models/{model}/versions/champion/invocations", json=ROW),
                http.post(f"/v2/models/{model}/infer", json=OIP_ROW),
                http.post(f"/v2/models/{model}/versions/1/infer", json=OIP_ROW),
            ]
            assert [a.status_code for a in answers] == [200] * 5, [a.text for a in answers]
            for _ in range(2):
                assert list(grpc_infer(channel, model).outputs[0].contents.fp64_contents) == [2.0]
            wait_until(
                lambda m=model, b=before: (fleet.answered(m) - b).total() == 7,  # type: ignore[misc]
                timeout=10,
                what=f"{model}'s 7 requests counted",
            )
            answered = +(fleet.answered(model) - before)
            assert len(answered) == 1, f"{model}'s requests through {front} were answered by {dict(answered)}"
            homes[model] = next(iter(answered))
    assert len(set(homes.values())) >= 2, f"every model went to one replica: {homes}"


def _hot_wave(fleet: Fleet, send: Callable[[], int], *, clients: int = 12) -> Counter[str]:
    """`clients` concurrent requests for the hot model, each sent once the one before reached a
    replica (a proxy counts a request as load once it is on an upstream connection), all held
    there (the gate closed) until the last arrived: how many each replica answered."""
    fleet.gate.unlink(missing_ok=True)
    before, arrived = fleet.answered(HOT), fleet.arrived(HOT)
    with ThreadPoolExecutor(clients) as pool:
        sent = []
        try:
            for n in range(clients):
                sent.append(pool.submit(send))
                wait_until(
                    lambda n=n: fleet.arrived(HOT) - arrived > n,  # type: ignore[misc]
                    timeout=15,
                    what=f"hot request {n + 1} at a replica",
                )
        finally:
            fleet.gate.touch()
        assert [f.result() for f in sent] == [200] * clients
    wait_until(lambda: (fleet.answered(HOT) - before).total() == clients, timeout=10, what="the answers counted")
    return +(fleet.answered(HOT) - before)


@pytest.mark.parametrize("front", ["haproxy", "envoy"])
def test_a_hot_model_spills_over_on_http_and_grpc(fleet: Fleet, front: str) -> None:
    """A model with most of the requests, many in flight at once, is answered by two replicas
    or more, over HTTP and over gRPC (HAProxy's hot backends, Envoy's bounded ring)."""
    proxy = fleet.fronts[front]
    fleet.gate.touch()
    with httpx.Client(base_url=proxy.http, timeout=30) as http:  # most of the last 10 s's requests: hot
        for _ in range(150):
            assert http.post(f"/models/{HOT}/predict", json=ROW).status_code == 200

    def over_http() -> int:  # a client of its own, as concurrent callers are
        with httpx.Client(base_url=proxy.http, timeout=30) as http:
            return http.post(f"/models/{HOT}/predict", json=ROW).status_code

    def over_grpc() -> int:
        with grpc.insecure_channel(proxy.grpc_target) as channel:
            return 200 if grpc_infer(channel, HOT).outputs[0].contents.fp64_contents == [2.0] else 500

    for protocol, send in (("http", over_http), ("grpc", over_grpc)):
        answered = _hot_wave(fleet, send)
        assert len(answered) >= 2, f"{front} {protocol}: one replica took every request: {dict(answered)}"
        assert max(answered.values()) <= 0.75 * answered.total(), f"{front} {protocol}: {dict(answered)}"


def grpc_session(target: str, model: str) -> Session:
    @contextmanager
    def session() -> Iterator[Callable[[], int]]:
        with grpc.insecure_channel(target) as channel:
            yield lambda: 200 if grpc_infer(channel, model).outputs[0].contents.fp64_contents == [2.0] else 500

    return session


def test_a_rolling_restart_under_load_fails_no_request(fleet: Fleet) -> None:
    """One replica at a time stopped (SIGTERM: it drains) and started again while clients call
    every model through both proxies over HTTP and gRPC: no request fails, and each replica,
    back, had the models it served loaded before any request reached it (every request for
    them found them loaded: cache hits, and the one load was its warm-up's)."""
    sessions = []
    for index, model in enumerate(MODELS):
        front = fleet.fronts["haproxy" if index % 2 == 0 else "envoy"]
        path = f"/models/{model}/predict"
        sessions.append(http_session(front.http, path, ROW) if index < 4 else grpc_session(front.grpc_target, model))
    # paced, 20 calls a second a client at most: back to back, the six clients kept both cores
    # busy through the three restarts, which then took longer, and so made more calls (the file
    # took 67 s of CPU alone on a quiet host, 132 s on a busy one; paced, 37 s and 53 s)
    with RequestLoop(sessions, pace=0.05) as load:
        load.wait_for(60)
        for name, replica in fleet.replicas.items():  # one replica at a time, as a rolling update does
            served = [m for m in MODELS if replica.counter("gateway_requests_total", m) > 0]
            replica.process.stop()  # SIGTERM: not ready at once, serves DRAIN_SECONDS more, then stops
            load.wait_for(load.count + 30)  # two replicas carry the load meanwhile
            replica.process.start()  # the same replica again (same ports, same id): it warms what it served
            load.wait_for(load.count + 30)
            for model in served:
                assert_warmed_before_served(replica.base, model, f"{name} back")
        load.wait_for(load.count + 30)
    assert load.failures == [], load.failures[:5]
    assert set(load.statuses) == {200}, dict(Counter(load.statuses))
