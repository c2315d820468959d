"""The deploy/ files, checked without a container engine or a cluster.

- compose.yaml against the Compose Specification schema (vendored in deploy/schemas),
  plus what the schema cannot say: start order, roles, what nginx mounts.
- deploy/k8s rendered the way kustomize reads it, each object against the Kubernetes
  API schemas (kubernetes-validate, strict), plus probes, roles and references.
- deploy/nginx with `nginx -t`, then live on loopback in front of stub replicas: model
  affinity, retry on 503, X-Request-Id, sync-bound routes.
- the Dockerfiles' shape: pinned bases, a numeric non-root user, a health check.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import yaml

from gateway.settings import GatewaySettings
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
NGINX = DEPLOY / "nginx"
# Where compose.yaml mounts deploy/nginx inside the nginx container.
NGINX_MOUNT = "/etc/nginx/registry-gateway"
# Variables the containers may get besides GATEWAY_* settings.
FOREIGN_ENV = re.compile(r"^(MLFLOW_\w+|AWS_\w+|HOME)$")


def _dev_module(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError:
        pytest.fail(f"{name} is not installed: it is in the dev extra (pip install -e '.[dev]')")


def _load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _role(command: list[str]) -> str | None:
    """The --role of a `serve` command line, None for anything else."""
    if not command or command[0] != "serve":
        return None
    return command[command.index("--role") + 1] if "--role" in command else "all"


# --- compose -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = _load_yaml(DEPLOY / "compose.yaml")
    return data


def _services_with_role(compose: dict[str, Any], role: str) -> list[str]:
    return [name for name, svc in compose["services"].items() if _role(svc.get("command", [])) == role]


def test_compose_matches_the_compose_spec_schema(compose: dict[str, Any]) -> None:
    jsonschema = _dev_module("jsonschema")
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
        if _role(svc.get("command", [])) is not None:
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
    return any(op == "HEALTHCHECK" for op, _ in _instructions(dockerfile))


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
        if _role(svc.get("command", [])) in ("gateway", "sync"):
            (cache,) = [v.split(":")[0] for v in svc["volumes"] if v.endswith(":/var/cache/registry-gateway")]
            caches.add(cache)
    assert len(caches) == len(gateways) + 1, "each replica has its own artifact cache volume"


def _env_file(path: Path) -> dict[str, str]:
    lines = [line.strip() for line in path.read_text().splitlines()]
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def _assert_known_settings(names: Iterable[str], where: str) -> None:
    fields = {f"GATEWAY_{name.upper()}" for name in GatewaySettings.model_fields}
    for key in names:
        assert key in fields or FOREIGN_ENV.match(key), f"{where}: {key} is not a setting"


def test_gateway_env_names_real_settings() -> None:
    env = _env_file(DEPLOY / "gateway.env")
    _assert_known_settings(env, "deploy/gateway.env")
    assert env["GATEWAY_DATABASE_URL"].startswith("postgresql+psycopg://")


def test_compose_nginx_mounts_the_nginx_files_and_lists_every_replica(compose: dict[str, Any]) -> None:
    nginx = compose["services"]["nginx"]
    assert f"./nginx:{NGINX_MOUNT}:ro" in nginx["volumes"]
    assert nginx["command"][:3] == ["nginx", "-c", f"{NGINX_MOUNT}/nginx.conf"]
    top = (NGINX / "nginx.conf").read_text()
    assert f"include {NGINX_MOUNT}/upstream.conf;" in top
    assert f"include {NGINX_MOUNT}/registry-gateway.conf;" in top

    upstreams = _upstream_servers((NGINX / "upstream.conf").read_text())
    gateways = _services_with_role(compose, "gateway")
    assert sorted(upstreams["registry_gateways"]) == sorted(f"{name}:8000" for name in gateways)
    assert upstreams["registry_sync"] == [f"{name}:8000" for name in _services_with_role(compose, "sync")]
    # nginx resolves upstream names when it starts: every one must exist by then.
    assert set(nginx["depends_on"]) >= {*gateways, *_services_with_role(compose, "sync")}


def _upstream_servers(conf: str) -> dict[str, list[str]]:
    blocks = re.findall(r"upstream\s+(\w+)\s*\{(.*?)\}", conf, flags=re.S)
    return {name: re.findall(r"^\s*server\s+(\S+?)[\s;]", body, flags=re.M) for name, body in blocks}


# --- Kubernetes ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    """The base as kustomize reads it: every document of every file in `resources`."""
    kustomization = _load_yaml(K8S / "kustomization.yaml")
    docs: list[dict[str, Any]] = []
    for resource in kustomization["resources"]:
        path = K8S / resource
        assert path.is_file(), f"kustomization.yaml lists {resource}, which is not a file here"
        docs.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return docs


def _one(manifests: list[dict[str, Any]], kind: str, component: str) -> dict[str, Any]:
    (found,) = [
        m
        for m in manifests
        if m["kind"] == kind and m["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component
    ]
    return found


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    (container,) = containers
    return container


def test_kustomization_lists_every_manifest() -> None:
    listed = set(_load_yaml(K8S / "kustomization.yaml")["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


@pytest.mark.parametrize("version", ["1.30", "latest"])
def test_manifests_match_the_kubernetes_schemas(manifests: list[dict[str, Any]], version: str) -> None:
    kv = _dev_module("kubernetes_validate")
    if version == "latest":
        version = kv.latest_version()
    errors = []
    for doc in manifests:
        try:
            kv.validate(doc, version, strict=True)
        except kv.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {path}: {exc.message}")
        except kv.SchemaNotFoundError as exc:  # an unknown kind or apiVersion is an error too
            errors.append(exc.message)
    assert not errors, f"not valid for Kubernetes {version}:\n" + "\n".join(errors)


def test_kubectl_kustomize_renders_the_same_objects(manifests: list[dict[str, Any]]) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (its built-in kustomize renders deploy/k8s)")
    rendered = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60, check=False)
    assert rendered.returncode == 0, rendered.stderr
    objects = [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]
    assert sorted((d["kind"], d["metadata"]["name"]) for d in objects) == sorted(
        (d["kind"], d["metadata"]["name"]) for d in manifests
    )


def test_gateway_deployment_probes_drain_and_security(manifests: list[dict[str, Any]]) -> None:
    gateway = _one(manifests, "Deployment", "gateway")
    pod = gateway["spec"]["template"]["spec"]
    container = _container(gateway)
    assert gateway["spec"]["replicas"] >= 2
    assert _role(container["args"]) == "gateway"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    # the gRPC port the gateway is told to serve is the one the pod exposes
    grpc_port = int(container["args"][container["args"].index("--grpc-port") + 1])
    assert {"name": "grpc", "containerPort": grpc_port} in container["ports"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["startupProbe"]["httpGet"]["path"] == "/health/live"

    # Drain: the preStop sleep, then uvicorn's graceful timeout, fit in the grace period.
    sleep = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    args = container["args"]
    graceful = int(args[args.index("--graceful-timeout") + 1]) if "--graceful-timeout" in args else 30
    assert pod["terminationGracePeriodSeconds"] > sleep + graceful

    assert container["resources"]["requests"]["cpu"], "the HPA scales on CPU requests"
    assert container["resources"]["limits"]["memory"]


@pytest.mark.parametrize("component", ["gateway", "sync"])
def test_pods_run_as_non_root_on_a_read_only_filesystem(manifests: list[dict[str, Any]], component: str) -> None:
    workload = _one(manifests, "Deployment", component)
    pod = workload["spec"]["template"]["spec"]
    container = _container(workload)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the USER of deploy/Dockerfile
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False

    # What the process writes goes to emptyDirs: the artifact cache and /tmp (and ~, via HOME).
    settings = _one_by_name(manifests, "ConfigMap", "registry-gateway-settings")["data"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
    assert "emptyDir" in mounts[settings["GATEWAY_ARTIFACT_CACHE_DIR"]]
    assert "emptyDir" in mounts["/tmp"]
    assert {"name": "HOME", "value": "/tmp"} in container["env"]


def _one_by_name(manifests: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name]
    return found


def test_sync_is_one_replica_and_migrations_run_db_upgrade(manifests: list[dict[str, Any]]) -> None:
    sync = _one(manifests, "Deployment", "sync")
    assert sync["spec"]["replicas"] == 1
    assert _role(_container(sync)["args"]) == "sync"
    job = _one(manifests, "Job", "migrations")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["db", "upgrade"]


def _selects(selector: dict[str, str], workload: dict[str, Any]) -> bool:
    labels = workload["spec"]["template"]["metadata"]["labels"]
    return all(labels.get(k) == v for k, v in selector.items())


def test_services_pdb_and_hpa_target_the_right_pods(manifests: list[dict[str, Any]]) -> None:
    gateway = _one(manifests, "Deployment", "gateway")
    sync = _one(manifests, "Deployment", "sync")
    for component, workload, other in (("gateway", gateway, sync), ("sync", sync, gateway)):
        service = _one(manifests, "Service", component)
        assert _selects(service["spec"]["selector"], workload) and not _selects(service["spec"]["selector"], other)
        ports = {p["name"] for p in _container(workload)["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports

    pdb = _one(manifests, "PodDisruptionBudget", "gateway")
    assert _selects(pdb["spec"]["selector"]["matchLabels"], gateway)
    assert not _selects(pdb["spec"]["selector"]["matchLabels"], sync)

    hpa = _one(manifests, "HorizontalPodAutoscaler", "gateway")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", gateway["metadata"]["name"])
    assert hpa["spec"]["minReplicas"] >= 2
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]


def _pod_specs(manifests: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for m in manifests:
        if m["kind"] in ("Deployment", "Job"):
            yield f"{m['kind']}/{m['metadata']['name']}", m["spec"]["template"]["spec"]


def test_config_and_secret_references_exist(manifests: list[dict[str, Any]]) -> None:
    objects = {(m["kind"], m["metadata"]["name"]) for m in manifests}
    for where, pod in _pod_specs(manifests):
        refs: list[tuple[str, str]] = []
        for container in pod["containers"] + pod.get("initContainers", []):
            assert container["image"].split(":")[0] == "registry-gateway", f"{where}: images: in kustomization.yaml"
            for source in container.get("envFrom", []):
                refs += [("ConfigMap", source["configMapRef"]["name"])] if "configMapRef" in source else []
                refs += [("Secret", source["secretRef"]["name"])] if "secretRef" in source else []
            for var in container.get("env", []):
                ref = var.get("valueFrom", {})
                refs += [("ConfigMap", ref["configMapKeyRef"]["name"])] if "configMapKeyRef" in ref else []
                refs += [("Secret", ref["secretKeyRef"]["name"])] if "secretKeyRef" in ref else []
        for volume in pod.get("volumes", []):
            refs += [("ConfigMap", volume["configMap"]["name"])] if "configMap" in volume else []
            refs += [("Secret", volume["secret"]["secretName"])] if "secret" in volume else []
        assert refs, f"{where} takes no settings"
        for ref in refs:
            assert ref in objects, f"{where} refers to {ref[0]} {ref[1]}, which is not in the base"

    for m in manifests:
        if m["kind"] in ("ConfigMap", "Secret"):
            _assert_known_settings({**m.get("data", {}), **m.get("stringData", {})}, m["metadata"]["name"])


# --- nginx ---------------------------------------------------------------------------


def _nginx_binary() -> str:
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)
    if found is None:
        pytest.skip("nginx is not installed (apt-get install nginx)")
    return found


def _loopback_config(directory: Path, *, listen_port: int, servers: dict[str, int]) -> Path:
    """deploy/nginx with every upstream server moved to 127.0.0.1 and all paths in `directory`.

    `servers` maps each server name of upstream.conf (gateway-1, sync, ...) to a port."""
    upstream = (NGINX / "upstream.conf").read_text()
    names = [s.split(":")[0] for block in _upstream_servers(upstream).values() for s in block]
    assert sorted(names) == sorted(servers), "upstream.conf and the test disagree on the servers"
    for name, port in servers.items():
        upstream = re.sub(rf"\bserver\s+{re.escape(name)}:\d+", f"server 127.0.0.1:{port}", upstream)
    routing, listens = re.subn(
        r"^(\s*)listen\s+8080;",
        rf"\1listen 127.0.0.1:{listen_port};",
        (NGINX / "registry-gateway.conf").read_text(),
        flags=re.M,
    )
    assert listens == 1
    (directory / "upstream.conf").write_text(upstream)
    (directory / "registry-gateway.conf").write_text(routing)
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
        "}\n"
    )
    return conf


def _nginx_command(nginx: str, conf: Path) -> list[str]:
    return [nginx, "-p", str(conf.parent), "-e", str(conf.parent / "error.log"), "-c", str(conf)]


def test_nginx_config_is_valid(tmp_path: Path) -> None:
    nginx = _nginx_binary()
    conf = _loopback_config(
        tmp_path, listen_port=18080, servers={"gateway-1": 18001, "gateway-2": 18002, "sync": 18003}
    )
    result = subprocess.run([*_nginx_command(nginx, conf), "-t"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


@dataclass
class StubReplica:
    """An HTTP server that answers every request with its name and what it received."""

    name: str
    status: int = 200
    seen: list[dict[str, Any]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    def start(self) -> int:
        replica = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as nginx's upstream keepalive expects
            disable_nagle_algorithm = True  # headers and body go out as two writes

            def _answer(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                request = {"path": self.path, "request_id": self.headers.get("X-Request-Id"), "body": len(body)}
                replica.seen.append(request)
                payload = json.dumps({"replica": replica.name, **request}).encode()
                self.send_response(replica.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self.server.server_address[1]

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def balancer(tmp_path: Path) -> Iterator[tuple[httpx.Client, dict[str, StubReplica]]]:
    """deploy/nginx running on loopback in front of two stub gateways and a stub sync."""
    nginx = _nginx_binary()
    replicas = {name: StubReplica(name) for name in ("gateway-1", "gateway-2", "sync")}
    ports = {name: replica.start() for name, replica in replicas.items()}
    listen = _free_port()
    conf = _loopback_config(tmp_path, listen_port=listen, servers=ports)
    process = subprocess.Popen(
        [*_nginx_command(nginx, conf), "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    client = httpx.Client(base_url=f"http://127.0.0.1:{listen}", timeout=10)
    try:

        def answering() -> bool:  # nginx has no readiness signal but its port
            assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
            try:
                return client.get("/nginx-health").status_code == 200
            except httpx.TransportError:
                return False

        wait_until(answering, timeout=10, what="nginx to start")
        yield client, replicas
    finally:
        client.close()
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        for replica in replicas.values():
            replica.stop()


def test_nginx_sends_each_model_to_one_replica(balancer: tuple[httpx.Client, dict[str, StubReplica]]) -> None:
    client, _ = balancer
    placement: dict[str, str] = {}
    for i in range(40):
        model = f"model-{i}"
        paths = [f"/models/{model}/predict", f"/models/{model}/versions/2/predict", f"/models/{model}/predict"]
        served = {client.post(path, json={"inputs": [[i]]}).json()["replica"] for path in paths}
        served.add(client.get(f"/models/{model}").json()["replica"])
        assert len(served) == 1, f"{model} was served by {served}"
        placement[model] = served.pop()
    assert set(placement.values()) == {"gateway-1", "gateway-2"}, "both replicas get models"

    # Requests without a model spread over the replicas (and never reach sync).
    assert {client.get("/health/ready").json()["replica"] for _ in range(60)} == {"gateway-1", "gateway-2"}


def test_nginx_retries_a_draining_replica_on_the_next(balancer: tuple[httpx.Client, dict[str, StubReplica]]) -> None:
    client, replicas = balancer
    owners = {f"model-{i}": client.get(f"/models/model-{i}").json()["replica"] for i in range(20)}
    model = next(m for m, owner in owners.items() if owner == "gateway-1")
    replicas["gateway-1"].status = 503  # what a starting or draining replica answers

    answer = client.post(f"/models/{model}/predict", content=b"x" * 50_000, headers={"X-Request-Id": "abc-123"})
    assert answer.status_code == 200
    assert answer.json() == {
        "replica": "gateway-2",
        "path": f"/models/{model}/predict",
        "request_id": "abc-123",
        "body": 50_000,
    }
    assert replicas["gateway-1"].seen[-1]["request_id"] == "abc-123", "tried its own replica first"


def test_nginx_sends_sync_work_to_sync_and_makes_request_ids(
    balancer: tuple[httpx.Client, dict[str, StubReplica]],
) -> None:
    client, _ = balancer
    for path in ("/webhooks/mlflow", "/admin/sync"):
        assert client.post(path, json={}).json()["replica"] == "sync"
    request_id = client.get("/models").json()["request_id"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id), "nginx makes an X-Request-Id when there is none"


# --- Dockerfiles ---------------------------------------------------------------------


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (parts[0].upper(), parts[1] if len(parts) > 1 else "")
        for parts in (line.split(None, 1) for line in lines if line and not line.startswith("#"))
    ]


@pytest.mark.parametrize("name", ["Dockerfile", "mlflow.Dockerfile"])
def test_dockerfiles_pin_their_bases_and_run_as_a_numeric_non_root_user(name: str) -> None:
    instructions = _instructions(DEPLOY / name)
    args = dict(a.split("=", 1) for op, a in instructions if op == "ARG" and "=" in a)
    stages: set[str] = set()
    final_stage: list[tuple[str, str]] = []
    for op, arguments in instructions:
        if op == "FROM":
            image, *alias = arguments.split()
            image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
            if image not in stages:
                tag = image.rsplit(":", 1)[1] if ":" in image else ""
                assert tag and tag != "latest", f"{name}: FROM {image} is not pinned"
            stages.update(alias[1:] if alias and alias[0].upper() == "AS" else [])
            final_stage = []
        final_stage.append((op, arguments))

    (user,) = [a for op, a in final_stage if op == "USER"]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"{name}: USER {user} must be a numeric non-root UID"
    (healthcheck,) = [a for op, a in final_stage if op == "HEALTHCHECK"]
    assert "urllib.request" in healthcheck, "slim images have no curl"


def test_gateway_dockerfile_serves_on_8000_with_a_liveness_check() -> None:
    instructions = dict(_instructions(DEPLOY / "Dockerfile"))
    assert "/health/live" in instructions["HEALTHCHECK"]
    assert instructions["EXPOSE"] == "8000"
    assert json.loads(instructions["ENTRYPOINT"]) == ["registry-gateway"]
    assert json.loads(instructions["CMD"])[:3] == ["serve", "--host", "0.0.0.0"]
    assert any("[postgres]" in a for op, a in _instructions(DEPLOY / "Dockerfile") if op == "RUN")

    # The build context is the repository root: keep the virtualenv and the demo out.
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in ignore or {".venv", "demo"} <= set(ignore)
