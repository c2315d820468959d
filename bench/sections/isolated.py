"""`--only isolated`: the same version in process and in an isolated worker:
bench/isolated_cost.py."""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import urllib.request
from pathlib import Path

import isolated_cost
from harness import WORK, Run, gateway, measure, post
from servers import Server


def _own_rss_mb(server: Server) -> float:
    """The gateway process's own RSS (not its workers')."""
    assert server.process is not None
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan


def _runtime(server: Server, version: int) -> dict[str, object]:
    with urllib.request.urlopen(f"{server.url}/models/iris/versions/{version}", timeout=30) as answer:
        return json.loads(answer.read())["runtime"]  # type: ignore[no-any-return]


def section(run: Run, tracking_uri: str, bodies: dict[str, Path]) -> None:
    """The same version in process and in an isolated worker: bench/isolated_cost.py."""

    from gateway.runtimes.environments import EnvironmentStore
    from gateway.runtimes.requirements import Requirements

    data: dict[str, object] = {"rows": [], "notes": []}
    run.sections["isolated"] = data
    envs = WORK / "isolated-envs"
    shutil.rmtree(envs, ignore_errors=True)
    os.environ.setdefault("UV_CACHE_DIR", str(WORK / "uv-cache"))
    sklearn = Requirements(None, ("scikit-learn", "skops"), "requirements.txt")
    EnvironmentStore(WORK / "isolated-prime").ensure(sklearn)  # fills uv's cache
    shutil.rmtree(WORK / "isolated-prime", ignore_errors=True)
    started = time.perf_counter()
    EnvironmentStore(WORK / "isolated-warm").ensure(sklearn)
    data["warm_build_seconds"] = round(time.perf_counter() - started, 2)
    shutil.rmtree(WORK / "isolated-warm", ignore_errors=True)
    run.log(f"isolated: environment from a warm uv cache in {data['warm_build_seconds']} s")
    body = bodies["iris"]
    env = {"GATEWAY_ENV_DIR": str(envs), "UV_CACHE_DIR": os.environ["UV_CACHE_DIR"], "GATEWAY_WARM_ALIASES": ""}
    here = gateway(tracking_uri, "isolated-baseline", cpus=run.server_cpus, env=env)
    isolate = {**env, "GATEWAY_ENV_ISOLATE": "always"}
    there = gateway(tracking_uri, "isolated", cpus=run.server_cpus, env={**isolate, "GATEWAY_SANDBOX": "off"})
    boxed = gateway(tracking_uri, "sandboxed", cpus=run.server_cpus, env={**isolate, "GATEWAY_SANDBOX": "best-effort"})
    with here, there, boxed:
        before = _own_rss_mb(there)
        for server in (here, there, boxed):
            post(server.url + server.predict_path, body.read_bytes())
        if _runtime(there, 1).get("runtime") != "isolated" or _runtime(here, 1).get("runtime") != "in_process":
            raise RuntimeError("the gateways do not serve iris v1 where the section means to")
        sandbox = _runtime(boxed, 1).get("sandbox")
        if not isinstance(sandbox, dict) or _runtime(there, 1).get("sandbox") is not None:
            raise RuntimeError("the sandboxed gateway's worker is not sandboxed, or the other's is")
        data["sandbox_missing"] = sandbox.get("missing")
        servers = (
            (isolated_cost.IN_PROCESS, here),
            (isolated_cost.ISOLATED, there),
            (isolated_cost.SANDBOXED, boxed),
        )
        for index in range(isolated_cost.ROUNDS):
            for connections in isolated_cost.CONNECTIONS:
                for label, server in servers:
                    result = measure(run, server, body, connections)
                    entry = {"server": label, "connections": connections, "round": index, **result.as_dict()}
                    data["rows"].append(entry)  # type: ignore[attr-defined]
                    run.log(
                        f"isolated round {index} {label} c={connections}: {result.req_s:.0f} req/s "
                        f"p50 {result.p50_ms:.2f} ms"
                    )
        first = _runtime(there, 1)
        post(there.url + "/models/iris/versions/2/predict", body.read_bytes())
        second = _runtime(there, 2)
        data["second_version"] = {
            "same_environment": first["environment"] == second["environment"],
            "same_worker": first["worker_pid"] == second["worker_pid"],
            "environments_after": len(EnvironmentStore(envs).environments()),
        }
        data["gateway_rss_mb"] = {"before": before, "after": _own_rss_mb(there)}
