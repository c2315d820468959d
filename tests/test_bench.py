"""The benchmark's own logic: reading wrk, planning workers, judging targets, the bare floor,
the registry-scale section's parsing and verdicts, the memory section's, the OIP section's
bodies and verdicts, the traffic section's, and the auth section's.

The benchmark itself runs with `make bench`, never in the test suite (no timed asserts);
these tests keep the parts that turn its measurements into verdicts honest.
"""

from __future__ import annotations

import collections
import http.server
import importlib
import math
import shutil
import statistics
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.ci import missing

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import auth_cost  # noqa: E402
import flavor_rows  # noqa: E402
import fleet  # noqa: E402
import floor_app  # noqa: E402
import grpc_rows  # noqa: E402
import harness  # noqa: E402
import interleaved  # noqa: E402
import lane  # noqa: E402
import load as load_module  # noqa: E402
import memory_churn  # noqa: E402
import observability_cost  # noqa: E402
import oip_rows  # noqa: E402
import paired  # noqa: E402
import registry_scale  # noqa: E402
import run as bench  # noqa: E402
import spread  # noqa: E402
import tracing_cost  # noqa: E402
import traffic_split  # noqa: E402
from load import parse_wrk  # noqa: E402
from sections.workers import workers_plan  # noqa: E402

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


def test_each_section_run_py_names_is_a_module_of_bench_sections() -> None:
    """A module a section (issue 49, point 16): every ``--only`` name is bench/sections/<name>.py
    (``-`` as ``_``) with the ``section`` function run.py calls, and no module is left that
    run.py cannot run."""
    modules = {path.stem for path in (BENCH / "sections").glob("*.py")} - {"__init__"}
    assert modules == {name.replace("-", "_") for name in bench.SECTIONS}
    for name in sorted(modules):
        assert callable(importlib.import_module(f"sections.{name}").section), name


def test_workers_get_dedicated_cores_only_where_the_load_generator_also_fits() -> None:
    assert workers_plan(2) == ([1, 2], False)
    assert workers_plan(3) == ([1, 2], False)
    assert workers_plan(4) == ([1, 2], True)
    assert workers_plan(16) == ([1, 2, 4, 8], True)


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
    run = harness.Run(duration=1, warmup=0, connections=[1, 32], pin=True)
    run.main = [
        _row("gateway", 1, 2000, p50=0.70),
        _row("gateway", 32, 6000, p99=26.0),
        _row("mlflow models serve", 32, 1000),
        _row(harness.FLOOR, 1, 5000, p50=0.21),
        _row(harness.FLOOR, 32, 10000),
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
    run = harness.Run(duration=1, warmup=0, connections=[32], pin=True)
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


@pytest.mark.anyio
async def test_the_predicting_floor_batches_the_models_own_predict(tmp_path: Path) -> None:
    """bench/floor_app.py --predicting answers what the model predicts, row for row, whether
    requests come alone or together (then they share one predict call)."""
    import asyncio

    import mlflow.sklearn
    import numpy as np
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    features, labels = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=500).fit(features, labels)
    mlflow.sklearn.save_model(
        model, tmp_path / "iris", serialization_format="cloudpickle", pip_requirements=["scikit-learn"]
    )
    app = floor_app.create_predicting_app(str(tmp_path / "iris"))
    rows = [features[i : i + n].tolist() for i, n in ((0, 1), (50, 2), (100, 3), (140, 1))]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://floor") as client:

        async def ask(data: list[list[float]]) -> list[int]:
            answer = await client.post("/invocations", json={"dataframe_split": {"data": data}})
            assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
            predictions: list[int] = answer.json()["predictions"]
            return predictions

        alone = [await ask(data) for data in rows]
        together = await asyncio.gather(*(ask(data) for data in rows))
        assert (await client.get("/health/ready")).status_code == 200
    expected = [model.predict(np.array(data)).tolist() for data in rows]
    assert alone == expected and list(together) == expected
    assert {label for answer in expected for label in answer} == {0, 1, 2}  # not one constant


def test_the_tracing_cost_script_runs_the_gateways_own_tracing() -> None:
    """bench/tracing_cost.py drives gateway.observability.tracing directly: a change there must
    not leave it broken (it was, once, by a renamed argument)."""
    tracing_cost.path_microseconds(requests=200)  # runs (a difference of timings: any sign)
    made, encoded = tracing_cost.sampled_microseconds(requests=5)
    assert made > 0 and encoded > 0


# --- registry-scale (bench/registry_scale.py) ------------------------------------------------


def test_a_registry_layout_spreads_warm_aliases_and_moves_to_versions_never_served() -> None:
    big = registry_scale.Layout(10_000)
    assert (big.models, big.versions_per_model, big.champion) == (100, 100, 50)
    assert big.warm_names() == [f"scale-{index:03d}" for index in range(0, 100, 10)]
    moves = big.moves(4)
    assert moves == [("scale-000", 51), ("scale-010", 51), ("scale-020", 51), ("scale-030", 51)]
    small = registry_scale.Layout(200)
    assert (small.models, small.warm_names()) == (2, ["scale-000", "scale-001"])
    assert small.moves(4) == [("scale-000", 51), ("scale-001", 51), ("scale-000", 52), ("scale-001", 52)]
    with pytest.raises(ValueError):
        registry_scale.Layout(1_050)


def test_each_version_has_bytes_of_its_own() -> None:
    one = registry_scale.payload("scale-000", 1)
    assert len(one) == registry_scale.PAYLOAD_BYTES
    assert one == registry_scale.payload("scale-000", 1)  # the same on every build
    assert one != registry_scale.payload("scale-000", 2) != registry_scale.payload("scale-001", 1)


def test_tree_bytes_counts_files_once_and_follows_no_link(tmp_path: Path) -> None:
    (tmp_path / "blobs" / "abc").mkdir(parents=True)
    (tmp_path / "blobs" / "abc" / "model.skops").write_bytes(b"x" * 1000)
    (tmp_path / "blobs" / "abc" / "hard").hardlink_to(tmp_path / "blobs" / "abc" / "model.skops")
    (tmp_path / "versions" / "m").mkdir(parents=True)
    (tmp_path / "versions" / "m" / "1").symlink_to(tmp_path / "blobs" / "abc")
    (tmp_path / "MLmodel").write_bytes(b"y" * 24)
    assert registry_scale.tree_bytes(tmp_path) == 1024
    assert registry_scale.tree_bytes(tmp_path / "missing") == 0


METRICS = """# HELP gateway_sync_seconds Time of one registry sync pass
# TYPE gateway_sync_seconds histogram
gateway_sync_seconds_bucket{le="0.05"} 0.0
gateway_sync_seconds_bucket{le="+Inf"} 3.0
gateway_sync_seconds_count 3.0
gateway_sync_seconds_sum 12.5
# HELP gateway_sync_seconds_created Time of one registry sync pass
gateway_sync_seconds_created 1.7e+09
gateway_sync_runs_total{outcome="success"} 3.0
"""


def test_the_sync_histogram_is_read_over_its_labels_and_missing_is_none() -> None:
    assert registry_scale.histogram_totals(METRICS, "gateway_sync_seconds") == (12.5, 3.0)
    labelled = 'x_seconds_sum{kind="diff"} 1.5\nx_seconds_count{kind="diff"} 2\nx_seconds_sum{kind="fetch"} 4\n'
    labelled += 'x_seconds_count{kind="fetch"} 1\n'
    assert registry_scale.histogram_totals(labelled, "x_seconds") == (5.5, 3.0)
    assert registry_scale.histogram_totals(METRICS, "gateway_poll_seconds") is None


def test_pass_times_come_from_successive_histogram_samples() -> None:
    samples = [(10.0, 2.0), (10.0, 2.0), (10.4, 3.0), (10.4, 3.0), (11.4, 5.0)]
    assert registry_scale.pass_durations(samples) == pytest.approx([0.4, 0.5, 0.5])
    assert registry_scale.pass_durations(samples[:1]) == []


def _scale_entry(versions: int, **gateway: Any) -> dict[str, Any]:
    measured = {
        "poll_s": 5.0,
        "ready_s": 30.0,
        "first_pass_over_s": 40.0,
        "no_change_passes_s": [0.5, 0.6, 0.7],
        "move_first_pass": {"delay_s": 6.0, "during_first_pass": True, "deadline_s": 180.0},
        "moves_after": [{"delay_s": d, "passes_before": 3, "deadline_s": 30.0} for d in (2.0, 7.0, 3.0)],
        "bytes_at_ready": 1200,
        "expected_bytes_at_ready": 1000,
        "bytes_at_end": 5000,
        "expected_bytes_at_end": 1400,
    }
    return {"versions": versions, "gateway": measured | gateway}


def _verdicts(data: dict[str, Any]) -> dict[str, bool | None]:
    return {name: ok for name, _, ok in registry_scale.targets(data)}


def test_registry_scale_targets_are_judged_at_ten_thousand_versions() -> None:
    data = {"registries": [_scale_entry(1_000, no_change_passes_s=[0.05]), _scale_entry(10_000)]}
    assert _verdicts(data) == {
        "10,000 versions: ready < 60 s": True,
        "10,000 versions: no-change poll pass < 2 s": True,  # 0.7 s at most
        "no-change poll pass grows at most linearly, 1,000 → 10,000 (≤ 10×)": False,  # 0.6 / 0.05 = 12×
        "10,000 versions: alias moved during the first pass served within 7 s of the move or of ready": True,  # 6 s
        "10,000 versions: alias moved after the first pass served within 7 s": True,  # 7 s at most
        "10,000 versions: downloaded at ready: warm aliases' versions only (≤ 1.25×)": True,  # 1.2×
        "10,000 versions: downloaded at the end of the run: warm aliases' versions only (≤ 1.25×)": False,  # 3.6×
    }


def test_a_move_made_while_the_gateway_starts_is_judged_from_ready() -> None:
    moved = "10,000 versions: alias moved during the first pass served within 7 s of the move or of ready"
    early = {"delay_s": 25.0, "at_s": 10.0, "during_first_pass": True, "deadline_s": 180.0}  # ready at 30 s
    checks = {
        name: (value, ok)
        for name, value, ok in registry_scale.targets({"registries": [_scale_entry(10_000, move_first_pass=early)]})
    }
    assert checks[moved] == ("5.00 s", True)
    late = {**early, "delay_s": 28.0}  # served 8 s after ready
    checks = {
        name: (value, ok)
        for name, value, ok in registry_scale.targets({"registries": [_scale_entry(10_000, move_first_pass=late)]})
    }
    assert checks[moved][1] is False


def test_what_could_not_be_measured_fails_rather_than_passes() -> None:
    slow = _scale_entry(
        10_000,
        ready_s=None,
        first_pass_over_s=None,
        no_change_passes_s=[],
        move_first_pass={"delay_s": None, "during_first_pass": True, "deadline_s": 180.0},
        moves_after=[{"delay_s": None, "passes_before": 0, "deadline_s": 30.0}],
    )
    checks = {name: (value, ok) for name, value, ok in registry_scale.targets({"registries": [slow]})}
    assert checks["10,000 versions: ready < 60 s"] == ("–", False)
    assert checks["10,000 versions: no-change poll pass < 2 s"] == ("none measured (first pass not over)", False)
    assert checks["no-change poll pass grows at most linearly, 1,000 → 10,000 (≤ 10×)"][1] is None
    moved = "10,000 versions: alias moved during the first pass served within 7 s of the move or of ready"
    assert checks[moved] == ("not within 180 s", False)
    assert checks["10,000 versions: alias moved while the first pass ran served within 7 s"] == (
        "1 of 1 not within 30 s",
        False,
    )
    failed = {"registries": [{"versions": 10_000, "error": "RuntimeError: not ready"}]}
    assert registry_scale.targets(failed) == [
        ("registry-scale at 10,000 versions", "gateway run failed: RuntimeError: not ready", False)
    ]
    assert registry_scale.targets({"registries": [_scale_entry(1_000)]})[0][2] is None  # not judged below 10k
    assert registry_scale.targets(None) == []


def test_the_registry_scale_report_renders_what_was_measured_and_dashes_the_rest() -> None:
    entry = _scale_entry(10_000)
    entry["gateway"] |= {
        "limits": {"first_pass_s": 360.0},
        "first_pass_s": 20.0,
        "cache_breakdown": {"blobs": 2048},
        "passes_at_end": 9,
        "state_db_bytes": 4096,
        "rss_mb_at_ready": 500.0,
        "rss_mb": 510.0,
        "peak_rss_mb": 520.0,
    }
    entry["gateway"]["move_first_pass"]["at_s"] = 7.5
    entry["build"] = {"build_s": 130.0, "reused": True, "create_ms_first_tenth": 6.0, "create_ms_last_tenth": 7.0}
    entry["build"]["version_bytes"] = 29_000
    entry["read_cost"] = [
        {"op": "naive", "what": "the naive read", "calls": 11, "rows": 10_000, "ms": 1502.3, "error": None},
        {"op": "filter", "what": "by timestamp", "calls": 0, "rows": 0, "ms": float("nan"), "error": "refused it"},
    ]
    text = "\n".join(registry_scale.render({"registries": [{"versions": 1_000, "error": "boom"}, entry]}))
    assert "| ready after | – | 30.00 s |" in text
    assert "| registry built in | – | 130 s (reused) |" in text
    assert "7.5 s after start, during the first pass" in text
    assert "| the naive read | – | 11, 10,000, 1,502.3 |" in text
    assert "refused: refused it" in text
    assert "1,000 versions: the gateway run failed: boom" in text


# --- memory (bench/memory_churn.py) -----------------------------------------------------------


def test_the_zipf_draw_favours_low_versions_and_is_the_same_every_run() -> None:
    draws = memory_churn.zipf_versions(10, 1.1, 20_000)
    assert draws == memory_churn.zipf_versions(10, 1.1, 20_000)
    assert set(draws) == set(range(1, 11))
    counts = [draws.count(version) for version in range(1, 11)]
    assert counts == sorted(counts, reverse=True)
    weights = [1 / rank**1.1 for rank in range(1, 11)]
    assert counts[0] / len(draws) == pytest.approx(weights[0] / sum(weights), abs=0.01)


def test_round_robin_asks_each_version_in_turn_every_cycle() -> None:
    assert list(memory_churn.round_robin(3, 2)) == [(0, 1), (0, 2), (0, 3), (1, 1), (1, 2), (1, 3)]


def test_the_budget_has_room_for_three_median_models_and_never_four() -> None:
    eight = 8 * 2**20
    assert memory_churn.budget_mb([eight] * 10) == 28  # 3.5 × 8 MiB
    assert memory_churn.budget_mb([int(8.4 * 2**20)] * 3) == 30  # 29.4, rounded up
    assert 3 * 8 <= memory_churn.budget_mb([eight]) < 4 * 8
    with pytest.raises(ValueError):
        memory_churn.budget_mb([])


def test_slope_is_least_squares_and_nan_without_two_points() -> None:
    assert memory_churn.slope([0, 1, 2, 3], [425, 507, 590, 672]) == pytest.approx(82.4)  # the issue's first cycles
    assert memory_churn.slope([0, 1, 2], [5, 5, 5]) == 0
    assert math.isnan(memory_churn.slope([1], [2]))
    assert math.isnan(memory_churn.slope([1, 1], [2, 3]))


GATEWAY_METRICS = """# HELP gateway_model_loads_total Model loads by outcome
# TYPE gateway_model_loads_total counter
gateway_model_loads_total{model="mem-mlp",outcome="success",version="1"} 5.0
gateway_model_loads_total{model="mem-mlp",outcome="failure",version="1"} 2.0
gateway_model_loads_total{model="mem-mlp",outcome="success",version="2"} 3.0
gateway_model_loads_created{model="mem-mlp",outcome="success",version="1"} 1.7e+09
gateway_cache_evictions_total{model="mem-mlp"} 6.0
gateway_loaded_bytes 1.3e+07
"""


def test_metrics_are_summed_over_labels_or_only_the_ones_asked_for() -> None:
    names = ["gateway_model_loads_total", "gateway_cache_evictions_total", "gateway_loaded_bytes", "missing"]
    assert memory_churn.metric_totals(GATEWAY_METRICS, names) == {
        "gateway_model_loads_total": 10.0,
        "gateway_cache_evictions_total": 6.0,
        "gateway_loaded_bytes": 1.3e7,
        "missing": 0.0,
    }
    failed = memory_churn.metric_totals(GATEWAY_METRICS, names[:1], where={"outcome": "failure"})
    assert failed == {"gateway_model_loads_total": 2.0}


def test_size_ratios_use_only_loads_that_evicted_nothing() -> None:
    samples = [
        {"rss_before_mb": 330, "rss_after_mb": 340, "size_bytes": 8 * 2**20, "evictions": 0},  # 0.8
        {"rss_before_mb": 340, "rss_after_mb": 340, "size_bytes": 8 * 2**20, "evictions": 0},  # no delta
        {"rss_before_mb": 340, "rss_after_mb": 344, "size_bytes": 8 * 2**20, "evictions": 1},  # evicted one
        {"rss_before_mb": 340, "rss_after_mb": 344, "size_bytes": None, "evictions": 0},  # not loaded
    ]
    assert memory_churn.size_ratios(samples) == [pytest.approx(0.8)]


def _sample(t: float, phase: str, rss: float, loads: float) -> dict[str, Any]:
    return {
        "t": t,
        "phase": phase,
        "rss_mb": rss,
        "loads": loads,
        "failed_loads": 0,
        "evictions": max(0, loads - 3),
        "loaded_bytes": 24 * 2**20,
        "loaded_models": 3,
    }


def _memory_kind(**changes: Any) -> dict[str, Any]:
    samples = [_sample(0, "warm-up", 900, 10), _sample(1, "round-robin", 380, 20), _sample(2, "round-robin", 390, 30)]
    samples += [_sample(3, "zipf", 392, 40), _sample(4, "zipf", 394, 60), _sample(5, "end", 394, 60)]
    kind = {
        "kind": "sklearn",
        "versions": 10,
        "budget_mb": 30,
        "baseline_mb": 330.0,
        "samples": samples,
        "cycle_end_rss_mb": [380.0, 390.0, 400.0],
        "rr_net_delta_mb": [0.0, 8.0, -8.0, 1.0],
        "sizing": [{"rss_before_mb": 330, "rss_after_mb": 340, "size_bytes": 8 * 2**20, "evictions": 0}],
        "errors": 0,
    }
    return kind | changes


def test_the_memory_summary_reads_after_warm_up_only() -> None:
    summary = memory_churn.summarize(_memory_kind())
    assert summary["max_rss_after_warmup_mb"] == 394  # the warm-up's 900 does not count
    assert summary["max_rss_phase"] == "zipf"
    assert summary["limit_mb"] == pytest.approx(396.0)  # (330 + 30) × 1.1
    assert summary["rr_growth_per_cycle_mb"] == pytest.approx(10.0)
    assert summary["zipf_growth_per_cycle_mb"] == pytest.approx(1.0)  # 2 MiB over 20 loads, × 10 a cycle
    assert summary["rr_net_delta_per_load_mb"] == pytest.approx(0.5)
    assert summary["round-robin"] == {"rss_first_mb": 380, "rss_last_mb": 390, "rss_max_mb": 390, "loads": 10}
    assert summary["size_ratio_median"] == pytest.approx(0.8)


def test_the_memory_target_holds_rss_and_every_answer_and_fails_what_was_not_measured() -> None:
    line = "memory, sklearn: RSS after warm-up ≤ (baseline + budget) × 1.1, all churn long"
    assert memory_churn.targets({"kinds": [_memory_kind()]}) == [(line, "max 394 MiB, limit 396 MiB", True)]
    over = _memory_kind(baseline_mb=320.0)  # limit 385
    assert memory_churn.targets({"kinds": [over]})[0][1:] == ("max 394 MiB, limit 385 MiB", False)
    failing = _memory_kind(errors=12)
    assert memory_churn.targets({"kinds": [failing]})[0][1:] == (
        "max 394 MiB, limit 396 MiB, 12 requests failed",
        False,
    )
    assert memory_churn.targets({"kinds": [_memory_kind(samples=[])]})[0][1:] == ("not measured", False)
    broken = {"kinds": [{"kind": "torch", "error": "RuntimeError: not ready"}]}
    assert memory_churn.targets(broken)[0][1:] == ("run failed: RuntimeError: not ready", False)
    assert memory_churn.targets(None) == []


def test_the_memory_report_renders_what_was_measured_and_dashes_the_rest() -> None:
    kind = _memory_kind(
        what="RandomForestClassifier",
        measured_sizes={1: 8 * 2**20, 2: 9 * 2**20, 3: None},
        expected_sizes=[{"graph_bytes": 30_000, "file_bytes": 8 * 2**20, "size_bytes": 8 * 2**20}],
        rss_ready_mb=254.0,
        rss_after_warmup_mb=420.0,
        rss_end_mb=394.0,
        peak_rss_mb=901.0,
        loads=60,
        failed_loads=2,
        evictions=57,
        loaded_bytes_end=24 * 2**20,
        loaded_models_end=3,
        rr_requests=30,
        zipf={"requests": 100, "seconds": 45.0},
        statuses={"0": 1, "200": 129, "503": 2},
        failures=["503: Model 'mem-mlp' version 1 failed to load"],
        seconds=70.0,
    )
    text = "\n".join(
        memory_churn.render({"kinds": [kind, {"kind": "torch", "error": "boom"}], "build": {"reused": True}})
    )
    assert "| | sklearn | torch |" in text
    assert "| measured size (gateway), min / median / max | 8.00 / 8.50 / 9.00 MiB | – |" in text
    assert "| limit: (baseline + budget) × 1.1 | 396 MiB | – |" in text
    assert "| max RSS after warm-up (phase) | 394 MiB (zipf) | – |" in text
    assert "| RSS at the end of each round-robin cycle | 380, 390, 400 | – |" in text
    assert "| loads (failed) / evictions | 60 (2) / 57 | – |" in text
    assert "| answers by status | no answer × 1, 200 × 129, 503 × 2 | – |" in text
    assert "sklearn, a failed request: 503: Model 'mem-mlp' version 1 failed to load" in text
    assert "torch: the run failed: boom" in text
    assert memory_churn.render(None) == []


# --- OIP (bench/oip_rows.py) -------------------------------------------------------------------


def test_the_oip_bodies_carry_the_same_row_each_way(tmp_path: Path) -> None:
    import json
    import struct

    from gateway.protocols.proto import grpc_service_pb2 as pb
    from gateway.wire import oip_codec

    bodies = oip_rows.write_bodies(tmp_path, harness.COLUMNS, harness.ROW)
    document = json.loads(bodies.json.read_text())
    assert [i["data"] for i in document["inputs"]] == [[v] for v in harness.ROW]
    binary = bodies.binary.read_bytes()
    request = oip_codec.parse_request(binary, bodies.binary_header_length)  # what the gateway reads
    assert [t.name for t in request.inputs] == harness.COLUMNS
    assert struct.unpack("<4d", binary[bodies.binary_header_length :]) == tuple(harness.ROW)
    for path, version in ((bodies.grpc, "1"), (bodies.grpc_unversioned, "")):
        message = pb.ModelInferRequest.FromString(path.read_bytes())
        assert (message.model_name, message.model_version) == ("iris", version)
        assert [struct.unpack("<d", raw)[0] for raw in message.raw_input_contents] == harness.ROW


def _oip(server: str, protocol: str, connections: int, req_s: float) -> dict[str, Any]:
    return _row(server, connections, req_s) | {"protocol": protocol, "requests": int(req_s * 10), "seconds": 10}


def _oip_rows(mlserver_json_32: float | None = 50) -> list[dict[str, Any]]:
    rows = []
    for c, base, json_, binary, grpc in ((1, 1000, 950, 899, 960), (32, 5000, 4600, 4400, 4500)):
        rows += [_oip("gateway", oip_rows.MLFLOW, c, base), _oip("gateway", oip_rows.REST_JSON, c, json_)]
        rows += [_oip("gateway", oip_rows.REST_BINARY, c, binary), _oip("gateway", oip_rows.GRPC, c, grpc)]
    if mlserver_json_32 is not None:
        rows.append(_oip(oip_rows.MLSERVER, oip_rows.REST_JSON, 32, mlserver_json_32))
    return rows


def test_oip_targets_are_judged_at_each_connection_count() -> None:
    verdicts = {
        name: (value, ok) for name, value, ok in oip_rows.targets({"rows": _oip_rows(), "connections": [1, 32]})
    }
    assert verdicts == {
        "OIP: OIP REST JSON at 1 conns within 10% of the MLflow protocol's req/s": ("0.95×", True),
        "OIP: OIP REST binary at 1 conns within 10% of the MLflow protocol's req/s": ("0.90×", False),  # 0.899
        "OIP: gRPC at 1 conns ≥ the faster OIP REST row's req/s": ("1.01×", True),
        "OIP: OIP REST JSON at 32 conns within 10% of the MLflow protocol's req/s": ("0.92×", True),
        "OIP: OIP REST binary at 32 conns within 10% of the MLflow protocol's req/s": ("0.88×", False),
        "OIP: gRPC at 32 conns ≥ the faster OIP REST row's req/s": ("0.98×", False),
        "OIP: REST JSON at 32 conns ≥ 10× MLServer's V2 REST": ("92.0×", True),
    }


def test_oip_targets_fail_what_was_not_measured_and_dash_a_skipped_mlserver() -> None:
    rows = [r for r in _oip_rows(None) if r["protocol"] != oip_rows.GRPC]
    checks = {name: (value, ok) for name, value, ok in oip_rows.targets({"rows": rows, "mlserver_skipped": "nope"})}
    assert checks["OIP: gRPC at 32 conns ≥ the faster OIP REST row's req/s"] == ("not measured", False)
    assert checks["OIP: REST JSON at 32 conns ≥ 10× MLServer's V2 REST"] == ("MLServer skipped: nope", None)
    assert oip_rows.targets(None) == []


def test_the_oip_report_renders_ratios_and_client_cpu() -> None:
    rows = _oip_rows()
    rows[3] |= {"client_cpu_s": 4.0, "requests_per_batch": 1.5}
    text = "\n".join(oip_rows.render({"rows": rows, "notes": ["a note"]}))
    assert "| gateway | OIP gRPC (raw contents) | 1 | 960 | 1.00 | 5.00 | 0 | 0.96× | 1.50 | 0.40 |" in text
    assert "| MLServer (mlserver-mlflow) | OIP REST JSON | 32 | 50 |" in text and "a note" in text
    assert "Each round's ratio" not in text  # one round: nothing per round to show


def _rounds(*rates: tuple[float, float, float, float]) -> list[dict[str, Any]]:
    """Rounds at 32 connections: (MLflow, REST JSON, REST binary, gRPC) req/s in each."""
    rows = []
    for n, (base, json_, binary, grpc) in enumerate(rates, start=1):
        for protocol, value in ((oip_rows.MLFLOW, base), (oip_rows.REST_JSON, json_)):
            rows.append(_oip("gateway", protocol, 32, value) | {"round": n})
        for protocol, value in ((oip_rows.REST_BINARY, binary), (oip_rows.GRPC, grpc)):
            rows.append(_oip("gateway", protocol, 32, value) | {"round": n})
    return rows


def test_oip_ratios_are_taken_within_a_round_and_their_median_judged() -> None:
    # The MLflow protocol drifts from round to round; each round's OIP keeps pace with its own:
    # pooled medians (2,850 / 4,000 = 0.71) would fail what the rounds show passing (0.95).
    rows = _rounds((5000, 4750, 4500, 1000), (3000, 2850, 3000, 1500), (4000, 2000, 3800, 800))
    verdicts = {name: (value, ok) for name, value, ok in oip_rows.targets({"rows": rows, "connections": [32]})}
    assert verdicts["OIP: OIP REST JSON at 32 conns within 10% of the MLflow protocol's req/s"] == ("0.95×", True)
    assert verdicts["OIP: OIP REST binary at 32 conns within 10% of the MLflow protocol's req/s"] == ("0.95×", True)
    # gRPC over the faster REST row of its own round: 1000/4750, 1500/3000, 800/3800
    assert verdicts["OIP: gRPC at 32 conns ≥ the faster OIP REST row's req/s"] == ("0.21×", False)
    summary = {r["protocol"]: r for r in oip_rows.summary(rows)}
    assert summary[oip_rows.REST_JSON]["rounds"] == 3
    assert summary[oip_rows.REST_JSON]["req_s"] == 2850  # the median of the rounds' req/s
    assert summary[oip_rows.REST_JSON]["ratio"] == pytest.approx(0.95)  # the median of 0.95, 0.95, 0.5
    text = "\n".join(oip_rows.render({"rows": rows, "connections": [32]}))
    assert "OIP REST JSON at 32: 0.95×, 0.95×, 0.50×" in text


def test_a_round_missing_its_mlflow_point_is_left_out_of_the_ratios() -> None:
    rows = _rounds((5000, 4750, 4500, 1000), (3000, 1500, 1500, 1500))
    rows = [r for r in rows if not (r["round"] == 2 and r["protocol"] == oip_rows.MLFLOW)]
    assert oip_rows.round_ratios(rows, oip_rows.REST_JSON, 32) == [0.95]


# --- traffic (bench/traffic_split.py) -----------------------------------------------------------


def _arm(**fields: Any) -> dict[str, Any]:
    return {"version": 2, "weight": 0.0, "shadow": 0.0, "served_weight": 0.0, "warm": False} | fields


def test_a_split_counts_as_served_only_once_warm_with_its_weight() -> None:
    served = traffic_split.served
    assert served({"arms": []}) and served({"arms": [_arm()]})  # no split: no arm with a share
    assert not served({"arms": [_arm(weight=10.0)]})  # configured, not served yet
    assert not served({"arms": [_arm(weight=10.0, warm=True)]}, weight=10)  # warm, served weight still 0
    assert served({"arms": [_arm(weight=10.0, served_weight=10.0, warm=True)]}, weight=10)
    assert not served({"arms": [_arm(shadow=25.0)]}, shadow=25)
    assert served({"arms": [_arm(shadow=25.0, warm=True)]}, shadow=25)
    assert not served({"arms": [_arm(weight=10.0, served_weight=10.0, warm=True)]}, shadow=25)
    stats = {"stats": [{"arm": "default", "version": 1, "requests": 9}, {"arm": "canary", "version": 2, "requests": 1}]}
    assert traffic_split.arm_requests(stats) == {"default:1": 9, "canary:2": 1}
    shadow = {"arm": "shadow", "version": 2, "requests": 7, "errors": 1, "agreed": 6, "differed": 0, "dropped": 3}
    other = {"this_replica": False, "counts": [shadow | {"requests": 70}]}  # another replica's, published
    mine = {"this_replica": True, "counts": [{"arm": "canary", "version": 2, "requests": 5}, shadow]}
    replicas = {"replicas": [other, mine]}
    assert traffic_split.shadow_counts(replicas, 2) == {"requests": 7, "errors": 1, "dropped": 3}
    assert traffic_split.shadow_counts(replicas, 3) == {"requests": 0, "errors": 0, "dropped": 0}


def _point(label: str, req_s: float) -> dict[str, Any]:
    return _row("gateway", 32, req_s) | {"point": label, "requests": int(req_s * 10)}


def test_the_traffic_plan_puts_every_arm_point_between_two_no_split_points() -> None:
    plan = traffic_split.plan(3)
    labels = [label for label, *_ in plan]
    assert len(plan) == 23 and labels[0] == labels[-1] == traffic_split.NONE
    assert labels[1:19:6] == [f"{traffic_split.SPLIT} #{n}" for n in (1, 2, 3)]
    assert labels[3:19:6] == [f"{traffic_split.KEYED} #{n}" for n in (1, 2, 3)]
    assert labels[5:19:6] == [f"{traffic_split.SHADOWED} #{n}" for n in (1, 2, 3)]
    assert labels[19::2] == list(traffic_split.PROBED.values())
    assert all(label == traffic_split.NONE for label in labels[::2])
    assert [traffic_split.keyed_point(label) for label in labels[1:7]] == [False, False, True, False, False, False]
    arms = {(w, s, probe) for label, w, s, probe in plan if label != traffic_split.NONE}
    assert arms == {
        (traffic_split.WEIGHT, 0, None),
        (0, traffic_split.SHADOW, None),
        (0, traffic_split.SHADOW, traffic_split.SLOW),
        (0, traffic_split.SHADOW, traffic_split.FAILING),
    }
    assert {(w, s, p) for label, w, s, p in plan if label == traffic_split.NONE} == {(0, 0, None)}
    assert len(traffic_split.plan(3, probes=False)) == 19
    assert len(traffic_split.plan(3, probes=False, keyed=False)) == 13


def test_traffic_targets_take_the_median_of_each_point_against_its_neighbours() -> None:
    none, split, shadow = traffic_split.NONE, traffic_split.SPLIT, traffic_split.SHADOWED
    req_s = [6000, 5400, 5200, 3500, 5000, 4800, 6000, 4300, 6000, 5820, 6000, 4100, 6000]
    plan = traffic_split.plan(3, probes=False, keyed=False)
    rows = [_point(label, rate) for (label, *_), rate in zip(plan, req_s, strict=True)]
    for row in rows:
        row["cpu_us_per_request"] = 1e6 / row["req_s"]  # one core, saturated: CPU per request is 1/rate
    ratios = traffic_split.ratios({"rows": rows})
    # each against the mean of its neighbours: 5400/5600, 3500/5100, 4800/5500, 4300/6000, 5820/6000, 4100/6000
    assert [round(r["req_s"], 3) for r in ratios] == [0.964, 0.686, 0.873, 0.717, 0.970, 0.683]
    assert all(abs(r["cpu"] - r["req_s"]) < 0.02 for r in ratios)  # the same story by CPU, inverted
    assert traffic_split.median_ratio({"rows": rows}, split) == pytest.approx(5400 / 5600)
    assert [(v, ok) for _, v, ok in traffic_split.targets({"rows": rows})] == [("0.96×", True), ("0.69×", False)]
    assert [ok for *_, ok in traffic_split.targets({"rows": rows[:1]})] == [False, False]  # not measured
    rows[5]["still_served"] = False  # the guard took a split off meanwhile: that round measured no split
    assert traffic_split.targets({"rows": rows})[0][1:] == (
        "not measured: the arm was no longer served at the end of a point",
        False,
    )
    text = "\n".join(traffic_split.render({"rows": rows, "notes": []}))
    assert f"| {split} #1 | 5,400 |" in text and f"| {none} | 6,000 |" in text and f"| {shadow} #3 | 4,100 |" in text
    assert "0.964×" in text


def test_a_slow_or_failing_shadow_passes_only_with_every_answer_and_a_p99_within_the_healthy_points() -> None:
    plan = traffic_split.plan(1, keyed=False)  # none, split, none, shadow, none, slow, none, failing, none
    p99s = [6.0, 6.3, 7.2, 7.5, 6.2, 7.4, 6.4, 9.0, 6.1]  # the split's p99 is not a healthy point's
    rows = [
        _point(label, 5000) | {"p99_ms": p99, "shadows_run": 40.0, "shadow_errors": 0.0}
        for (label, *_), p99 in zip(plan, p99s, strict=True)
    ]
    rows[-4]["shadows_dropped"] = rows[-2]["shadows_dropped"] = 900.0
    slow, failing = traffic_split.probe_targets({"rows": rows})
    assert slow[1:] == ("p99 7.40 ms (healthy 6.00-7.50 ms), 0 errors; shadows: 40 run, 0 failed, 900 dropped", True)
    assert failing[2] is False  # 9.0 ms: past the worst of no split and the healthy shadow (7.5 ms)
    rows[-4]["errors"] = 3  # a primary answer lost
    assert traffic_split.probe_targets({"rows": rows})[0][2] is False
    assert [t[0] for t in traffic_split.targets({"rows": rows})][2:] == [slow[0], failing[0]]
    text = "\n".join(traffic_split.render({"rows": rows, "notes": []}))
    assert f"{traffic_split.PROBED[traffic_split.FAILING]}: the primary answers" in text and "FAIL." in text
    assert traffic_split.probe_targets({"rows": rows[:5]}) == []  # a plan without probes


# --- auth (bench/auth_cost.py) ------------------------------------------------------------------


def test_the_secret_is_the_last_line_of_keys_create() -> None:
    output = (
        "API key 'bench' created: scopes predict:*; no limits\n"
        "The secret on the next line is shown once and never stored (only its sha256 is); ...\n"
        "rgw_AbC-123_xyz\n"
    )
    assert auth_cost.secret_from(output) == "rgw_AbC-123_xyz"
    assert auth_cost.bearer("s3cret") == {"Authorization": "Bearer s3cret"}
    with pytest.raises(ValueError):
        auth_cost.secret_from("API key 'bench' created: scopes predict:*\n")  # no secret line
    with pytest.raises(ValueError):
        auth_cost.secret_from("")


def _round_point(label: str, round_index: int, req_s: float, errors: int = 0) -> dict[str, Any]:
    return _row("gateway", 32, req_s) | {
        "point": label,
        "round": round_index,
        "requests": int(req_s * 5),
        "errors": errors,
    }


def test_interleaved_rounds_rotate_so_that_each_configuration_leads_once() -> None:
    labels = ["a", "b", "c"]
    assert [interleaved.order(labels, r) for r in range(4)] == [
        ["a", "b", "c"],
        ["b", "c", "a"],
        ["c", "a", "b"],
        ["a", "b", "c"],
    ]
    assert interleaved.order([], 3) == []


def test_a_verdict_takes_the_median_of_each_rounds_own_ratio_so_drift_cancels() -> None:
    # The machine slows by half over the run; the feature costs 4% in every round.
    rows = []
    for r, speed in enumerate([1.0, 0.8, 0.5]):
        rows += [_round_point("off", r, 6000 * speed), _round_point("on", r, 5760 * speed)]
    data = {"rows": rows}
    assert interleaved.ratios(data, "on", "off") == pytest.approx([0.96, 0.96, 0.96])
    name, shown, ok = interleaved.verdict(data, "on", "off", 0.95, "feature within 5%")
    assert ok is True and shown.startswith("0.960× (median of 3 rounds")
    assert interleaved.verdict(data, "on", "off", 0.97, "within 3%")[2] is False
    assert interleaved.verdict(data, "on", "off", None, "information")[2] is None
    # Taking all points together instead would mix the drift into the ratio of means.
    rows.append(_round_point("off", 3, 9000))  # a round where "on" was not measured: no ratio from it
    assert len(interleaved.ratios({"rows": rows}, "on", "off")) == 3


def test_an_interleaved_point_with_errors_fails_the_verdict_and_is_left_out_of_ratios() -> None:
    rows = [
        _round_point("off", 0, 6000),
        _round_point("on", 0, 9000, errors=12),
        _round_point("off", 1, 6000),
        _round_point("on", 1, 5900),
    ]
    name, shown, ok = interleaved.verdict({"rows": rows}, "on", "off", 0.95, "x")
    assert ok is False and "12 errors" in shown and shown.startswith("0.983×")  # only round 1's ratio
    assert interleaved.verdict({"rows": rows[:1]}, "on", "off", 0.95, "x")[1:] == ("not measured", False)


def test_the_interleaved_table_gives_medians_and_the_range_of_ratios() -> None:
    rows = [
        _round_point("off", 0, 6000),
        _round_point("on", 0, 5700),
        _round_point("off", 1, 5000),
        _round_point("on", 1, 5000),
    ]
    text = "\n".join(interleaved.table({"rows": rows}, "off", "÷ off"))
    assert "| off | 2 | 5,500 | 1.00 | 5.00 | 0 | 1 |  |" in text
    assert "| on | 2 | 5,350 | 1.00 | 5.00 | 0 | 0.975× | 0.950–1.000 |" in text


def test_auth_targets_price_keys_on_and_the_limiter_against_keys_off() -> None:
    rows = [
        _round_point(auth_cost.OFF, 0, 6000),
        _round_point(auth_cost.KEYS, 0, 5760),  # 0.96×
        _round_point(auth_cost.LIMITED, 0, 4800),  # 0.80×: information, never a verdict
    ]
    assert [ok for *_, ok in auth_cost.targets({"rows": rows})] == [True, None]
    rows[1]["req_s"] = 5640.0  # 0.94×
    assert [ok for *_, ok in auth_cost.targets({"rows": rows})] == [False, None]
    assert auth_cost.targets({"rows": rows[1:]})[0][1:] == ("not measured", False)
    assert auth_cost.targets(None) == [] and auth_cost.targets({}) == []
    text = "\n".join(auth_cost.render({"rows": rows, "notes": ["a note"]}))
    assert "| keys on | 1 | 5,640 |" in text and "a note" in text
    assert auth_cost.render(None) == []
    assert "auth" in bench.SECTIONS


def test_observability_targets_price_tracing_and_records_against_the_default() -> None:
    cost = observability_cost
    rows = [
        _round_point(cost.DEFAULT, 0, 4000),
        _round_point(cost.TRACING, 0, 3900),  # 0.975×: within 3%
        _round_point(cost.RECORDS, 0, 3700),  # 0.925×: not within 5%
        _round_point(cost.NO_ACCESS_LOG, 0, 4400),
    ]
    assert [ok for *_, ok in cost.targets({"rows": rows})] == [True, False, None, False]  # metrics not measured
    # Prometheus metrics: 2 µs of a 250 µs request (4,000 req/s on one core) is 0.8%; 10 µs is 4%.
    assert cost.targets({"rows": rows, "metrics_us": 2.0})[-1][1:] == ("0.8% (2.00 µs of 250 µs a request)", True)
    assert cost.targets({"rows": rows, "metrics_us": 10.0})[-1][2] is False
    assert "| records: 10% to a file | 1 | 3,700 |" in "\n".join(cost.render({"rows": rows}))


def test_spread_targets_compare_more_models_with_one_round_by_round() -> None:
    rows = []
    for r, speed in enumerate([1.0, 0.7]):
        rows += [
            _round_point(spread.label(1), r, 5000 * speed),
            _round_point(spread.label(10), r, 4750 * speed),  # 0.95×
            _round_point(spread.label(100), r, 4250 * speed),  # 0.85×
        ]
    verdicts = spread.targets({"rows": rows})
    assert [ok for *_, ok in verdicts] == [True, False]
    assert "100 loaded models" in verdicts[1][0]
    assert spread.paths(3) == [f"/models/zipf-0{i}/versions/1/predict" for i in range(3)]
    assert "| 10 models | 2 |" in "\n".join(spread.render({"rows": rows}))


def test_cold_loads_are_summarised_by_kind_first_pass_apart_from_reloads() -> None:
    samples = [
        {"kind": "forest", "pass": 1, "status": 200, "seconds": 0.5, "size_mib": 8.0},
        {"kind": "forest", "pass": 1, "status": 200, "seconds": 0.7, "size_mib": 8.0},
        {"kind": "forest", "pass": 2, "status": 200, "seconds": 0.2, "size_mib": 8.0},
        {"kind": "forest", "pass": 3, "status": 503, "seconds": 0.1, "size_mib": 8.0},
        {"kind": "mlp", "pass": 2, "status": 200, "seconds": 0.1, "size_mib": 4.0},
    ]
    forest, mlp = spread.cold_summary(samples)
    assert (forest["first_p50_ms"], forest["reload_p50_ms"], forest["errors"]) == (700.0, 200.0, 1)
    assert forest["requests"] == 3 and forest["size_mib"] == 8.0
    assert mlp["first_p50_ms"] is None and mlp["reload_p99_ms"] == 100.0
    assert "| mlp | 4.0 | – | – | 100 | 100 | 1 | 0 |" in "\n".join(spread.render_cold({"samples": samples}))


def test_grpc_targets_read_the_batch_size_and_the_ratios_to_the_floor_and_mlserver() -> None:
    def point(server: str, label: str, req_s: float, **extra: Any) -> dict[str, Any]:
        return _row(server, 32, req_s) | {"point": label, "requests": 100} | extra

    rows = [
        point(grpc_rows.GATEWAY, grpc_rows.C32, 4000),
        point(grpc_rows.GATEWAY, grpc_rows.TRITON, 2000, requests_per_batch=4.5),
        point(grpc_rows.FLOOR, grpc_rows.C32, 6000),
        point(grpc_rows.MLSERVER, grpc_rows.C32, 1000),
    ]
    verdicts = grpc_rows.targets({"rows": rows})
    assert [ok for *_, ok in verdicts] == [True, False, True]  # 4.5 per batch; 0.67× the floor; 4× MLServer
    rows[1]["requests_per_batch"] = 1.2
    assert grpc_rows.targets({"rows": rows})[0][1:] == ("1.20 requests per batch", False)
    assert grpc_rows.targets({"rows": rows[2:]})[0][1] == "not measured"
    assert "| gateway | 32 connections | 4,000 |" in "\n".join(grpc_rows.render({"rows": rows}))


def test_grpc_targets_read_the_h2load_rows_where_both_servers_have_them() -> None:
    """The Python client limits the grpcio floor (it spends most of a CPU at the floor's rate):
    the ratios come from the h2load point where the gateway and the other server both have it."""

    def point(server: str, label: str, req_s: float) -> dict[str, Any]:
        return _row(server, 32, req_s) | {"point": label, "requests": 100}

    rows = [
        point(grpc_rows.GATEWAY, grpc_rows.C32, 1000),
        point(grpc_rows.FLOOR, grpc_rows.C32, 2000),
        point(grpc_rows.MLSERVER, grpc_rows.C32, 200),
        point(grpc_rows.GATEWAY, grpc_rows.C32_H2, 3000),
        point(grpc_rows.FLOOR, grpc_rows.C32_H2, 3600),
    ]
    _, floor, mlserver = grpc_rows.targets({"rows": rows})
    assert floor[1:] == ("0.83×", True) and grpc_rows.C32_H2 in floor[0]  # 3000 / 3600, not 1000 / 2000
    assert mlserver[1:] == ("5.00×", True) and grpc_rows.C32_H2 not in mlserver[0]  # no h2load row for MLServer
    rows[3]["errors"] = 7  # fast, but with errors (h2load sees a gRPC error as an answer; run.py counts them)
    assert grpc_rows.targets({"rows": rows})[1][1:] == ("0.83× (7 errors)", False)


# h2load's own lines (1.52): a 4xx or 5xx answer counts as failed, a 3xx as succeeded.
H2LOAD_OUTPUT = """finished in 2.00s, 6275.50 req/s, 631.72KB/s
requests: 12560 total, 12560 started, 12560 done, 12544 succeeded, 16 failed, 0 errored, 0 timeout
status codes: 12540 2xx, 4 3xx, 11 4xx, 5 5xx
"""
H2LOAD_REFUSED = """finished in 640us, 0.00 req/s, 0B/s
requests: 5 total, 0 started, 0 done, 0 succeeded, 5 failed, 5 errored, 0 timeout
status codes: 0 2xx, 0 3xx, 0 4xx, 0 5xx
"""


def test_h2load_output_reads_as_a_result_with_its_errors_and_percentiles() -> None:
    latencies = sorted(float(ms) for ms in range(1, 101))
    result = load_module.parse_h2load(H2LOAD_OUTPUT, latencies, client_cpu_s=0.5)
    assert (result.requests, result.errors, result.req_s) == (12540, 20, 6270.0)  # 16 failed (4xx, 5xx) + 4 3xx
    assert (result.p50_ms, result.p99_ms, result.tool) == (51.0, 100.0, "h2load")
    assert result.extra == {"client_cpu_s": 0.5, "seconds": 2.0, "first_error": None}
    refused = load_module.parse_h2load(H2LOAD_REFUSED, [], client_cpu_s=0.1)  # nothing listened
    assert (refused.requests, refused.errors, refused.req_s) == (0, 5, 0.0) and math.isnan(refused.p50_ms)
    assert refused.extra["first_error"] == "no call was answered"


def test_h2load_sends_the_request_as_a_grpc_client_does(tmp_path: Path) -> None:
    """drive_grpc(script="h2load") frames the serialized request as gRPC does: a real grpc
    server parses every call's message as the ModelInferRequest the bench built (and would
    answer a garbled one with an error h2load cannot see), on separate connections and on one
    shared connection."""
    if shutil.which("h2load") is None:
        missing("h2load is not installed (apt-get install nghttp2-client; make bench and .ci/run install it)")
    from concurrent import futures

    import grpc

    from gateway.protocols.proto import grpc_service_pb2 as pb

    body = oip_rows.write_bodies(tmp_path, harness.COLUMNS, harness.ROW).grpc
    sent = pb.ModelInferRequest.FromString(body.read_bytes())
    parsed: list[bool] = []

    def infer(request: pb.ModelInferRequest, context: grpc.ServicerContext) -> pb.ModelInferResponse:
        parsed.append(request == sent)
        return pb.ModelInferResponse(model_name=request.model_name)

    handler = grpc.method_handlers_generic_handler(
        "inference.GRPCInferenceService",
        {
            "ModelInfer": grpc.unary_unary_rpc_method_handler(
                infer,
                request_deserializer=pb.ModelInferRequest.FromString,
                response_serializer=pb.ModelInferResponse.SerializeToString,
            )
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        for shared in (False, True):
            parsed.clear()
            result = load_module.drive_grpc(
                f"127.0.0.1:{port}", body, connections=4, duration=1, shared=shared, script=load_module.H2LOAD
            )
            assert result.requests > 0 and result.errors == 0 and result.tool == "h2load"
            assert 0 < result.p50_ms <= result.p99_ms
            assert len(parsed) >= result.requests and all(parsed)
    finally:
        server.stop(grace=None)


def test_wrk_spreads_requests_over_paths_by_weight_as_loadgen_does(tmp_path: Path) -> None:
    """bench/post.lua draws each request's path by the weights load.drive gives it."""
    if shutil.which("wrk") is None:
        missing("wrk is not installed (apt-get install wrk; make bench and .ci/run install it)")
    hits: collections.Counter[str] = collections.Counter()

    class Count(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed ACK

        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            self.rfile.read(int(self.headers["Content-Length"]))
            hits[self.path] += 1
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Count)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    body = tmp_path / "body.json"
    body.write_text("{}")
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        result = load_module.drive(url, body, connections=2, duration=1, paths=["/a", "/b", "/c"], zipf=1.0)
    finally:
        server.shutdown()
    assert set(hits) == {"/a", "/b", "/c"} and result.errors == 0
    # Weights 1, 1/2, 1/3: /a about twice /b and three times /c, over hundreds of requests.
    assert sum(hits.values()) >= 300
    assert 1.4 < hits["/a"] / hits["/b"] < 2.8 and 2.0 < hits["/a"] / hits["/c"] < 4.5


def test_lane_targets_take_the_floor_ratio_the_access_log_and_the_c1_gap_round_by_round() -> None:
    rows = []
    for r, speed in enumerate([1.0, 0.8, 0.6]):
        rows += [
            _round_point(lane.FLOOR_32, r, 20000 * speed),
            _round_point(lane.GATEWAY_32, r, 10400 * speed),  # 0.52×
            _round_point(lane.LOGGED_32, r, 9880 * speed),  # 0.95× the gateway without it
            _round_point(lane.FLOOR_1, r, 8000) | {"p50_ms": 0.12},
            _round_point(lane.GATEWAY_1, r, 3000) | {"p50_ms": 0.12 + 0.15 + 0.01 * r},
        ]
    verdicts = lane.targets({"rows": rows})
    assert [ok for *_, ok in verdicts] == [True, True, True, None, None]  # the predicting floor: not measured
    assert verdicts[2][1].startswith("+0.160 ms (median of 3 rounds")
    assert [shown for _, shown, _ in verdicts[3:]] == ["not measured", "not measured"]
    for entry in rows:
        if entry["point"] == lane.GATEWAY_1:
            entry["p50_ms"] += 0.1  # 0.26 ms above the floor
    assert lane.targets({"rows": rows})[2][2] is False
    assert lane.targets({"rows": rows[:3]})[2][1:] == ("not measured", False)
    assert "| bare ASGI floor, access log off, 32 conns | 3 |" in "\n".join(lane.render({"rows": rows}))
    for r, speed in enumerate([1.0, 0.8, 0.6]):  # the predicting floor: 0.6x the bare one, the gateway 0.52x
        rows.append(_round_point(lane.PREDICTING_32, r, 12000 * speed))
        rows.append(_round_point(lane.PREDICTING_1, r, 5000) | {"p50_ms": 0.12 + 0.1})
    reach = lane.targets({"rows": rows})[3:]
    assert [(shown.split(" (")[0], ok) for _, shown, ok in reach] == [
        ("0.600×", None),
        ("0.867×", None),
        ("+0.100 ms", None),
    ]


def test_no_bench_module_shadows_the_standard_library() -> None:
    """bench/ goes first on sys.path here and when the bench runs: a bench/profile.py was
    imported by cProfile in place of the standard library's profile, failing 421 tests."""
    shadowing = {path.stem for path in BENCH.glob("*.py")} & sys.stdlib_module_names
    assert not shadowing, f"bench modules named like standard library modules: {sorted(shadowing)}"


def test_per_cpu_ratios_compare_the_servers_own_cpu_a_request() -> None:
    rows = [
        _round_point("off", 0, 6000) | {"cpu_us": 100.0},
        _round_point("on", 0, 5000) | {"cpu_us": 102.0},  # slower here, for the load generator's sake
        _round_point("off", 1, 6000) | {"cpu_us": 90.0},
        _round_point("on", 1, 6000),  # no CPU figure: no per-CPU ratio from this round
    ]
    data = {"rows": rows}
    assert interleaved.ratios(data, "on", "off", per_cpu=True) == pytest.approx([100 / 102])
    assert interleaved.verdict(data, "on", "off", 0.97, "x", per_cpu=True)[2] is True
    assert interleaved.verdict(data, "on", "off", 0.97, "x")[2] is False  # by throughput: 0.917×, 1.0×
    text = "\n".join(interleaved.table(data, "off", "÷ off"))
    assert "server CPU µs a request" in text
    assert "| on | 2 | 5,500 | 1.00 | 5.00 | 0 | 0.917× | 0.833–1.000 | 102.0 | 0.980× | 0.980–0.980 |" in text


# --- paired (bench/paired.py) ---------------------------------------------------------------------


def test_paired_summary_gives_each_ratios_mean_median_spread_and_standard_error() -> None:
    rounds = [{"req_s": r, "cpu": c} for r, c in ((0.90, 0.92), (1.00, 0.98), (0.95, 0.94), (0.97, 0.96))]
    got = paired.summary(rounds)
    assert got["rounds"] == 4
    assert got["req_s_mean"] == pytest.approx(0.955) and got["req_s_median"] == pytest.approx(0.96)
    assert got["cpu_mean"] == pytest.approx(0.95) and got["cpu_median"] == pytest.approx(0.95)
    assert got["req_s_sd"] == pytest.approx(statistics.stdev([0.90, 1.00, 0.95, 0.97]))
    assert got["req_s_sem"] == pytest.approx(got["req_s_sd"] / 2)
    assert paired.summary(rounds[:1])["req_s_sd"] == 0.0  # one round: no spread to speak of


SPINNER = """
import sys, threading, time
spun = threading.Event()
def spin():
    end = time.thread_time() + 0.3
    while time.thread_time() < end:
        pass
    spun.set()
    threading.Event().wait()  # idle until the process is killed
threading.Thread(target=spin, name="spinner", daemon=True).start()
spun.wait()
print("ready", flush=True)
sys.stdin.read()  # idle until the test kills it
"""


def test_a_process_cpu_is_read_by_thread_and_its_threads_named_by_py_spy() -> None:
    """What ``paired.py --threads`` prints: each thread's CPU from /proc, named with py-spy."""
    import subprocess

    import servers

    if not shutil.which("py-spy") and not (Path(sys.executable).parent / "py-spy").exists():
        missing("py-spy is not installed (the dev extra)")
    child = subprocess.Popen([sys.executable, "-c", SPINNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        names = servers.thread_names(child.pid)
        cpu = servers.thread_cpu_seconds(child.pid)
        assert set(names.values()) == {"MainThread", "spinner"}
        assert set(names) <= set(cpu)
        (spinner,) = (tid for tid, name in names.items() if name == "spinner")
        assert cpu[spinner] >= 0.2  # it spun 0.3 s of CPU before it slept (clock ticks: 0.01 s)

        class Gateway:
            def thread_names(self) -> dict[int, str]:
                return names

            def thread_cpu_seconds(self) -> dict[int, float]:
                return cpu

        before = dict.fromkeys(cpu, 0.0)
        before[spinner] = cpu[spinner] - 0.1
        by_name = paired._by_thread_name(Gateway(), before, 1000)
        assert by_name["spinner"] == pytest.approx(100.0)  # 0.1 s over 1,000 requests: 100 us each
    finally:
        child.kill()
        child.wait()


# --- the fleet section (bench/fleet.py) -------------------------------------------------------


def _fleet_row(proxy: str, **overrides: Any) -> dict[str, Any]:
    zipf = load_module.Result(req_s=3000.0, p50_ms=4.0, p99_ms=20.0, errors=0, requests=60_000, tool="wrk")
    row = fleet.proxy_row(
        proxy,
        start_loads=0.0,
        zipf=zipf,
        loads={"zipf-00": 2.0, "zipf-01": 1.0, "zipf-02": 1.0, "untouched": 3.0},
        requests={"zipf-00": 900.0, "zipf-01": 80.0, "zipf-02": 20.0, "untouched": 0.0},
        hot={"gateway-1": 550.0, "gateway-2": 450.0, "gateway-3": 0.0},
    )
    return row | overrides


def test_fleet_rows_count_loads_per_model_touched_and_the_hot_models_shares() -> None:
    row = _fleet_row(fleet.BOUNDED)
    assert (row["models_touched"], row["loads"]) == (3, 4.0)  # the untouched model's loads do not count
    assert row["loads_per_model"] == pytest.approx(4 / 3)
    assert row["hot_replicas"] == 2 and row["hot_shares"] == pytest.approx([0.55, 0.45, 0.0])


def test_fleet_targets_judge_the_bounded_proxy_and_the_rolling_restart() -> None:
    restart = {"requests": 5000, "failed": 0, "steady_p99_ms": 10.0, "restart_p99_ms": 25.0, "restart_seconds": 60.0}
    restart |= {"steady_req_s": 3000.0, "restart_req_s": 2500.0}
    data = {"proxies": [_fleet_row(fleet.BOUNDED), _fleet_row(fleet.NGINX, hot_replicas=1, hot_shares=[1.0])]}
    verdicts = fleet.targets(data | {"restart": restart})
    assert [ok for *_, ok in verdicts] == [True, False, True, True, True]  # 1.33 loads a model: over 1.3
    hot = _fleet_row(fleet.BOUNDED, hot_replicas=2, hot_shares=[0.7, 0.3])
    assert fleet.targets({"proxies": [hot]})[2][2] is False  # the busiest replica took 70%
    late = restart | {"restart_p99_ms": 31.0, "failed": 2}
    assert [ok for *_, ok in fleet.targets({"restart": late})] == [False, False]
    assert fleet.targets({"proxies": [_fleet_row(fleet.BOUNDED, start_loads=36.0)]})[0][2] is False
    report = "\n".join(fleet.render(data | {"restart": restart}))
    assert "| haproxy, as shipped | 0 | 3,000 |" in report and "| 55% / 45% / 0% |" in report


SHIPPED_HAPROXY = (Path(__file__).resolve().parents[1] / "deploy" / "haproxy" / "haproxy.cfg").read_text()


def test_the_fleet_benchs_haproxy_runs_the_shipped_routing_on_loopback() -> None:
    config = fleet.haproxy_config(SHIPPED_HAPROXY, http_port=9100, grpc_port=9101, gateways=[9001, 9002], sync=9009)
    assert "bind 127.0.0.1:9100" in config and "bind 127.0.0.1:9101" in config
    servers = [line.split()[1:3] for line in config.splitlines() if line.strip().startswith("server gateway-")]
    # HTTP, then gRPC, then each for hot models
    assert servers == [["gateway-1", "127.0.0.1:9001"], ["gateway-2", "127.0.0.1:9002"]] * 4
    assert "server sync 127.0.0.1:9009" in config
    assert "hash-balance-factor" in config and "balance hash" in config
    hot = [line.split()[1] for line in config.splitlines() if line.strip().startswith("use_backend")]
    # a hot model: a share over a tenth and 1.5 times a fair one, or alone; on either protocol
    assert hot == ["registry_sync", *["registry_gateways_hot"] * 2, *["registry_gateways_grpc_hot"] * 2]
    every = fleet.bound_on_every_model(config)
    assert [line.split()[1] for line in every.splitlines() if line.strip().startswith("use_backend")] == hot[:1]
    assert every.count("hash-balance-factor 150") == 4 == 2 * config.count("hash-balance-factor 150")
    plain = "\n".join(line for line in fleet.round_robin(config).splitlines() if not line.lstrip().startswith("#"))
    assert "hash-balance-factor" not in plain and "balance hash" not in plain and "balance hdr" not in plain
    assert plain.count("balance roundrobin") == 4
    # the rewritten files are still ones HAProxy accepts
    import subprocess
    import tempfile

    from tests.deploy.proxies import debian_binary

    haproxy = debian_binary("haproxy", "haproxy")
    for text in (config, every, fleet.round_robin(config)):
        with tempfile.NamedTemporaryFile("w", suffix=".cfg") as written:
            written.write(text)
            written.flush()
            checked = subprocess.run([haproxy, "-c", "-f", written.name], capture_output=True, text=True)
            assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_fleet_bench_reads_loads_and_requests_from_metrics() -> None:
    metrics = "\n".join(
        [
            'gateway_model_loads_total{model="a",outcome="success",version="1"} 2.0',
            'gateway_model_loads_total{model="a",outcome="failure",version="2"} 5.0',
            'gateway_model_loads_total{model="b",outcome="success",version="1"} 1.0',
            'gateway_requests_total{model="a",status="200",version="1"} 7.0',
            'gateway_requests_total{model="a",status="400",version="1"} 1.0',
        ]
    )
    assert fleet.successful_loads(metrics) == {"a": 2.0, "b": 1.0}
    assert fleet.counters(metrics, "gateway_requests", label="model") == {"a": 8.0}


def _flavor_row(flavor: str, server: str, connections: int, req_s: float, p50_ms: float) -> dict[str, Any]:
    return {"flavor": flavor, "server": server, "connections": connections, "req_s": req_s, "p50_ms": p50_ms}


def test_the_flavor_rows_judge_each_flavor_against_mlflow_and_the_builds_against_blocking() -> None:
    gateway, mlflow = flavor_rows.GATEWAY, flavor_rows.MLFLOW
    data: dict[str, Any] = {
        "rows": [
            _flavor_row("xgboost", gateway, 1, 900, 1.1),
            _flavor_row("xgboost", gateway, 32, 2000, 15),
            _flavor_row("xgboost", mlflow, 1, 300, 3.0),
            _flavor_row("xgboost", mlflow, 32, 400, 80),
            _flavor_row("prophet", gateway, 32, 50, 600),
            _flavor_row("prophet", mlflow, 32, 100, 300),
        ],
        "first": [
            {"flavor": "sklearn", "seconds": 8.0, "slowest_other_ms": None},
            {"flavor": "xgboost", "seconds": 12.5, "slowest_other_ms": 40.0, "other_answers": 200},
        ],
        "notes": ["mlflow models serve, keras: a note"],
    }
    assert flavor_rows.ratios(data) == {"xgboost": 5.0, "prophet": 0.5}
    verdicts = {name.split(":")[1].split(",")[0].strip(): (value, ok) for name, value, ok in flavor_rows.targets(data)}
    assert verdicts["the gateway's c32 throughput >= mlflow models serve's"] == ("behind on prophet", False)
    assert verdicts["a loaded version's slowest answer while another flavor's environment builds <= 1000 ms"] == (
        "40 ms",
        True,
    )
    report = "\n".join(flavor_rows.render(data))
    assert "| `xgboost` | 1.10 ms | 3.00 ms | 2000 | 400 | 5.00× | 12.5 s | 40 ms |" in report
    assert "| `prophet` | — | — | 50 | 100 | 0.50× | — | — |" in report
    assert "a note" in report and flavor_rows.render(None) == [] and flavor_rows.targets(None) == []


def test_the_flavor_bench_measures_the_suites_own_matrix() -> None:
    """The newest stored flavors run measured every flavor the suite checks, on both servers at
    each connection count, and the first answer of each (or says why not): a flavor added to
    tests/flavors/models.py without a run of the bench, or a run that dropped one, fails here."""
    import json

    from tests.flavors.models import FLAVORS

    assert "flavors" in bench.SECTIONS
    stored = sorted(p for p in (Path(__file__).resolve().parents[1] / "bench" / "results").glob("*.json"))
    newest = next(p for p in reversed(stored) if "flavors" in json.loads(p.read_text()))
    data = json.loads(newest.read_text())["flavors"]
    measured = {(row["flavor"], row["server"], row["connections"]) for row in data["rows"]}
    wanted = {
        (flavor.key, server, connections)
        for flavor in FLAVORS
        for server in (flavor_rows.GATEWAY, flavor_rows.MLFLOW)
        for connections in flavor_rows.CONNECTIONS
    }
    noted = " ".join(data["notes"])
    assert [w for w in sorted(wanted - measured) if f", {w[0]}:" not in noted] == [], newest.name
    first = {row["flavor"] for row in data["first"]}
    assert [f.key for f in FLAVORS if f.key not in first and f"first answer, {f.key} " not in noted] == [], newest.name


def test_the_fleet_figures_in_the_docs_are_the_results_file_they_cite() -> None:
    """bench/README.md's fleet table and deploy/README.md's sentence quote the run they name."""
    import json
    import re

    root = Path(__file__).resolve().parents[1]
    readme = (root / "bench" / "README.md").read_text()
    section = readme[readme.index("## A fleet (`--only fleet`") :]
    section = section[: section.index("\n## ")]
    (cited,) = set(re.findall(r"bench/results/(\d{8}T\d{6}Z)\.md", section))
    data = json.loads((root / "bench" / "results" / f"{cited}.json").read_text())["fleet"]
    names = {
        fleet.BOUNDED: "HAProxy as shipped",
        fleet.EVERY_MODEL: "HAProxy, bound on every model",
        fleet.ROUND_ROBIN: "HAProxy, round robin",
        fleet.NGINX: "nginx, hash",
    }
    for row in data["proxies"]:
        shares = " / ".join(f"{share * 100:.0f}%" for share in row["hot_shares"])
        line = (
            f"| {names[row['proxy']]} | {row['zipf_req_s']:,.0f} | {row['loads']:g} | "
            f"{row['loads_per_model']:.2f} | {shares} |"
        )
        assert line in section, line
    restart = data["restart"]
    assert f"0 failed\nof {restart['requests']:,} requests" in section and restart["failed"] == 0
    ratio = restart["restart_p99_ms"] / restart["steady_p99_ms"]
    assert (
        f"p99 {restart['restart_p99_ms']:.0f} ms against {restart['steady_p99_ms']:.0f} ms steady ({ratio:.2f}×)"
        in section
    )
    rows = {row["proxy"]: row for row in data["proxies"]}
    deploy = " ".join((root / "deploy" / "README.md").read_text().split())
    every, shipped = rows[fleet.EVERY_MODEL], rows[fleet.BOUNDED]
    assert f"`bench/results/{cited}.md`" in deploy
    assert (
        f"cost {every['loads']:g} loads for 60 models and {every['zipf_req_s']:,.0f} requests a second, the bound on "
        f"hot models only {shipped['loads']:g} loads"
    ) in deploy
    assert f"and {shipped['zipf_req_s']:,.0f} requests a second" in deploy


def test_the_stream_figures_in_the_docs_are_the_results_file_they_cite() -> None:
    """bench/README.md's Streams table quotes the stored run it names, figure by figure (as the
    fleet's does): a figure typed by hand, or a run claimed that is not stored, fails here."""
    import json
    import re

    root = Path(__file__).resolve().parents[1]
    readme = (root / "bench" / "README.md").read_text()
    section = readme[readme.index("## Streams (`bench/streams.py`") :]
    section = section[: section.index("\n## ")] if "\n## " in section else section
    files = set(re.findall(r"`bench/results/(streams-[\w-]+)\.json`", section))
    (traced_file,) = {name for name in files if name.startswith("streams-mlflow-traces-")}
    (cited,) = files - {traced_file}
    data = json.loads((root / "bench" / "results" / f"{cited}.json").read_text())
    traced_run = json.loads((root / "bench" / "results" / f"{traced_file}.json").read_text())
    assert traced_run["mlflow_traces"] is True and not data["mlflow_traces"]
    first, many, traced = data["first_event"], data["concurrent"], traced_run["first_event"]
    readers, closing = data["slow_reader"], data["disconnect_to_close"]
    rss = many["rss_peak_mb"] - many["rss_before_mb"]
    expected = [
        f"(p50 of {first['rounds']}) | {first['raw_socket_gateway_p50_ms']:.2f} ms | "
        f"{first['in_process_p50_ms']:.2f} ms (`predict_stream` to its first chunk) | "
        f"overhead **{first['raw_socket_overhead_p50_ms']:.2f} ms**",
        f"`GET /ping` on that connection (p50) | {first['raw_socket_ping_p50_ms']:.2f} ms |",
        f"the same first event read with httpx (p50) | {first['gateway_p50_ms']:.2f} ms |",
        f"(`/ping` with it: {first['ping_p50_ms']:.2f} ms)",
        f"lease to first chunk, mean) | {first['gateway_inside_mean_ms']:.2f} ms |",
        f"the same body answered whole (p50, httpx) | {first['whole_answer_p50_ms']:.2f} ms |",
        f"| {many['streams']} concurrent streams on one process, {many['chunks_each']} chunks each",
        f"| {many['completed']} of {many['streams']} ended with `[DONE]`, none dropped; "
        f"slowest {many['slowest_s']:.1f} s |",
        f"RSS {many['rss_before_mb']:.0f} MB before, {many['rss_peak_mb']:.0f} MB at its peak (+{rss:.0f} MB, "
        f"~{rss * 1024 / many['streams']:.0f} KB a stream)",
        " / ".join(f"{r['pause_s']:g} s" for r in readers)
        + f" ({readers[0]['chunks_in_stream']:,} chunks in the stream)",
        "the model was asked for " + " / ".join(f"{r['chunks_yielded']:,}" for r in readers) + " chunks",
        f"(p50, max of {closing['rounds']}) | {closing['p50_ms']:.1f} ms, {closing['max_ms']:.1f} ms |",
        f"`bench/results/{traced_file}.json`, p50s) | {traced['gateway_p50_ms']:.1f} ms | "
        f"{traced['in_process_p50_ms']:.1f} ms |",
    ]
    assert [line for line in expected if line not in section] == []
    assert all(r["ended"] == "cancelled" for r in readers) and many["completed"] == many["streams"]
    # every run the section speaks of is stored: no "over four runs" where the JSON holds two
    counted = re.findall(r"over (\w+) runs", section)
    assert counted == [], f"runs counted in the text, not in {cited}.json: {counted}"


def test_the_sandbox_cost_in_the_security_docs_is_the_results_file_it_cites() -> None:
    """docs/security.md's per-call cost of the sandbox quotes each bench/sandbox_calls.py run it
    names (this tree's and the main branch's, run alternately), figure for figure."""
    import json
    import re

    root = Path(__file__).resolve().parents[1]
    text = " ".join((root / "docs" / "security.md").read_text().split())
    cited = re.findall(r"`bench/results/(sandbox-calls-\d{8}T\d{6}Z)\.json`", text)
    assert len(cited) >= 2, cited
    for name in cited:
        run = json.loads((root / "bench" / "results" / f"{name}.json").read_text())
        quoted = (
            f"`bench/results/{name}.json`: {run['plain_us']:.0f} µs without the sandbox, "
            f"{run['sandbox_us']:.0f} µs with it, {run['difference_us']:+.0f} µs a call"
        )
        assert quoted in text, quoted


def test_the_job_p99_figures_in_the_docs_are_the_results_files_they_cite() -> None:
    """bench/README.md's jobs p99 table quotes the stored runs it names, figure by figure, each
    round's p99 of at least 2,000 requests during jobs; its verdicts on issue 52's target
    (within twice the idle p99) are the runs' medians'."""
    import json
    import re

    root = Path(__file__).resolve().parents[1]
    readme = (root / "bench" / "README.md").read_text()
    section = readme[readme.index("## A request's p99 during a job") :]
    section = section[: section.index("\n## ")] if "\n## " in section else section
    cited = sorted(set(re.findall(r"`bench/results/(jobs-p99-[\w-]+)\.json`", section)))
    assert len(cited) == 9
    text = " ".join(section.split())
    for name in cited:
        run = json.loads((root / "bench" / "results" / f"{name}.json").read_text())
        rates = sorted(run["job_rows_per_s"])
        row = (
            f"`bench/results/{name}.json` | {run['idle_p99_ms_median']:.2f} ms | {run['job_p99_ms_median']:.2f} ms | "
            f"{run['ratio_median']:.2f} | {run['ratio_pooled']:.2f} | "
            f"{min(run['job_requests'])}-{max(run['job_requests'])} | "
            f"{min(run['jobs'])}-{max(run['jobs'])} | {rates[0]:,}-{rates[-1]:,} |"
        )
        assert row in section, row
        assert run["repeat"] == len(run["idle_p99_ms"]) >= 3 and run["rows"] == 1_000_000
        assert min(run["job_requests"]) >= 2000
        where = "a jobs process" if run["jobs_process"] else "one process"
        verdict = "met" if run["ratio_median"] <= 2 else "not met"
        assert f"with {where} **{verdict}** ({run['ratio_median']:.2f} times" in text, (where, verdict)


def test_the_job_figures_in_the_bench_readme_are_the_results_file_they_cite() -> None:
    """bench/README.md's file-scoring table (bench/jobs.py, issue 52) quotes the stored run it
    names, arm by arm: rows a second (median and best) and the median against the floor."""
    import json
    import re

    root = Path(__file__).resolve().parents[1]
    readme = (root / "bench" / "README.md").read_text()
    section = readme[readme.index("## Scoring a file (`bench/jobs.py`") :]
    section = section[: section.index("\n## ")] if "\n## " in section else section
    (cited,) = set(re.findall(r"`bench/results/(jobs-[\w-]+-\d{8})\.json`", section))
    run = json.loads((root / "bench" / "results" / f"{cited}.json").read_text())
    floor = run["arms"]["floor"]["rows_per_s_median"]
    rows = {line.split("|")[1].strip(): line for line in section.splitlines() if line.startswith("| `")}
    assert set(rows) == {f"`{name}`" for name in run["arms"]}, (set(rows), set(run["arms"]))
    for name, arm in run["arms"].items():
        quoted = (
            f"| {arm['rows_per_s_median']:,} | {arm['rows_per_s_best']:,} | "
            f"{arm['rows_per_s_median'] / floor:.2f} | {len(arm['seconds'])} |"
        )
        assert quoted in rows[f"`{name}`"], (name, quoted)
    assert f"{run['rows']:,} rows" in section and f"{run['row_groups']} row groups" in section
    # the spread of the rounds quoted in the prose, and the gateway against the floor
    text = " ".join(section.split())
    for name, quoted in re.findall(r"the (\w+)'s (?:\w+ rounds took )?(\d+\.\d\d to \d+\.\d\d) s", text):
        seconds = run["arms"][name]["seconds"]
        assert quoted == f"{min(seconds):.2f} to {max(seconds):.2f}", (name, quoted)
    if "gateway" in run["arms"]:
        ratio = run["arms"]["gateway"]["rows_per_s_median"] / floor
        assert f"The gateway's median is {ratio:.2f} of the floor's" in text
        assert f"by CPU seconds {run['gateway_to_floor_cpu_median']:.2f} of the floor's" in text


def test_the_job_figures_in_the_performance_docs_are_the_runs_they_cite() -> None:
    """docs/performance.md's jobs table (issue 52: rows a second against the floor, one process,
    a jobs process, three replicas) quotes bench/jobs.py's stored runs row by row."""
    import json
    import re
    import statistics

    root = Path(__file__).resolve().parents[1]
    docs = (root / "docs" / "performance.md").read_text()
    section = docs[docs.index("## Jobs beside requests (issue 52)") :]
    section = section[: section.index("\n## ")] if "\n## " in section else section
    cited = re.findall(r"\| `bench/results/(jobs-iris-1m-[\w-]+)\.json` \|", section)
    assert len(cited) == 10, cited
    for name in cited:
        run = json.loads((root / "bench" / "results" / f"{name}.json").read_text())
        floor, gateway = run["arms"]["floor"], run["arms"]["gateway"]
        by_cpu = f"{run['gateway_to_floor_cpu_median']:.2f}" if "gateway_to_floor_cpu_median" in run else "-"
        jobs_process = "yes" if run.get("jobs_process") else "no"
        row = (
            f"| `bench/results/{name}.json` | {run.get('replicas', 1)} | {jobs_process} | "
            f"{len(gateway['seconds'])} | {gateway['rows_per_s_median']:,} | {floor['rows_per_s_median']:,} | "
            f"{run['gateway_to_floor_median']:.2f} | {by_cpu} | "
            f"{min(gateway['seconds']):.2f}-{max(gateway['seconds']):.2f} s | "
            f"{statistics.median(gateway['job_seconds']):.2f} s |"
        )
        assert row in section, row
    # the prose quotes the same runs: the p99 verdicts, and three replicas against one
    text = " ".join(section.split())
    for name, where in (
        ("jobs-p99-inprocess-20261126", "with one process"),
        ("jobs-p99-jobs-process-20261126", "with a jobs process"),
        ("jobs-p99-share-20261126", "run at 12:06 with nothing else on the VM)"),
    ):
        ratio = json.loads((root / "bench" / "results" / f"{name}.json").read_text())["ratio_median"]
        assert f"{where} {ratio:.2f} times, **{'met' if ratio <= 2 else 'not met'}**" in text, (where, ratio)
    one, three = (
        json.loads((root / "bench" / "results" / f"{name}.json").read_text())
        for name in ("jobs-iris-1m-whole-20261126", "jobs-iris-1m-replicas3-20261126")
    )
    quoted = (
        f"scored {three['arms']['gateway']['rows_per_s_median']:,} rows a second against one replica's "
        f"{one['arms']['gateway']['rows_per_s_median']:,}"
    )
    assert quoted in text, quoted


@pytest.mark.parametrize(
    "heading", ["## Identity provider tokens and usage (issue 53)", "## Inference tables' cost (issue 50)"]
)
def test_the_paired_figures_in_the_performance_docs_are_the_runs_they_cite(heading: str) -> None:
    """docs/performance.md's tables of paired runs (issue 53's --oidc and --usage, issue 50's
    inference tables) quote bench/paired.py's stored runs row by row: each row's rounds, B/A
    means, medians and standard errors are its file's, as the summary wrote them."""
    import json
    import re

    root = Path(__file__).resolve().parents[1]
    docs = (root / "docs" / "performance.md").read_text()
    section = docs[docs.index(heading) :]
    section = section[: section.index("\n## ")] if "\n## " in section else section
    rows = [line for line in section.splitlines() if line.startswith("|") and "`bench/results/" in line]
    assert len(rows) >= 2
    for row in rows:
        (cited,) = re.findall(r"`bench/results/([\w.-]+\.json)`", row)
        data = json.loads((root / "bench" / "results" / cited).read_text())
        summary = data["summary"]
        assert len(data["rounds"]) == summary["rounds"]
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert cells[2:7] == [
            str(summary["rounds"]),
            f"{summary['req_s_mean']:.3f}",
            f"{summary['req_s_median']:.3f}",
            f"{summary['req_s_sem']:.3f}",
            f"{summary['cpu_median']:.3f}",
        ], cited
        ratios = sorted(r["req_s"] for r in data["rounds"])
        if "rounds" in cells[7]:  # the rounds' spread, where the row gives it
            assert f"{ratios[0]:.3f}–{ratios[-1]:.3f}" in cells[7], cited


def test_the_traces_cost_quoted_in_docs_is_the_stored_runs() -> None:
    """docs/observability.md's figures for GATEWAY_RECORDS_TRACES are those of the run it cites
    (bench/trace_cost.py: CPU time, not wall)."""
    import json
    import re

    text = (BENCH.parent / "docs" / "observability.md").read_text()
    section = text[text.index("## Predictions as MLflow traces") : text.index("## Production figures in MLflow")]
    (name,) = re.findall(r"`bench/results/(trace-cost-\d{8}T\d{6}Z)\.json`", section)
    run = json.loads((BENCH / "results" / f"{name}.json").read_text())
    quoted = " ".join(section[section.index("<!-- trace-cost -->") : section.index("<!-- end -->")].split())
    expected = (
        f"<!-- trace-cost -->the append costs the request {run['offer_cpu_ns'] / 1000:.2f} µs of CPU; "
        f"the writer thread spends {run['writer_cpu_us_per_trace'] / 1000:.1f} ms of CPU a trace and "
        f"{run['writer_cpu_us_per_expectation'] / 1000:.1f} ms an expectation (MLflow's Python client: a core "
        f"writes about {round(1e6 / run['writer_cpu_us_per_trace'], -1):.0f} traces a second), with "
        f"{run['mlflow_calls_per_trace']:.2f} calls to MLflow a trace at batches of {run['batch']} and "
        f"{run['mlflow_calls_per_expectation']:.0f} a label"
    )
    assert quoted == expected
