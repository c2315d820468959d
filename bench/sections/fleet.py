"""`--only fleet`: three replicas behind each proxy, then a rolling restart behind an L4 balancer:
bench/fleet.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import fleet
from harness import HERE, VENV_BIN, WORK, Run, ensure_spread_models


def section(run: Run, tracking_uri: str, bodies: dict[str, Path]) -> None:
    """Three replicas behind each proxy, then a rolling restart behind an L4 balancer: bench/fleet.py."""
    from gateway.demo import using_registry

    ensure_spread_models(tracking_uri, WORK / "registry", run.log)
    with using_registry(tracking_uri, WORK / "registry" / "artifacts") as client:
        for name in fleet.models():  # a champion each: what a replica of old preloaded, every one of them
            client.set_registered_model_alias(name, "champion", "1")
    missing = [tool for tool in ("haproxy", "nginx") if shutil.which(tool) is None]
    if missing:
        raise RuntimeError(f"{' and '.join(missing)} not installed (apt-get install haproxy nginx-light)")
    seconds = max(run.duration * 2, 10.0)
    run.sections["fleet"] = fleet.run_section(
        WORK / "fleet", VENV_BIN, tracking_uri, bodies["iris"], HERE.parent / "deploy", seconds=seconds, log=run.log
    )
