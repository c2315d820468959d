"""deploy/compose.yaml, checked without a container engine: the Compose Specification schema
(vendored in deploy/schemas), then what the schema cannot say: start order, roles, each
replica's name and gRPC port, the drain fitting in the stop grace period, and what HAProxy and
nginx mount and list."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.settings import GatewaySettings
from tests.deploy.files import (
    DEPLOY,
    HAPROXY,
    NGINX,
    UNLOAD_MARGIN_SECONDS,
    assert_known_settings,
    dev_module,
    env_file,
    haproxy_servers,
    instructions,
    load_yaml,
    option,
    role,
    upstream_servers,
)

# Where compose.yaml mounts deploy/nginx and deploy/haproxy in their containers.
NGINX_MOUNT = "/etc/nginx/registry-gateway"
HAPROXY_MOUNT = "/usr/local/etc/haproxy"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(DEPLOY / "compose.yaml")
    return data


def _services_with_role(compose: dict[str, Any], wanted: str) -> list[str]:
    return [name for name, svc in compose["services"].items() if role(svc.get("command", [])) == wanted]


def test_compose_matches_the_compose_spec_schema(compose: dict[str, Any]) -> None:
    jsonschema = dev_module("jsonschema")
    schema = json.loads((DEPLOY / "schemas" / "compose-spec.json").read_text())
    # The schema declares draft 2019-09 (under an http:// URI that jsonschema does not map).
    validator = jsonschema.Draft201909Validator(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(compose)]
    assert not errors, "deploy/compose.yaml does not match the compose spec:\n" + "\n".join(errors)


def test_compose_images_are_pinned(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        image = svc["image"]
        tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
        assert tag and tag != "latest", f"service {name}: image {image} has no pinned tag"


def test_compose_depends_on_names_services_and_orders_the_start(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, svc in services.items():
        for dep, cond in svc.get("depends_on", {}).items():
            assert dep in services, f"{name} depends on {dep}, which is not a service"
            if services[dep].get("restart") == "no":  # one-shots must have finished
                assert cond["condition"] == "service_completed_successfully", f"{name} -> {dep}"

    # Every `serve` waits for `db upgrade`: on PostgreSQL it refuses an old schema.
    (migrations,) = [n for n, s in services.items() if s.get("command") == ["db", "upgrade"]]
    assert services[migrations]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name, svc in services.items():
        if role(svc.get("command", [])) is not None:
            assert svc["depends_on"][migrations]["condition"] == "service_completed_successfully", name

    assert services["mlflow"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name, svc in services.items():
        for dep, cond in svc.get("depends_on", {}).items():
            if cond["condition"] == "service_healthy":
                assert _has_healthcheck(services[dep]), f"{name} waits for {dep} to be healthy; it has no check"


def _has_healthcheck(service: dict[str, Any]) -> bool:
    """A healthcheck in compose.yaml, or a HEALTHCHECK in the Dockerfile it builds."""
    if "healthcheck" in service:
        return True
    build = service.get("build")
    if build is None:
        return False
    dockerfile = (DEPLOY / build["context"] / build.get("dockerfile", "Dockerfile")).resolve()
    return any(op == "HEALTHCHECK" for op, _ in instructions(dockerfile))


def test_compose_roles(compose: dict[str, Any]) -> None:
    services = compose["services"]
    gateways = _services_with_role(compose, "gateway")
    assert len(gateways) >= 2
    assert len(_services_with_role(compose, "sync")) == 1
    assert not _services_with_role(compose, "all"), "scaled out, no process should run both roles"

    image = services[gateways[0]]["image"]
    caches = set()
    for name, svc in services.items():
        if svc["image"] == image:  # every registry-gateway container shares one settings file
            assert svc["env_file"] == "gateway.env", name
        if role(svc.get("command", [])) in ("gateway", "sync"):
            (cache,) = [v.split(":")[0] for v in svc["volumes"] if v.endswith(":/var/cache/registry-gateway")]
            caches.add(cache)
    assert len(caches) == len(gateways) + 1, "each replica has its own artifact cache volume"


def test_compose_runs_jobs_in_a_process_of_their_own_off_the_proxies(compose: dict[str, Any]) -> None:
    services = compose["services"]
    (jobs,) = _services_with_role(compose, "jobs")
    service = services[jobs]
    assert "ports" not in service, "nothing calls it from outside"
    (cache,) = [v.split(":")[0] for v in service["volumes"] if v.endswith(":/var/cache/registry-gateway")]
    others = [v.split(":")[0] for name, svc in services.items() if name != jobs for v in svc.get("volumes", [])]
    assert cache not in others, "the jobs process has an artifact cache of its own"
    assert service["environment"]["GATEWAY_REPLICA_ID"] not in {
        svc.get("environment", {}).get("GATEWAY_REPLICA_ID") for name, svc in services.items() if name != jobs
    }
    listed = (HAPROXY / "haproxy.cfg").read_text() + (NGINX / "upstream.conf").read_text()
    assert f"{jobs}:" not in listed, "the balancers never send it requests"


def test_compose_gateways_have_names_a_grpc_port_and_a_drain_that_fits(compose: dict[str, Any]) -> None:
    services = compose["services"]
    gateways = _services_with_role(compose, "gateway")
    assert len(gateways) >= 3, "a fleet: a hot model spills over to a second and a third replica"
    env = env_file(DEPLOY / "gateway.env")
    drain = float(env.get("GATEWAY_DRAIN_SECONDS", GatewaySettings.model_fields["drain_seconds"].default))
    for name in gateways:
        service = services[name]
        # Stable across restarts (the container's hostname is not): its history is kept under it.
        assert service["environment"]["GATEWAY_REPLICA_ID"] == name
        assert option(service["command"], "--grpc-port") == "8001", f"{name} serves gRPC where HAProxy sends it"
        graceful = float(option(service["command"], "--graceful-timeout", "30") or 30)
        grace = float(service["stop_grace_period"].removesuffix("s"))
        assert grace > drain + graceful + UNLOAD_MARGIN_SECONDS, f"{name}: SIGKILL before the drain is done"
        # /invocations' model: the same for every gateway and for HAProxy, which routes it.
        assert service["environment"]["GATEWAY_DEFAULT_MODEL"] == "${GATEWAY_DEFAULT_MODEL:-}"
    assert services["haproxy"]["environment"]["GATEWAY_DEFAULT_MODEL"] == "${GATEWAY_DEFAULT_MODEL:-}"
    assert "GATEWAY_DEFAULT_MODEL" not in env, "compose's environment would hide it from the gateways"


def test_gateway_env_names_real_settings() -> None:
    env = env_file(DEPLOY / "gateway.env")
    assert_known_settings(env, "deploy/gateway.env")
    assert env["GATEWAY_DATABASE_URL"].startswith("postgresql+psycopg://")


def test_compose_nginx_mounts_the_nginx_files_and_lists_every_replica(compose: dict[str, Any]) -> None:
    nginx = compose["services"]["nginx"]
    assert f"./nginx:{NGINX_MOUNT}:ro" in nginx["volumes"]
    assert nginx["command"][:3] == ["nginx", "-c", f"{NGINX_MOUNT}/nginx.conf"]
    top = (NGINX / "nginx.conf").read_text()
    assert f"include {NGINX_MOUNT}/upstream.conf;" in top
    assert f"include {NGINX_MOUNT}/registry-gateway.conf;" in top

    upstreams = upstream_servers((NGINX / "upstream.conf").read_text())
    gateways = _services_with_role(compose, "gateway")
    assert sorted(upstreams["registry_gateways"]) == sorted(f"{name}:8000" for name in gateways)
    assert upstreams["registry_sync"] == [f"{name}:8000" for name in _services_with_role(compose, "sync")]
    # nginx resolves upstream names when it starts: every one must exist by then.
    assert set(nginx["depends_on"]) >= {*gateways, *_services_with_role(compose, "sync")}


def test_compose_nginx_is_the_alternative_on_other_ports(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["nginx"]["profiles"] == ["nginx"], "HAProxy is the default; nginx is asked for"
    assert f"include {NGINX_MOUNT}/grpc.conf;" in (NGINX / "nginx.conf").read_text()
    upstreams = upstream_servers((NGINX / "upstream.conf").read_text())
    gateways = _services_with_role(compose, "gateway")
    assert sorted(upstreams["registry_gateways_grpc"]) == sorted(f"{name}:8001" for name in gateways)
    host_ports = [p.split(":")[0] for svc in services.values() for p in svc.get("ports", [])]
    assert len(host_ports) == len(set(host_ports)), f"two services publish one host port: {host_ports}"


def test_compose_haproxy_mounts_the_haproxy_files_and_lists_every_replica(compose: dict[str, Any]) -> None:
    haproxy = compose["services"]["haproxy"]
    assert f"./haproxy:{HAPROXY_MOUNT}:ro" in haproxy["volumes"]
    assert "command" not in haproxy, f"the image's own command reads {HAPROXY_MOUNT}/haproxy.cfg"
    assert haproxy["ports"] == ["8000:8080", "8001:8081"]
    servers = haproxy_servers((HAPROXY / "haproxy.cfg").read_text())
    gateways = _services_with_role(compose, "gateway")
    for backend, port in (("registry_gateways", "8000"), ("registry_gateways_grpc", "8001")):
        listed = {words[1]: words[2] for words in servers[f"backend {backend}"]}
        assert listed == {name: f"{name}:{port}" for name in gateways}, backend
    (sync,) = _services_with_role(compose, "sync")
    assert [words[2] for words in servers["backend registry_sync"]] == [f"{sync}:8000"]
    assert set(haproxy["depends_on"]) >= {*gateways, sync}


def test_haproxy_names_each_replica_alike_on_http_and_grpc() -> None:
    """The ring is built from the servers' ids: equal ids put a model on one replica for both."""
    servers = haproxy_servers((HAPROXY / "haproxy.cfg").read_text())

    def ids(backend: str) -> dict[str, str]:
        return {words[1]: words[words.index("id") + 1] for words in servers[f"backend {backend}"]}

    assert ids("registry_gateways") == ids("registry_gateways_grpc")
    assert len(set(ids("registry_gateways").values())) == len(ids("registry_gateways"))
