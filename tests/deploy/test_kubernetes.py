"""deploy/k8s, checked without a cluster: rendered the way kustomize reads it (its
configMapGenerator included), each object against the Kubernetes API schemas
(kubernetes-validate, strict), then what the schemas cannot say: probes, roles, references,
the drain fitting in the grace period, each gateway's stable name, and the proxy tier's HAProxy
configuration staying deploy/haproxy/haproxy.cfg apart from its servers."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.files import (
    HAPROXY,
    K8S,
    UNLOAD_MARGIN_SECONDS,
    assert_known_settings,
    dev_module,
    haproxy_sections,
    load_yaml,
    option,
    role,
)
from tests.deploy.proxies import debian_binary
from tests.support.ci import missing

PROXY_CONFIG = K8S / "proxy" / "haproxy.cfg"
HEADLESS = "registry-gateway-pods"


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    """The base as kustomize reads it: every document of every file in `resources`, and the
    ConfigMaps of `configMapGenerator` (under their names, without kustomize's hash suffix)."""
    kustomization = load_yaml(K8S / "kustomization.yaml")
    docs: list[dict[str, Any]] = []
    for resource in kustomization["resources"]:
        path = K8S / resource
        assert path.is_file(), f"kustomization.yaml lists {resource}, which is not a file here"
        docs.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    for generator in kustomization.get("configMapGenerator", []):
        data = {(K8S / f).name: (K8S / f).read_text() for f in generator["files"]}
        docs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": generator["name"]}, "data": data})
    return docs


def _one(manifests: list[dict[str, Any]], kind: str, component: str) -> dict[str, Any]:
    (found,) = [
        m
        for m in manifests
        if m["kind"] == kind and m["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component
    ]
    return found


def _workload(manifests: list[dict[str, Any]], component: str) -> dict[str, Any]:
    """The Deployment or StatefulSet of a component."""
    (found,) = [
        m
        for m in manifests
        if m["kind"] in ("Deployment", "StatefulSet")
        and m["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component
    ]
    return found


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    (container,) = containers
    return container


def _one_by_name(manifests: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name]
    return found


def test_kustomization_lists_every_manifest() -> None:
    kustomization = load_yaml(K8S / "kustomization.yaml")
    listed = set(kustomization["resources"])
    present = {p.relative_to(K8S).as_posix() for p in K8S.rglob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present
    generated = {f for g in kustomization.get("configMapGenerator", []) for f in g["files"]}
    assert generated == {p.relative_to(K8S).as_posix() for p in K8S.rglob("*") if p.is_file()} - present - {
        "kustomization.yaml"
    }


@pytest.mark.parametrize("version", ["1.30", "latest"])
def test_manifests_match_the_kubernetes_schemas(manifests: list[dict[str, Any]], version: str) -> None:
    kv = dev_module("kubernetes_validate")
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
    kubectl = shutil.which("kubectl") or missing(
        "kubectl is not installed (apt-get install kubernetes-client; its built-in kustomize renders deploy/k8s)"
    )
    rendered = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60, check=False)
    assert rendered.returncode == 0, rendered.stderr
    objects = [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]
    generated = {g["name"] for g in load_yaml(K8S / "kustomization.yaml").get("configMapGenerator", [])}

    def name(doc: dict[str, Any]) -> str:  # a generated ConfigMap's name ends in a hash of its content
        base = re.sub(r"-[a-z0-9]{10}$", "", doc["metadata"]["name"])
        return base if doc["kind"] == "ConfigMap" and base in generated else str(doc["metadata"]["name"])

    assert sorted((d["kind"], name(d)) for d in objects) == sorted(
        (d["kind"], d["metadata"]["name"]) for d in manifests
    )


def test_gateway_statefulset_probes_drain_and_security(manifests: list[dict[str, Any]]) -> None:
    gateway = _workload(manifests, "gateway")
    pod = gateway["spec"]["template"]["spec"]
    container = _container(gateway)
    assert gateway["spec"]["replicas"] >= 2
    assert role(container["args"]) == "gateway"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    # the gRPC port the gateway is told to serve is the one the pod exposes
    grpc_port = int(container["args"][container["args"].index("--grpc-port") + 1])
    assert {"name": "grpc", "containerPort": grpc_port} in container["ports"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["startupProbe"]["httpGet"]["path"] == "/health/live"

    # Drain: the gateway's own (no preStop sleep): the drain delay, then uvicorn's graceful
    # timeout, then unloading fit in the grace period.
    assert "lifecycle" not in container, "the gateway drains itself on SIGTERM (GATEWAY_DRAIN_SECONDS)"
    settings = _one_by_name(manifests, "ConfigMap", "registry-gateway-settings")["data"]
    drain = float(settings["GATEWAY_DRAIN_SECONDS"])
    assert drain >= 2 * 1, "longer than the proxy's two failed checks, 1 s apart (proxy/haproxy.cfg)"
    graceful = float(option(container["args"], "--graceful-timeout", "30") or 30)
    assert pod["terminationGracePeriodSeconds"] > drain + graceful + UNLOAD_MARGIN_SECONDS

    assert container["resources"]["requests"]["cpu"], "the HPA scales on CPU requests"
    assert container["resources"]["limits"]["memory"]


def test_each_gateway_pod_has_a_stable_name_and_a_dns_name(manifests: list[dict[str, Any]]) -> None:
    gateway = _workload(manifests, "gateway")
    assert gateway["kind"] == "StatefulSet", "pod names stable across restarts and rollouts"
    assert gateway["spec"]["serviceName"] == HEADLESS
    env = {var["name"]: var for var in _container(gateway)["env"]}
    assert env["GATEWAY_REPLICA_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}

    headless = _one_by_name(manifests, "Service", HEADLESS)
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True, "the proxy checks readiness itself"
    assert {p["port"] for p in headless["spec"]["ports"]} == {8000, 8001}


@pytest.mark.parametrize("component", ["gateway", "sync", "jobs"])
def test_pods_run_as_non_root_on_a_read_only_filesystem(manifests: list[dict[str, Any]], component: str) -> None:
    workload = _workload(manifests, component)
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


def test_sync_is_one_replica_and_migrations_run_db_upgrade(manifests: list[dict[str, Any]]) -> None:
    sync = _workload(manifests, "sync")
    assert sync["spec"]["replicas"] == 1
    assert role(_container(sync)["args"]) == "sync"
    job = _one(manifests, "Job", "migrations")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["db", "upgrade"]


def test_jobs_run_in_pods_of_their_own_that_no_service_reaches(manifests: list[dict[str, Any]]) -> None:
    jobs = _workload(manifests, "jobs")
    container = _container(jobs)
    assert role(container["args"]) == "jobs"
    names = {e["name"]: e for e in container.get("env", [])}
    assert names["GATEWAY_REPLICA_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    services = [m for m in manifests if m["kind"] == "Service"]
    assert services and not any(_selects(s["spec"].get("selector", {}), jobs) for s in services)
    for kind in ("PodDisruptionBudget", "HorizontalPodAutoscaler"):
        for m in manifests:
            if m["kind"] == kind and "selector" in m["spec"]:
                assert not _selects(m["spec"]["selector"]["matchLabels"], jobs)


def _selects(selector: dict[str, str], workload: dict[str, Any]) -> bool:
    labels = workload["spec"]["template"]["metadata"]["labels"]
    return all(labels.get(k) == v for k, v in selector.items())


def _services(manifests: list[dict[str, Any]], component: str) -> list[dict[str, Any]]:
    return [
        m
        for m in manifests
        if m["kind"] == "Service" and m["metadata"]["labels"].get("app.kubernetes.io/component") == component
    ]


def test_services_pdb_and_hpa_target_the_right_pods(manifests: list[dict[str, Any]]) -> None:
    gateway = _workload(manifests, "gateway")
    sync = _workload(manifests, "sync")
    proxy = _workload(manifests, "proxy")
    workloads = {"gateway": gateway, "sync": sync, "proxy": proxy}
    for component, workload in workloads.items():
        services = _services(manifests, component)
        assert services, component
        for service in services:
            assert _selects(service["spec"]["selector"], workload)
            others = [w for c, w in workloads.items() if c != component]
            assert not any(_selects(service["spec"]["selector"], other) for other in others)
            ports = {p["name"] for p in _container(workload)["ports"]}
            assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports
    # gRPC where clients call: the proxy's Service and the gateways' own
    for service in (
        _one_by_name(manifests, "Service", "registry-gateway-proxy"),
        _one_by_name(manifests, "Service", "registry-gateway"),
    ):
        assert {"grpc"} <= {p["name"] for p in service["spec"]["ports"]}

    pdb = _one(manifests, "PodDisruptionBudget", "gateway")
    assert _selects(pdb["spec"]["selector"]["matchLabels"], gateway)
    assert not _selects(pdb["spec"]["selector"]["matchLabels"], sync)

    hpa = _one(manifests, "HorizontalPodAutoscaler", "gateway")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == (gateway["kind"], gateway["metadata"]["name"])
    assert hpa["spec"]["minReplicas"] >= 2
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]


def _pod_specs(manifests: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for m in manifests:
        if m["kind"] in ("Deployment", "StatefulSet", "Job"):
            yield f"{m['kind']}/{m['metadata']['name']}", m["spec"]["template"]["spec"]


def test_config_and_secret_references_exist(manifests: list[dict[str, Any]]) -> None:
    objects = {(m["kind"], m["metadata"]["name"]) for m in manifests}
    images = {image["name"] for image in load_yaml(K8S / "kustomization.yaml")["images"]}
    settings_sources: set[tuple[str, str]] = set()
    for where, pod in _pod_specs(manifests):
        refs: list[tuple[str, str]] = []
        for container in pod["containers"] + pod.get("initContainers", []):
            assert container["image"] in images, f"{where}: images: in kustomization.yaml"
            for source in container.get("envFrom", []):
                refs += [("ConfigMap", source["configMapRef"]["name"])] if "configMapRef" in source else []
                refs += [("Secret", source["secretRef"]["name"])] if "secretRef" in source else []
            for var in container.get("env", []):
                ref = var.get("valueFrom", {})
                refs += [("ConfigMap", ref["configMapKeyRef"]["name"])] if "configMapKeyRef" in ref else []
                refs += [("Secret", ref["secretKeyRef"]["name"])] if "secretKeyRef" in ref else []
            settings_sources.update(refs)
        for volume in pod.get("volumes", []):
            refs += [("ConfigMap", volume["configMap"]["name"])] if "configMap" in volume else []
            refs += [("Secret", volume["secret"]["secretName"])] if "secret" in volume else []
        assert refs, f"{where} takes no settings"
        for ref in refs:
            assert ref in objects, f"{where} refers to {ref[0]} {ref[1]}, which is not in the base"

    # What the containers take as environment is settings (the proxy's configuration is a file).
    for m in manifests:
        if (m["kind"], m["metadata"]["name"]) in settings_sources:
            assert_known_settings({**m.get("data", {}), **m.get("stringData", {})}, m["metadata"]["name"])


# --- the proxy tier ------------------------------------------------------------------


def _without_servers(conf: str) -> dict[str, list[str]]:
    return {
        name: [line for line in lines if not line.startswith("server ")]
        for name, lines in haproxy_sections(conf).items()
    }


def test_proxy_routes_as_deploy_haproxy_does() -> None:
    """proxy/haproxy.cfg is deploy/haproxy/haproxy.cfg (comments aside) apart from its servers."""
    assert _without_servers(PROXY_CONFIG.read_text()) == _without_servers((HAPROXY / "haproxy.cfg").read_text())


def test_proxy_lists_every_gateway_pod_the_hpa_may_make(manifests: list[dict[str, Any]]) -> None:
    gateway = _workload(manifests, "gateway")
    most = _one(manifests, "HorizontalPodAutoscaler", "gateway")["spec"]["maxReplicas"]
    sections = haproxy_sections(PROXY_CONFIG.read_text())
    name = gateway["metadata"]["name"]
    for backend, port in (("registry_gateways", 8000), ("registry_gateways_grpc", 8001)):
        servers = [line.split() for line in sections[f"backend {backend}"] if line.startswith("server ")]
        expected = [f'"{name}-{i}.{HEADLESS}.${{NAMESPACE}}.svc.${{CLUSTER_DOMAIN}}:{port}"' for i in range(most)]
        assert [words[2] for words in servers] == expected, backend
        assert [words[words.index("id") + 1] for words in servers] == [str(i + 1) for i in range(most)], backend
    (sync,) = [line.split() for line in sections["backend registry_sync"] if line.startswith("server ")]
    sync_service = _one(manifests, "Service", "sync")
    (sync_port,) = sync_service["spec"]["ports"]
    assert sync[2] == f'"{sync_service["metadata"]["name"]}.${{NAMESPACE}}.svc.${{CLUSTER_DOMAIN}}:{sync_port["port"]}"'


def test_proxy_deployment_mounts_its_configuration_and_names_its_namespace(manifests: list[dict[str, Any]]) -> None:
    proxy = _workload(manifests, "proxy")
    pod = proxy["spec"]["template"]["spec"]
    container = _container(proxy)
    volumes = {v["name"]: v for v in pod["volumes"]}
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/usr/local/etc/haproxy"]
    generated = _one_by_name(manifests, "ConfigMap", volumes[mount["name"]]["configMap"]["name"])
    assert generated["data"] == {"haproxy.cfg": PROXY_CONFIG.read_text()}
    env = {var["name"]: var for var in container["env"]}
    assert env["NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["CLUSTER_DOMAIN"]["value"]
    assert env["GATEWAY_DEFAULT_MODEL"]["valueFrom"]["configMapKeyRef"]["name"] == "registry-gateway-settings"
    assert {(p["name"], p["containerPort"]) for p in container["ports"]} == {("http", 8080), ("grpc", 8081)}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_haproxy_accepts_the_proxy_configuration(tmp_path: Path) -> None:
    haproxy = debian_binary("haproxy", "haproxy")
    # Not looked up here (no cluster DNS: each name would wait for the resolver's timeout).
    conf = tmp_path / "haproxy.cfg"
    conf.write_text(PROXY_CONFIG.read_text().replace("init-addr libc,none", "init-addr none"))
    env = {"PATH": "/usr/sbin:/usr/bin:/bin", "NAMESPACE": "registry", "CLUSTER_DOMAIN": "cluster.local"}
    result = subprocess.run([haproxy, "-c", "-f", str(conf)], capture_output=True, text=True, timeout=30, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
