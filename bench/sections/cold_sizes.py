"""`--only cold-sizes`: LRU misses by model size on the memory section's registry: bench/spread.py."""

from __future__ import annotations

import time
import urllib.request

import memory_churn
import spread
from harness import QUIET_POLL, WORK, Run, gateway, post


def section(run: Run) -> None:
    """LRU misses by model size on the memory section's registry: bench/spread.py."""
    built = memory_churn.build_registry(WORK, run.log)
    tracking_uri = memory_churn.tracking_uri(memory_churn.registry_path(WORK))
    samples: list[dict[str, object]] = []
    run.sections["cold-sizes"] = {"samples": samples}
    env = {"GATEWAY_MAX_LOADED_MODELS": "1", "GATEWAY_ACCESS_LOG": "false", "GATEWAY_WARM_ALIASES": "", **QUIET_POLL}
    with gateway(tracking_uri, "cold-sizes", cpus=run.server_cpus, env=env) as gw:
        run.log(f"cold-sizes: gateway ready in {gw.ready_seconds:.1f} s")
        for kind in memory_churn.KINDS:
            sizes = [entry["size_bytes"] for entry in built["kinds"][kind.key]["sizes"]]
            for pass_ in range(1, spread.COLD_PASSES + 1):
                for version in range(1, len(sizes) + 1):
                    url = f"{gw.url}/models/{kind.model}/versions/{version}/predict"
                    started = time.perf_counter()
                    try:
                        post(url, kind.body)
                        status = 200
                    except urllib.error.HTTPError as exc:
                        status = exc.code
                    seconds = time.perf_counter() - started
                    samples.append(
                        {
                            "kind": kind.what,
                            "version": version,
                            "pass": pass_,
                            "status": status,
                            "seconds": seconds,
                            "size_mib": sizes[version - 1] / memory_churn.MiB,
                        }
                    )
            run.log(f"cold-sizes: {kind.model} done")
