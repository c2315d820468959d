"""`--only spread`: the same Zipf load over 1, 10 and 100 loaded models, interleaved:
bench/spread.py."""

from __future__ import annotations

from pathlib import Path

import interleaved
import spread
from harness import QUIET_POLL, WORK, Run, ensure_spread_models, gateway, metric_totals, post, row
from load import drive


def section(run: Run, tracking_uri: str, bodies: dict[str, Path]) -> None:
    """The same Zipf load over 1, 10 and 100 loaded models, interleaved: bench/spread.py."""
    ensure_spread_models(tracking_uri, WORK / "registry", run.log)
    data: dict[str, list[object]] = {"rows": [], "notes": []}
    run.sections["spread"] = data
    most = max(spread.SPREAD_MODELS)
    env = {"GATEWAY_MAX_LOADED_MODELS": str(most + 10), "GATEWAY_ACCESS_LOG": "false", **QUIET_POLL}
    seconds = max(1.0, run.duration / 2)
    with gateway(tracking_uri, "spread", cpus=run.server_cpus, env=env) as gw:
        run.log(f"spread: gateway ready in {gw.ready_seconds:.1f} s")
        for path in spread.paths(most):
            post(gw.url + path, bodies["iris"].read_bytes())  # each loaded and warm before any point
        labels = [spread.label(models) for models in spread.SPREAD_MODELS]
        for round_index in range(run.rounds):
            for name in interleaved.order(labels, round_index):
                models = spread.SPREAD_MODELS[labels.index(name)]
                options = {"paths": spread.paths(models), "zipf": spread.SPREAD_S, "cpus": run.load_cpus}
                drive(gw.url, bodies["iris"], connections=spread.CONNECTIONS, duration=0.5, **options)  # type: ignore[arg-type]
                result = drive(gw.url, bodies["iris"], connections=spread.CONNECTIONS, duration=seconds, **options)  # type: ignore[arg-type]
                entry = {
                    "point": name,
                    "round": round_index,
                    **row(gw.name, spread.CONNECTIONS, result, gw.peak_rss_mb()),
                }
                data["rows"].append(entry)
                run.log(
                    f"spread round {round_index + 1}/{run.rounds} {name}: {result.req_s:.0f} req/s, "
                    f"{result.errors} errors"
                )
        loaded = metric_totals(gw.url, ["gateway_loaded_models"])["gateway_loaded_models"]
    data["notes"].append(f"Versions loaded at the end: {loaded:.0f}.")
