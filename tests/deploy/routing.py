"""What a proxy of deploy/ must do in front of a fleet, checked against stub replicas.

Each proxy's test module starts its proxy on loopback in front of three stub gateways and a
stub sync (tests/deploy/replicas.py) and calls these checks with a :class:`Fleet`; what a
proxy cannot do (nginx: bound a replica's load, check health actively) its module asserts as
the documented limit instead.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import quote

import grpc
import httpx

from tests.deploy.replicas import StubReplica, grpc_infer
from tests.support.waiting import wait_until

GATEWAYS = ("gateway-1", "gateway-2", "gateway-3")
REPLICAS = (*GATEWAYS, "sync")
# An HTTP path that names no model (an OpenAI-style route carries it in the body): a client
# says which model with X-Model-Name, for the proxy's sake.
MODELLESS_PATH = "/v1/chat/completions"


@dataclass
class Fleet:
    """A proxy on loopback in front of stub replicas."""

    http: httpx.Client
    replicas: dict[str, StubReplica]
    grpc: grpc.Channel | None = None
    grpc_target: str | None = None  # host:port of the proxy's gRPC listener
    default_model: str | None = None  # the model's name the proxy routes POST /invocations with

    def owner(self, model: str) -> str:
        """The replica that answers `model`'s metadata (MLflow's path)."""
        answer = self.http.get(f"/models/{model}")
        assert answer.status_code == 200, answer.text
        replica: str = answer.json()["replica"]
        return replica

    def predict(self, model: str, **kwargs: object) -> httpx.Response:
        return self.http.post(f"/models/{model}/predict", **kwargs)  # type: ignore[arg-type]

    def reset(self) -> None:
        """Every replica serving and ready again, as the next test expects."""
        for replica in self.replicas.values():
            replica.status, replica.ready, replica.gate = 200, True, None
        for name in GATEWAYS:
            replica = self.replicas[name]
            if replica._http is None:
                replica.start()
                if replica.grpc_port and self.grpc is not None:
                    replica.start_grpc()


def replicas_serving(fleet: Fleet, model: str) -> dict[str, set[str]]:
    """Per protocol, which replicas answered `model`'s requests. A name is sent in headers and
    metadata percent-encoded as in a URL's path (deploy/README.md)."""
    http = fleet.http
    header = quote(model, safe="")
    calls = {
        "mlflow": [
            lambda: http.post(f"/models/{model}/predict", json={"inputs": [[1]]}),
            lambda: http.post(f"/models/{model}/versions/2/predict", json={"inputs": [[1]]}),
            lambda: http.post(f"/models/{model}/versions/champion/invocations", json={"inputs": [[1]]}),
            lambda: http.get(f"/models/{model}"),
        ],
        "oip": [
            lambda: http.post(f"/v2/models/{model}/infer", json={"inputs": []}),
            lambda: http.post(f"/v2/models/{model}/versions/1/infer", json={"inputs": []}),
            lambda: http.get(f"/v2/models/{model}/ready"),
        ],
        "x-model-name": [lambda: http.post(MODELLESS_PATH, json={}, headers={"X-Model-Name": header})],
    }
    served: dict[str, set[str]] = {}
    for protocol, requests in calls.items():
        answers = [call() for call in requests]
        assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
        served[protocol] = {a.json()["replica"] for a in answers}
    if fleet.grpc is not None:
        served["grpc"] = {grpc_infer(fleet.grpc, model, header=header) for _ in range(2)}
    return served


def assert_each_model_on_one_replica(fleet: Fleet, models: int = 30) -> dict[str, str]:
    """Every request for a model, on every protocol, reaches one replica; models spread over all."""
    placement: dict[str, str] = {}
    for i in range(models):
        model = f"model-{i}"
        served = replicas_serving(fleet, model)
        everywhere = set().union(*served.values())
        assert len(everywhere) == 1, f"{model} was served by {served}"
        placement[model] = everywhere.pop()
    assert set(placement.values()) == set(GATEWAYS), f"every replica gets models: {Counter(placement.values())}"
    return placement


def assert_a_name_beyond_ascii_routes_alike(fleet: Fleet) -> None:
    """A name with a space and Cyrillic letters: percent-encoded in the path, the header and the
    metadata, its requests still meet on one replica."""
    served = replicas_serving(fleet, "iris модель")
    assert len(set().union(*served.values())) == 1, served


def assert_requests_without_a_model_spread(fleet: Fleet) -> None:
    assert {fleet.http.get("/health/ready").json()["replica"] for _ in range(60)} == set(GATEWAYS)
    if fleet.grpc is not None:  # a gRPC call without x-model-name is answered, anywhere
        assert len({grpc_infer(fleet.grpc, "any-model") for _ in range(30)}) >= 2


def assert_invocations_go_with_the_default_model(fleet: Fleet) -> None:
    assert fleet.default_model is not None
    owner = fleet.owner(fleet.default_model)
    for _ in range(5):
        answer = fleet.http.post("/invocations", json={"inputs": [[1]]})
        assert answer.status_code == 200 and answer.json()["replica"] == owner


def arrived(fleet: Fleet, path: str) -> Counter[str]:
    """How many requests for `path` each gateway replica has received (held ones too)."""
    return Counter(name for name in GATEWAYS for seen in fleet.replicas[name].seen if seen["path"] == path)


def post(base: str, path: str, request_id: str | None = None) -> httpx.Response:
    """A prediction on a connection of its own (a client of its own, as concurrent callers are)."""
    headers = {"X-Request-Id": request_id} if request_id else None
    with httpx.Client(base_url=base, timeout=30) as client:
        return client.post(path, json={"inputs": [[1]]}, headers=headers)


def assert_each_reached_one_replica(fleet: Fleet, request_ids: list[str]) -> None:
    """Each of these requests reached exactly one replica, once (none duplicated, none lost)."""
    reached = Counter(
        seen["request_id"] for name in GATEWAYS for seen in list(fleet.replicas[name].seen) if seen["request_id"]
    )
    wrong = {rid: reached[rid] for rid in request_ids if reached[rid] != 1}
    assert not wrong, f"requests that reached no replica or more than one (times): {wrong}"


def hot_model(fleet: Fleet, model: str, *, clients: int = 12, waves: int = 2) -> Counter[str]:
    """`clients` concurrent clients on one model, `waves` times: how many of its requests each
    replica received. The replicas hold every request until all of a wave have arrived, so
    the proxy routes each while the others are in flight (the load its bound counts). Each
    request is sent once the one before has reached its replica: a proxy counts a request as
    load once it is on an upstream connection, not while that connection is being opened
    (Envoy's pending requests), so requests sent all at once could all be routed before any
    counted, more or less of them as the machine is busy."""
    path = f"/models/{model}/predict"
    received: Counter[str] = Counter()
    for _ in range(waves):
        before = arrived(fleet, path)
        gate = threading.Event()
        for name in GATEWAYS:
            fleet.replicas[name].gate = gate
        base = str(fleet.http.base_url)
        ids = [f"hot-{uuid.uuid4()}" for _ in range(clients)]
        with ThreadPoolExecutor(clients) as pool:
            sent = []
            try:
                for n in range(clients):
                    sent.append(pool.submit(post, base, path, ids[n]))
                    wait_until(
                        lambda before=before, n=n: (arrived(fleet, path) - before).total() > n,  # type: ignore[misc]
                        timeout=15,
                        what=f"request {n + 1} at a replica",
                    )
            finally:
                gate.set()
            assert [f.result().status_code for f in sent] == [200] * clients
        received.update(arrived(fleet, path) - before)
        assert_each_reached_one_replica(fleet, ids)
    for name in GATEWAYS:
        fleet.replicas[name].gate = None
    return +received


def assert_a_draining_replica_is_retried_on_another(fleet: Fleet, *, body: int = 50_000) -> None:
    """503 (what a starting or draining gateway answers) is retried once, elsewhere."""
    model = "drained-model"
    owner = fleet.owner(model)
    fleet.replicas[owner].status = 503
    answer = fleet.predict(model, content=b"x" * body, headers={"X-Request-Id": "abc-123"})
    assert answer.status_code == 200, answer.text
    retried = answer.json()
    assert retried["replica"] in set(GATEWAYS) - {owner}
    assert (retried["path"], retried["request_id"], retried["body"]) == (f"/models/{model}/predict", "abc-123", body)
    assert fleet.replicas[owner].seen[-1]["request_id"] == "abc-123", "tried its own replica first"


def assert_a_deadline_is_not_retried(fleet: Fleet) -> None:
    """504 (the gateway's predict deadline) reaches the caller: a retry would double a slow model's load."""
    model = "slow-model"
    owner = fleet.owner(model)
    fleet.replicas[owner].status = 504
    answer = fleet.predict(model, json={}, headers={"X-Request-Id": "deadline-1"})
    assert answer.status_code == 504 and answer.json()["replica"] == owner
    elsewhere = [s for name in GATEWAYS if name != owner for s in fleet.replicas[name].seen]
    assert not [s for s in elsewhere if s["request_id"] == "deadline-1"]


def assert_a_gone_replica_is_skipped(fleet: Fleet, *, body: int = 200_000) -> None:
    """A replica that died (refused connections) before any check noticed: the request goes to
    another one, however large its body (nothing of it was sent)."""
    model = "orphan-model"
    owner = fleet.owner(model)
    fleet.replicas[owner].stop()
    answer = fleet.predict(model, content=b"y" * body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["replica"] != owner and answer.json()["body"] == body
    fleet.reset()
    wait_until(lambda: fleet.owner(model) == owner, timeout=15, what=f"{owner} to be used again")


def assert_an_unready_replica_is_skipped(fleet: Fleet) -> None:
    """A replica whose health check fails (draining: /health/ready 503) gets no requests."""
    model = "unready-model"
    owner = fleet.owner(model)
    replica = fleet.replicas[owner]
    replica.ready = False
    wait_until(lambda: fleet.predict(model, json={}).json()["replica"] != owner, timeout=15, what="the check")
    if fleet.grpc is not None:  # checked on its own by the gRPC backend
        channel = fleet.grpc
        wait_until(lambda: grpc_infer(channel, model, header=model) != owner, timeout=15, what="the gRPC check")
    before = (len(replica.seen), len(replica.grpc_seen))
    assert owner not in {fleet.predict(model, json={}).json()["replica"] for _ in range(10)}
    if fleet.grpc is not None:
        assert owner not in {grpc_infer(fleet.grpc, model, header=model) for _ in range(5)}
    assert (len(replica.seen), len(replica.grpc_seen)) == before
    replica.ready = True
    wait_until(lambda: fleet.owner(model) == owner, timeout=15, what=f"{owner} to be ready again")


def assert_sync_work_goes_to_sync_and_request_ids_are_kept_or_made(fleet: Fleet, made: str) -> None:
    for path in ("/webhooks/mlflow", "/admin/sync"):
        assert fleet.http.post(path, json={}).json()["replica"] == "sync"
    assert fleet.http.get("/models", headers={"X-Request-Id": "kept-1"}).json()["request_id"] == "kept-1"
    request_id = fleet.http.get("/models").json()["request_id"]
    assert re.fullmatch(made, request_id), f"the proxy makes an X-Request-Id when there is none: {request_id!r}"
