"""`--only cold`: the first request to versions the gateway has never loaded, against load_model +
predict."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from harness import COLUMNS, HERE, ROW, ZIPF_MODELS, Run, post
from servers import Server


def section(run: Run, gw: Server, tracking_uri: str, bodies: dict[str, Path]) -> None:
    """First request to versions the gateway has never loaded, against load_model + predict."""
    cold = ["iris/2", f"zipf-{ZIPF_MODELS - 1:02d}/1"]
    rows = []
    for ref in cold:
        name, version = ref.split("/")
        url = f"{gw.url}/models/{name}/versions/{version}/predict"
        timings = []
        for _ in range(2):
            started = time.perf_counter()
            post(url, bodies["iris"].read_bytes())
            timings.append((time.perf_counter() - started) * 1000)
        rows.append({"version": ref, "gateway_first_ms": timings[0], "gateway_second_ms": timings[1]})
    argv = [sys.executable, str(HERE / "cold_load.py"), "--warm", "models:/iris/1"]
    argv += ["--columns", json.dumps(COLUMNS), "--row", json.dumps(ROW), *(f"models:/{ref}" for ref in cold)]
    done = subprocess.run(
        argv, capture_output=True, text=True, check=True, env={**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}
    )
    baseline = json.loads(done.stdout.strip().splitlines()[-1])
    for entry in rows:
        entry["load_model_predict_ms"] = baseline[f"models:/{entry['version']}"]
    run.sections["cold"] = rows
