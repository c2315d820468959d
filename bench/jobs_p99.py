"""A request's p99 while a big file job runs, against its p99 idle (issue 52: within twice).

One ``registry-gateway serve`` (bench/jobs.py's gateway arm: a sqlite state database, the run's
own MLflow registry with iris v1, loaded before timing). A client sends one-row predict requests
back to back (one connection, closed loop) and keeps each latency; rounds alternate:

- ``idle``: ``--requests`` requests with no job;
- ``job``: a file job of ``--rows`` rows (bench/jobs.py's Parquet file) is submitted, and the
  requests sent from its submission until ``GET /jobs/<id>`` says it ended are kept (its state
  is read every 50th request).

The p99 of each round, their medians over ``--repeat`` rounds, the ratio job/idle, and the job's
rows a second, to ``--out`` (JSON). Settings are the gateway's defaults (one chunk at a time per
process, 10,000 rows a predict call), unless ``--env KEY=VALUE`` says otherwise.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.jobs import COLUMNS, GatewayArm, cpu_model, write_inputs  # noqa: E402

ROW = {"dataframe_split": {"columns": COLUMNS, "data": [[5.1, 3.5, 1.4, 0.2]]}}
_READ_EVERY = 50


def p99(latencies: list[float]) -> float:
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def requests_while(arm: GatewayArm, *, count: int | None = None, job: str | None = None) -> list[float]:
    """Latencies (seconds) of requests sent back to back: ``count`` of them, or until ``job`` ended."""
    latencies: list[float] = []
    while True:
        started = time.perf_counter()
        answer = arm.http.post("/models/iris/versions/1/predict", json=ROW)
        latencies.append(time.perf_counter() - started)
        assert answer.status_code == 200, answer.text
        if count is not None and len(latencies) >= count:
            return latencies
        if job is not None and len(latencies) % _READ_EVERY == 0:
            state = arm.http.get(f"/jobs/{job}").json()
            if state["state"] not in ("queued", "running"):
                assert state["state"] == "succeeded", state
                return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--row-group", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=3000, help="requests of an idle round")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the gateway (repeat)")
    parser.add_argument("--out", type=Path, help="where the run's JSON goes")
    arguments = parser.parse_args()
    for item in arguments.env:
        key, _, value = item.partition("=")
        os.environ[key] = value  # the gateway's environment is this one's (bench/servers.py)

    from gateway.demo import log_iris_version, using_registry

    idle: list[float] = []
    busy: list[float] = []
    busy_counts: list[int] = []
    rows_per_s: list[float] = []
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
        with using_registry(tracking_uri, root / "artifacts"):
            log_iris_version("iris")
        parquet, _ = write_inputs(root, arguments.rows, arguments.row_group)
        with GatewayArm(root, tracking_uri) as arm:
            requests_while(arm, count=500)  # warm: the first requests pay imports and allocations
            for round_ in range(arguments.repeat):
                idle.append(p99(requests_while(arm, count=arguments.requests)))
                body = {"input": str(parquet), "output": str(root / f"out-{round_}"), "output_format": "parquet"}
                submitted = arm.http.post("/models/iris/versions/1/jobs", json=body)
                assert submitted.status_code == 202, submitted.text
                latencies = requests_while(arm, job=submitted.json()["id"])
                busy.append(p99(latencies))
                busy_counts.append(len(latencies))
                job = arm.http.get(f"/jobs/{submitted.json()['id']}").json()
                rows_per_s.append(job["rows_done"] / job["seconds"])
                print(
                    f"round {round_}: idle p99 {idle[-1] * 1000:.2f} ms, during the job {busy[-1] * 1000:.2f} ms "
                    f"({len(latencies)} requests), job {rows_per_s[-1]:,.0f} rows/s",
                    flush=True,
                )
    result: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "host": {"cpus": os.cpu_count(), "cpu": cpu_model()},
        "rows": arguments.rows,
        "row_group": arguments.row_group,
        "env": arguments.env,
        "repeat": arguments.repeat,
        "idle_p99_ms": [round(s * 1000, 3) for s in idle],
        "job_p99_ms": [round(s * 1000, 3) for s in busy],
        "job_requests": busy_counts,
        "job_rows_per_s": [round(r) for r in rows_per_s],
        "idle_p99_ms_median": round(statistics.median(idle) * 1000, 3),
        "job_p99_ms_median": round(statistics.median(busy) * 1000, 3),
    }
    result["ratio_median"] = round(result["job_p99_ms_median"] / result["idle_p99_ms_median"], 2)
    print(json.dumps(result, indent=2))
    if arguments.out is not None:
        arguments.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
