"""`--only traffic`: the default route at 32 connections with no split, a 90/10 split and a 25%
shadow: bench/traffic_split.py."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import traffic_split
from harness import ADMIN_TOKEN, HERE, WORK, Run, gateway, post, row
from load import drive
from servers import Server


def _traffic_detail(gw: Server) -> dict[str, object]:
    with urllib.request.urlopen(f"{gw.url}/models/{traffic_split.MODEL}/traffic", timeout=10) as answer:
        return json.loads(answer.read())  # type: ignore[no-any-return]


def _set_traffic(
    gw: Server,
    client: object,
    arms: list[int],
    *,
    version: int,
    weight: float = 0,
    shadow: float = 0,
    timeout: float = 90,
) -> float:
    """Tag ``version`` (a 0 removes the tag) and untag the other ``arms``, sync, and wait until
    /traffic shows it as served; returns the seconds that took."""
    started = time.perf_counter()
    name = traffic_split.MODEL
    for arm in arms:
        for tag, value in ((traffic_split.WEIGHT_TAG, weight), (traffic_split.SHADOW_TAG, shadow)):
            if value and arm == version:
                client.set_model_version_tag(name, str(arm), tag, f"{value:g}")  # type: ignore[attr-defined]
            else:
                _untag(client, name, arm, tag)
    sync = (f"{gw.url}/admin/sync?model={name}", b"", {"Authorization": f"Bearer {ADMIN_TOKEN}"})
    while time.perf_counter() - started < timeout:
        post(*sync)
        if traffic_split.served(_traffic_detail(gw), weight=weight, shadow=shadow, version=version):
            return time.perf_counter() - started
        time.sleep(0.5)
    raise RuntimeError(f"/traffic did not show weight={weight:g} shadow={shadow:g} as served within {timeout:.0f} s")


def _untag(client: object, name: str, version: int, tag: str) -> None:
    try:
        client.delete_model_version_tag(name, str(version), tag)  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001, S110 - not set: nothing to remove
        pass


def shadow_probe_versions(tracking_uri: str) -> dict[str, int]:
    """The iris versions tagged ``bench.shadow_probe`` (slow, failing: bench/shadow_probes.py),
    logged into the bench registry the first time they are wanted."""
    import mlflow.pyfunc
    import shadow_probes

    from gateway.demo import iris_frame, using_registry

    name, tag = traffic_split.MODEL, traffic_split.PROBE_TAG
    with using_registry(tracking_uri, WORK / "registry" / "artifacts") as client:
        found = {
            str(v.tags[tag]): int(v.version) for v in client.search_model_versions(f"name='{name}'") if tag in v.tags
        }
        models = {
            traffic_split.SLOW: shadow_probes.SlowVersion(),
            traffic_split.FAILING: shadow_probes.FailingVersion(),
        }
        for probe, model in models.items():
            if probe in found:
                continue
            features, _ = iris_frame()
            with mlflow.start_run(run_name=f"shadow-probe-{probe}"):
                info = mlflow.pyfunc.log_model(
                    name="model",
                    python_model=model,
                    registered_model_name=name,
                    input_example=features.head(2),  # the warm-up: passes, where the bench's row fails
                    code_paths=[str(HERE / "shadow_probes.py")],  # the gateway imports the classes from it
                    pip_requirements=["mlflow"],
                )
            found[probe] = int(info.registered_model_version)  # type: ignore[arg-type]
            client.set_model_version_tag(name, str(found[probe]), tag, probe)
    return found


def section(run: Run, tracking_uri: str, bodies: dict[str, Path]) -> None:
    """The default route at 32 connections with no split, a 90/10 split and a 25% shadow:
    bench/traffic_split.py."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    data: dict[str, object] = {"rows": [], "notes": []}
    run.sections["traffic"] = data
    env = {
        "GATEWAY_POLL_INTERVAL_SECONDS": "5",  # /admin/sync applies a tag at once; the poll is a fallback
        # The point measures the split, not the guard: under 32 connections the guard has rolled a
        # canary identical to the default back on p99 (9.4 ms against 4.5 ms), leaving no split.
        "GATEWAY_CANARY_MAX_LATENCY_RATIO": "1000",
        "GATEWAY_CANARY_MAX_ERROR_RATE": "1",
    }
    connections = traffic_split.CONNECTIONS
    seconds = min(run.duration, traffic_split.POINT_SECONDS)
    warmup = min(run.warmup, traffic_split.WARMUP_SECONDS)
    probes = shadow_probe_versions(tracking_uri)
    arms = [traffic_split.ARM_VERSION, *probes.values()]
    with gateway(tracking_uri, "traffic", cpus=run.server_cpus, env=env) as gw:
        run.log(f"gateway ready in {gw.ready_seconds:.1f} s")
        url = f"{gw.url}/models/{traffic_split.MODEL}/predict"
        try:
            for label, weight, shadow, probe in traffic_split.plan():
                version = probes[probe] if probe else traffic_split.ARM_VERSION
                took = _set_traffic(gw, client, arms, version=version, weight=weight, shadow=shadow)
                post(url, bodies["iris"].read_bytes())
                keys = traffic_split.KEY_HEADER if traffic_split.keyed_point(label) else None
                load = {"connections": connections, "cpus": run.load_cpus, "key_header": keys}
                if warmup:
                    drive(url, bodies["iris"], duration=warmup, **load)
                before, cpu = _traffic_detail(gw), gw.cpu_seconds()
                result = drive(url, bodies["iris"], duration=seconds, **load)
                cpu, after = gw.cpu_seconds() - cpu, _traffic_detail(gw)
                counts = [traffic_split.arm_requests(d) for d in (before, after)]
                delta = {arm: n - counts[0].get(arm, 0) for arm, n in counts[1].items()}
                shadows = [traffic_split.shadow_counts(d, version) for d in (before, after)]
                ran, failed, dropped = (shadows[1][k] - shadows[0][k] for k in ("requests", "errors", "dropped"))
                total = sum(n for arm, n in delta.items() if not arm.startswith("shadow"))
                canary = sum(n for arm, n in delta.items() if arm.startswith("canary"))
                entry = {"point": label, **row("gateway", connections, result, gw.peak_rss_mb())}
                entry |= {
                    "cpu_us_per_request": cpu / result.requests * 1e6 if result.requests else None,
                    "still_served": traffic_split.served(after, weight=weight, shadow=shadow, version=version),
                    "applied_s": took,
                    "arm_requests": delta,
                    "canary_share": canary / total if weight and total else None,
                    "shadows_run": ran if shadow else None,
                    "shadow_errors": failed if shadow else None,
                    "shadows_dropped": dropped if shadow else None,
                }
                data["rows"].append(entry)  # type: ignore[attr-defined]
                run.log(
                    f"traffic {label}: {result.req_s:.0f} req/s p50 {result.p50_ms:.2f} ms (applied in {took:.1f} s)"
                )
        finally:
            for arm in arms:
                for tag in (traffic_split.WEIGHT_TAG, traffic_split.SHADOW_TAG):
                    _untag(client, traffic_split.MODEL, arm, tag)
