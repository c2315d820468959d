"""`--only zipf`: Zipf traffic over 50 models with room for 10 in the gateway's LRU."""

from __future__ import annotations

from pathlib import Path

from harness import ZIPF_MODELS, Run, gateway, metric_totals
from load import drive

ZIPF_ROOM = 10
ZIPF_S = 1.1


def section(run: Run, tracking_uri: str, bodies: dict[str, Path]) -> None:
    """Zipf traffic over 50 models with room for 10 in the gateway's LRU."""
    env = {"GATEWAY_MAX_LOADED_MODELS": str(ZIPF_ROOM)}
    names = ["gateway_cache_hits_total", "gateway_cache_misses_total", "gateway_cache_evictions_total"]
    names += ["gateway_model_loads_total"]
    with gateway(tracking_uri, "zipf", cpus=run.server_cpus, env=env) as gw:
        before = metric_totals(gw.url, names)
        paths = [f"/models/zipf-{index:02d}/versions/1/predict" for index in range(ZIPF_MODELS)]
        duration = max(run.duration, 5) * 2
        result = drive(
            gw.url,
            bodies["iris"],
            connections=8,
            duration=duration,
            cpus=run.load_cpus,
            paths=paths,
            zipf=ZIPF_S,
            force_python=True,  # as in every run before wrk could spread requests over paths
        )
        after = metric_totals(gw.url, names)
        rss = gw.peak_rss_mb()
    delta = {name.removeprefix("gateway_").removesuffix("_total"): after[name] - before[name] for name in names}
    lookups = delta["cache_hits"] + delta["cache_misses"]
    # The best any LRU of this size can do: the share of traffic on the 10 most popular models.
    weights = [1 / rank**ZIPF_S for rank in range(1, ZIPF_MODELS + 1)]
    run.sections["zipf"] = {
        "models": ZIPF_MODELS,
        "room": ZIPF_ROOM,
        "s": ZIPF_S,
        "connections": 8,
        "seconds": duration,
        **result.as_dict(),
        **delta,
        "hit_rate": delta["cache_hits"] / lookups if lookups else float("nan"),
        "top10_share": sum(weights[:ZIPF_ROOM]) / sum(weights),
        "peak_rss_mb": rss,
    }
