"""A request's p99 while big file jobs run, against its p99 idle (issue 52: within twice).

One ``registry-gateway serve`` (bench/jobs.py's gateway arm: a sqlite state database, the run's
own MLflow registry with iris v1, loaded before timing), and with ``--jobs-process`` a
``serve --role jobs`` process beside it on the same state database (it runs the chunks, at its
lower OS priority; the serving process then runs none). A client sends one-row predict requests
to the serving process back to back (one connection, closed loop) and keeps each latency; rounds
alternate:

- ``idle``: ``--requests`` requests with no job;
- ``job``: file jobs of ``--rows`` rows (bench/jobs.py's Parquet file) submitted one after the
  other, each as the previous one ended, until ``--job-requests`` requests were sent while one
  ran (its state is read every 50th request): the requests sent from a job's submission until
  ``GET /jobs/<id>`` says it ended are kept.

The p99 of each round (of at least ``--job-requests`` latencies during jobs, 3,000 idle), their
medians over ``--repeat`` rounds, the ratio job/idle, the p99 of all rounds' latencies pooled,
and the jobs' rows a second, to ``--out`` (JSON). Settings are the gateway's defaults (two chunks
at a time per process, 10,000 rows a predict call while requests come, a pause between two
calls three times as long as the last: GATEWAY_JOBS_PREDICT_SHARE=0.25), unless ``--env KEY=VALUE`` says
otherwise (for both processes; ``--env GATEWAY_JOBS_PREDICT_SHARE=1``: no pause, as before it).
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
    parser.add_argument("--job-requests", type=int, default=2000, help="requests of a job round, at least")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--jobs-process", action="store_true", help="a `serve --role jobs` process runs the chunks")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the gateway (repeat)")
    parser.add_argument("--out", type=Path, help="where the run's JSON goes")
    arguments = parser.parse_args()
    settings = dict(item.partition("=")[::2] for item in arguments.env)

    from gateway.demo import log_iris_version, using_registry

    idle: list[list[float]] = []
    busy: list[list[float]] = []
    jobs_a_round: list[int] = []
    rows_per_s: list[float] = []
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
        with using_registry(tracking_uri, root / "artifacts"):
            log_iris_version("iris")
        parquet, _ = write_inputs(root, arguments.rows, arguments.row_group)
        with GatewayArm(root, tracking_uri, settings, jobs_process=arguments.jobs_process) as arm:
            requests_while(arm, count=500)  # warm: the first requests pay imports and allocations
            for round_ in range(arguments.repeat):
                idle.append(requests_while(arm, count=arguments.requests))
                latencies: list[float] = []
                jobs = 0
                while len(latencies) < arguments.job_requests:
                    out = root / f"out-{round_}-{jobs}"
                    body = {"input": str(parquet), "output": str(out), "output_format": "parquet"}
                    submitted = arm.http.post("/models/iris/versions/1/jobs", json=body)
                    assert submitted.status_code == 202, submitted.text
                    latencies += requests_while(arm, job=submitted.json()["id"])
                    job = arm.http.get(f"/jobs/{submitted.json()['id']}").json()
                    rows_per_s.append(job["rows_done"] / job["seconds"])
                    jobs += 1
                busy.append(latencies)
                jobs_a_round.append(jobs)
                print(
                    f"round {round_}: idle p99 {p99(idle[-1]) * 1000:.2f} ms, during {jobs} jobs "
                    f"{p99(latencies) * 1000:.2f} ms ({len(latencies)} requests), "
                    f"jobs {min(rows_per_s[-jobs:]):,.0f}-{max(rows_per_s[-jobs:]):,.0f} rows/s",
                    flush=True,
                )
    result: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "host": {"cpus": os.cpu_count(), "cpu": cpu_model()},
        "rows": arguments.rows,
        "row_group": arguments.row_group,
        "env": arguments.env,
        "jobs_process": arguments.jobs_process,
        "repeat": arguments.repeat,
        "idle_requests": [len(round_) for round_ in idle],
        "idle_p99_ms": [round(p99(round_) * 1000, 3) for round_ in idle],
        "job_p99_ms": [round(p99(round_) * 1000, 3) for round_ in busy],
        "job_requests": [len(round_) for round_ in busy],
        "jobs": jobs_a_round,
        "job_rows_per_s": [round(r) for r in rows_per_s],
        "idle_p50_ms_pooled": round(statistics.median(sum(idle, [])) * 1000, 3),
        "job_p50_ms_pooled": round(statistics.median(sum(busy, [])) * 1000, 3),
        "idle_p99_ms_pooled": round(p99(sum(idle, [])) * 1000, 3),
        "job_p99_ms_pooled": round(p99(sum(busy, [])) * 1000, 3),
    }
    result["idle_p99_ms_median"] = round(statistics.median(result["idle_p99_ms"]), 3)
    result["job_p99_ms_median"] = round(statistics.median(result["job_p99_ms"]), 3)
    result["ratio_median"] = round(result["job_p99_ms_median"] / result["idle_p99_ms_median"], 2)
    result["ratio_pooled"] = round(result["job_p99_ms_pooled"] / result["idle_p99_ms_pooled"], 2)
    print(json.dumps({k: v for k, v in result.items() if not isinstance(v, list)}, indent=2))
    if arguments.out is not None:
        arguments.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
