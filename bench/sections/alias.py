"""`--only alias`: p99 on /versions/champion while champion flips between v1 and v2 every second."""

from __future__ import annotations

import statistics
import threading
import time
from pathlib import Path

from harness import ADMIN_TOKEN, Run, measure, post
from load import drive
from servers import Server


def section(run: Run, gw: Server, tracking_uri: str, bodies: dict[str, Path]) -> None:
    """p99 on /versions/champion while champion flips between v1 and v2 every second."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    gw.predict_path = "/models/iris/versions/champion/predict"
    steady = measure(run, gw, bodies["iris"], 32)
    stop = threading.Event()
    swaps: list[float] = []
    not_served: list[int] = []
    sync = (gw.url + "/admin/sync?model=iris", b"", {"Authorization": f"Bearer {ADMIN_TOKEN}"})

    def flip() -> None:
        version, tick = 2, time.perf_counter()
        while not stop.wait(max(0.0, tick + 1.0 - time.perf_counter())):
            tick = time.perf_counter()
            client.set_registered_model_alias("iris", "champion", str(version))
            post(*sync)
            swaps.append((time.perf_counter() - tick) * 1000)
            # Once the sync has answered, the alias must serve the new version.
            if post(gw.url + gw.predict_path, bodies["iris"].read_bytes()).get("x-model-version") != str(version):
                not_served.append(version)
            version = 3 - version

    flipper = threading.Thread(target=flip)
    flipper.start()
    try:
        url = gw.url + gw.predict_path
        moving = drive(url, bodies["iris"], connections=32, duration=run.duration, cpus=run.load_cpus)
    finally:
        stop.set()
        flipper.join()
        client.set_registered_model_alias("iris", "champion", "1")
        post(*sync)
        gw.predict_path = "/models/iris/versions/1/predict"
    run.sections["alias"] = {
        "connections": 32,
        "steady": steady.as_dict(),
        "moving": moving.as_dict(),
        "flips": len(swaps),
        "flips_not_served": len(not_served),
        "flip_ms_median": statistics.median(swaps) if swaps else float("nan"),
        "flip_ms_max": max(swaps, default=float("nan")),
    }
