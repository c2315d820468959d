"""The benchmark's own logic: reading wrk, planning workers, judging targets, the bare floor.

The benchmark itself runs with `make bench`, never in the test suite (no timed asserts);
these tests keep the parts that turn its measurements into verdicts honest.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import floor_app  # noqa: E402
import run as bench  # noqa: E402
from load import parse_wrk  # noqa: E402

WRK_OUTPUT = """Running 12s test @ http://127.0.0.1:8811/models/iris/versions/1/predict
  1 threads and 1 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   704.20us  682.58us   8.97ms   91.45%
    Req/Sec     1.73k   331.87     2.36k    62.50%
  Latency Distribution
     50%  478.00us
     75%  629.00us
     90%    1.21ms
     99%    4.04ms
  20654 requests in 12.01s, 3.62MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:   1719.82
Transfer/sec:    309.03KB
"""


def test_wrk_output_is_read_with_its_units_and_errors() -> None:
    result = parse_wrk(WRK_OUTPUT)
    assert (result.req_s, result.requests) == (1719.82, 20654)
    assert result.p50_ms == pytest.approx(0.478)
    assert result.p99_ms == pytest.approx(4.04)
    assert result.errors == 2 + 1 + 4


def test_workers_get_dedicated_cores_only_where_the_load_generator_also_fits() -> None:
    assert bench.workers_plan(2) == ([1, 2], False)
    assert bench.workers_plan(3) == ([1, 2], False)
    assert bench.workers_plan(4) == ([1, 2], True)
    assert bench.workers_plan(16) == ([1, 2, 4, 8], True)


def _row(server: str, connections: int, req_s: float, p50: float = 1.0, p99: float = 5.0) -> dict[str, Any]:
    return {"server": server, "connections": connections, "req_s": req_s, "p50_ms": p50, "p99_ms": p99, "errors": 0}


def _workers(n: int, req_s: float, per_cpu: float) -> dict[str, Any]:
    return _row(f"gateway --workers {n}", 32 * n, req_s) | {
        "workers": n,
        "req_per_cpu_s": per_cpu,
        "server_cpu_s": 1.0,
        "peak_rss_mb": 1.0,
    }


def test_targets_are_judged_against_the_issue_thresholds() -> None:
    run = bench.Run(duration=1, warmup=0, connections=[1, 32], pin=True)
    run.main = [
        _row("gateway", 1, 2000, p50=0.70),
        _row("gateway", 32, 6000, p99=26.0),
        _row("mlflow models serve", 32, 1000),
        _row(bench.FLOOR, 1, 5000, p50=0.21),
        _row(bench.FLOOR, 32, 10000),
    ]
    run.sections["workers"] = [_workers(1, 5000, 5000), _workers(2, 7000, 4900)]
    run.sections["workers_dedicated"] = True
    assert {name: ok for name, _, ok in bench.targets(run)} == {
        "32 conns: req/s ≥ 6× mlflow models serve": True,  # 6.0×
        "32 conns: req/s ≥ 0.6× the floor": True,  # 0.60×
        "32 conns: p99 < 25 ms": False,  # 26 ms
        "1 conn: p50 within 0.5 ms of the floor's": True,  # +0.49 ms
        "2 workers on 2 cores ≥ 1.6× one worker": False,  # 1.4×
    }


def test_without_dedicated_cores_the_workers_target_is_not_judged() -> None:
    run = bench.Run(duration=1, warmup=0, connections=[32], pin=True)
    run.sections["workers"] = [_workers(1, 5000, 5000), _workers(2, 9000, 4800)]
    run.sections["workers_dedicated"] = False
    [(line, value, ok)] = bench.targets(run)
    assert ok is None and value == "not measurable here"
    assert "1.80× the req/s" in line and "0.96× the requests per CPU-second" in line
    assert "| not measurable here | – |" in bench.render(run, _machine())


def _machine() -> dict[str, str]:
    return {"cpus": "2", "cpu": "test", "load_before": "0", "load_after": "0", "loadgen": "wrk"}


@pytest.mark.anyio
async def test_the_bare_floor_answers_like_the_fastapi_floor() -> None:
    for app in (floor_app.create_app(), floor_app.create_bare_app()):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://floor") as client:
            answer = await client.post("/invocations", json={"dataframe_split": {"data": [[1]]}})
            assert (answer.status_code, answer.json()) == (200, {"predictions": [2]})
            assert answer.headers["content-type"] == "application/json"
            assert (await client.get("/health/ready")).status_code == 200
