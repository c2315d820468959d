"""`--only torch`: the tiny PyTorch model through the gateway at 1 and 32 connections."""

from __future__ import annotations

from pathlib import Path

from harness import Run, measure, post, row
from servers import Server


def section(run: Run, gw: Server, bodies: dict[str, Path]) -> None:
    gw.predict_path = "/models/tiny-torch/versions/1/predict"
    try:
        post(gw.url + gw.predict_path, bodies["torch"].read_bytes())
        rows = [row("gateway tiny-torch", c, measure(run, gw, bodies["torch"], c), gw.peak_rss_mb()) for c in (1, 32)]
    finally:
        gw.predict_path = "/models/iris/versions/1/predict"
    run.sections["torch"] = rows
