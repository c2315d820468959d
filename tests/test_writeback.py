"""Production figures written back to a real `mlflow server` by the sync leader, and
``registry-gateway evaluate`` scoring a version's labelled predictions with MLflow's tools.

One server for the module: iris version 1 logged as MLflow 3 logs it (a LoggedModel), and
``iris-2x`` version 1 registered as MLflow 2.x did (files logged to a run, no LoggedModel).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from sklearn.metrics import accuracy_score, f1_score

from gateway.demo import IRIS, iris_frame, log_iris_version, using_registry
from registry_sync.database import make_engine, upgrade
from registry_sync.figures import FiguresStore, VersionFigures
from registry_sync.repository import StateStore, StateUnavailable
from registry_sync.writeback import OperationalFigures, Writeback, logged_model_id
from registry_sync.writeback_marks import Mark, Pending, WritebackMarks
from tests.conftest import iris_split, running_gateway, settings_under
from tests.support.postgres import postgres_database
from tests.support.servers import BIN, SERVED_SKLEARN_FORMAT, Process, gateway_server, mlflow_server
from tests.support.tables import Expected, iris_tables
from tests.support.waiting import until, wait_until

pytestmark = pytest.mark.anyio

IRIS_2X = "iris-2x"
EXPERIMENT = "registry-gateway production"
ROOT = Path(__file__).parent.parent
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Process, str, Path]]:
    root = tmp_path_factory.mktemp("writeback-mlflow")
    process = mlflow_server(root)
    process.start()
    uri = process.health_url.removesuffix("/health")
    with using_registry(uri) as client:
        version = log_iris_version(IRIS, c=0.05, serialization_format=SERVED_SKLEARN_FORMAT)
        assert version == 1
        _register_as_mlflow_2x(client)
    try:
        yield process, uri, root
    finally:
        process.stop()


def _register_as_mlflow_2x(client: MlflowClient) -> None:
    """A version whose files were logged to a run and registered from there (MLflow 2.x's way):
    its source is the run's artifacts, and no LoggedModel stands behind it."""
    from sklearn.linear_model import LogisticRegression

    features, target = iris_frame()
    model = LogisticRegression(C=1.0, max_iter=1000).fit(features, target)
    with tempfile.TemporaryDirectory() as saved, mlflow.start_run(run_name="iris-2x") as run:
        mlflow.sklearn.save_model(
            model, f"{saved}/model", serialization_format=SERVED_SKLEARN_FORMAT, pip_requirements=["scikit-learn"]
        )
        mlflow.log_artifacts(f"{saved}/model", "model")
    client.create_registered_model(IRIS_2X)
    made = client.create_model_version(IRIS_2X, f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    assert logged_model_id(made.source) is None and not made.model_id


def _production_run(client: MlflowClient, name: str, version: int) -> Any:
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None, "the write-back made no experiment"
    runs = client.search_runs([experiment.experiment_id], filter_string=f"run_name = '{name} v{version}'")
    assert len(runs) == 1, runs
    return runs[0]


async def _runs(client: MlflowClient) -> tuple[str, str]:
    """The production runs of iris v1 and iris-2x v1, once the write-back has made them."""

    def made() -> bool:
        try:
            _production_run(client, IRIS, 1), _production_run(client, IRIS_2X, 1)
        except AssertionError:
            return False
        return True

    await until(made, "the write-back's runs", timeout=60)
    return _production_run(client, IRIS, 1).info.run_id, _production_run(client, IRIS_2X, 1).info.run_id


def _requests_logged(client: MlflowClient, *runs: str) -> tuple[float, ...]:
    return tuple(sum(_history(client, run, "production_requests")) for run in runs)


def _history(client: MlflowClient, run_id: str, key: str) -> list[float]:
    return [m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.timestamp)]


async def _send(gateway: Any, name: str, count: int) -> None:
    for n in range(count):
        response = await gateway.client.post(f"/models/{name}/versions/1/predict", json=iris_split([ROWS[n % 3]]))
        assert response.status_code == 200, response.text


async def test_the_leaders_write_back_puts_production_figures_on_the_versions_logged_model_and_the_2x_run(
    server: tuple[Process, str, Path], tmp_path: Path
) -> None:
    _, uri, _ = server
    client = MlflowClient(uri)
    model_id = logged_model_id(client.get_model_version(IRIS, "1").source)
    assert model_id is not None
    settings = settings_under(tmp_path, mlflow_writeback_seconds=0.2, follow_interval_seconds=0.1)
    async with running_gateway(settings, uri) as gateway:
        await _send(gateway, IRIS, 7)
        await _send(gateway, IRIS_2X, 4)
        run, run_2x = await _runs(client)
        await until(lambda: _requests_logged(client, run, run_2x) >= (7, 4), "the write-back of both", timeout=60)
        assert _requests_logged(client, run, run_2x) == (7, 4)
        # More traffic: only it is logged next (each write holds the requests since the last).
        await _send(gateway, IRIS, 3)
        await until(lambda: _requests_logged(client, run, run_2x) >= (10, 4), "the next write", timeout=60)
        assert _requests_logged(client, run, run_2x) == (10, 4)
        # The tag the write-back sets is the gateway's own: a sync pass makes nothing of it.
        assert (await gateway.services.poller.sync([IRIS, IRIS_2X], reason="after the write-back")).ok
        kinds = {e.kind for name in (IRIS, IRIS_2X) for e in gateway.services.store.events(name=name)}
        assert "tags_changed" not in kinds, kinds

    on_model = [m for m in client.get_logged_model(model_id).metrics or [] if m.key.startswith("production_")]
    assert sum(m.value for m in on_model if m.key == "production_requests") == 10
    assert {m.run_id for m in on_model} == {run}
    assert {m.value for m in on_model if m.key == "production_error_rate"} == {0.0}
    assert all(0 < m.value < 60_000 for m in on_model if m.key == "production_p99_ms")
    assert {m.key for m in on_model} == {"production_requests", "production_error_rate", "production_p99_ms"}
    # The 2.x version: no LoggedModel, its figures on its run, its latest in the version tag.
    assert set(client.get_run(run_2x).data.metrics) == {m.key for m in on_model}
    latest = json.loads(client.get_model_version(IRIS_2X, "1").tags["gateway.production"])
    assert latest["error_rate"] == 0.0 and latest["p99_ms"] > 0 and latest["time"].startswith("20")
    assert latest["requests"] == _history(client, run_2x, "production_requests")[-1]


async def test_mlflow_down_fails_no_request_warns_once_and_the_next_write_logs_what_was_missed(
    server: tuple[Process, str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    process, uri, _ = server
    client = MlflowClient(uri)
    settings = settings_under(tmp_path, mlflow_writeback_seconds=0.1, follow_interval_seconds=0.05)
    logged = _requests_of_2x(client)
    async with running_gateway(settings, uri) as gateway:
        await _send(gateway, IRIS_2X, 1)  # loaded, and logged, before MLflow goes away
        await until(lambda: _requests_of_2x(client) >= logged + 1, "the first write", timeout=60)
        writeback = gateway.services.rooms.writeback.writeback
        await asyncio.to_thread(process.stop)
        try:
            with caplog.at_level(logging.WARNING, logger="registry_sync.writeback"):
                await _send(gateway, IRIS_2X, 5)  # answered, MLflow down
                await until(lambda: writeback.failures >= 3, "three failed write-backs", timeout=60)
            warnings = [r for r in caplog.records if r.name == "registry_sync.writeback"]
            assert len(warnings) == 1, [r.getMessage() for r in warnings]
            assert "not written back" in warnings[0].getMessage()
            failed = gateway.services.metrics.registry.get_sample_value(
                "gateway_mlflow_writebacks_total", {"outcome": "failure"}
            )
            assert failed is not None and failed >= 3
        finally:
            await asyncio.to_thread(process.start)
        await until(lambda: _requests_of_2x(client) >= logged + 6, "the write-back once MLflow is back", timeout=60)
    # The answers of the outage were not lost, nor counted twice: one write after it holds all five.
    assert _requests_of_2x(client) == logged + 6
    assert _history(client, _production_run(client, IRIS_2X, 1).info.run_id, "production_requests")[-1] == 5.0


def _requests_of_2x(client: MlflowClient) -> float:
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None or not client.search_runs([experiment.experiment_id], f"run_name = '{IRIS_2X} v1'"):
        return 0.0
    return sum(_history(client, _production_run(client, IRIS_2X, 1).info.run_id, "production_requests"))


# --- registry-gateway evaluate -----------------------------------------------------------


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Expected]:
    root = tmp_path_factory.mktemp("tables")
    return root, iris_tables(root, IRIS, ROWS)


def _recipe() -> str:
    guide = (ROOT / "docs" / "user-guide.md").read_text()
    start = guide.index("<!-- recipe: evaluate -->")
    block = guide[start : guide.index("<!-- end of recipe -->", start)]
    found = re.search(r"```bash\n(.*?)```", block, re.S)
    assert found is not None
    return found.group(1)


def test_the_user_guides_evaluate_recipe_logs_the_metrics_sklearn_gives_on_the_same_joined_rows(
    server: tuple[Process, str, Path], tables: tuple[Path, Expected], tmp_path: Path
) -> None:
    _, uri, _ = server
    root, expected = tables
    truth, predicted = expected.truth, expected.predicted
    (tmp_path / "tables").symlink_to(root)
    # The recipe as written, on this server (the guide's address is the default one).
    script = _recipe().replace("http://127.0.0.1:5000", uri)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert f"{len(truth)} labelled rows" in done.stderr
    tolerance = 4 * np.finfo(np.float64).eps
    assert answer["metrics"]["accuracy_score"] == pytest.approx(accuracy_score(truth, predicted), abs=tolerance)
    assert answer["metrics"]["f1_score"] == pytest.approx(f1_score(truth, predicted, average="weighted"), abs=tolerance)
    assert answer["metrics"]["example_count"] == len(truth)
    # Logged to MLflow: the run, and the LoggedModel of iris v1.
    client = MlflowClient(uri)
    run = client.get_run(answer["run_id"])
    assert run.data.metrics["accuracy_score"] == answer["metrics"]["accuracy_score"]
    assert answer["model_id"] == logged_model_id(client.get_model_version(IRIS, "1").source)
    on_model = {m.key: m.value for m in client.get_logged_model(answer["model_id"]).metrics or []}
    assert on_model["accuracy_score"] == answer["metrics"]["accuracy_score"]


def test_evaluate_says_what_is_missing_rather_than_failing(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from gateway.cli import main

    result = CliRunner().invoke(main, ["evaluate", IRIS, "1", "--tables", str(tmp_path)])
    assert result.exit_code == 1
    assert f"no predictions of {IRIS} version 1 under {tmp_path}" in result.output


async def test_evaluate_scores_the_delta_tables_a_gateway_wrote_with_the_labels_posted_to_it(
    server: tuple[Process, str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner
    from deltalake import DeltaTable

    from gateway.cli import main

    _, uri, _ = server
    features, target = iris_frame()
    root = tmp_path / "tables"
    settings = settings_under(
        tmp_path, records_sink=f"delta+file://{root}", records_table_roll_seconds=3600, feedback_sample=1.0
    )
    async with running_gateway(settings, uri) as gateway:
        path = f"/models/{IRIS}/versions/1/predict"
        for n in range(0, 150, 6):  # 25 answers of 3 rows each, across the three classes
            rows = features.iloc[n : n + 3].values.tolist()
            response = await gateway.client.post(path, json=iris_split(rows), headers={"X-Request-ID": f"e-{n}"})
            assert response.status_code == 200, response.text
        failed = await gateway.client.post(path, json={"dataframe_split": {"columns": ["a"], "data": [[1]]}})
        assert failed.status_code == 400
        assert gateway.services.keeper is not None
        await gateway.services.keeper.flush()
        # a class for every row but the last of each answer (those stay unlabelled): iris's own,
        # but another one for a request in four, so that the accuracy is neither 0 nor 1
        labels = [
            {"request_id": f"e-{n}", "row": row, "label": (int(target.iloc[n + row]) + (n % 24 == 0)) % 3}
            for n in range(0, 150, 6)
            for row in (0, 1)
        ]
        given = await gateway.client.post("/feedback", json=labels)
        assert given.json()["counts"] == {"accepted": len(labels)}
    # The accuracy by hand, from the tables' rows with pandas: each answer's rows, their labels.
    predictions = DeltaTable(f"file://{root}/predictions").to_pandas().query("status == 200")
    answered = predictions.assign(prediction=predictions["outputs"].map(json.loads)).explode("prediction")
    answered["row"] = answered.groupby("request_id").cumcount()
    table_labels = DeltaTable(f"file://{root}/labels").to_pandas()
    table_labels["label"] = table_labels["label"].map(json.loads)
    scored = answered.merge(table_labels[["request_id", "row", "label"]], on=["request_id", "row"])
    assert len(scored) == len(labels)
    accuracy = float((scored["prediction"].astype(int) == scored["label"].astype(int)).mean())
    assert 0 < accuracy < 1

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    result = CliRunner().invoke(
        main, ["evaluate", IRIS, "1", "--tables", f"delta+file://{root}", "--experiment", "delta evaluations", "--json"]
    )
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output.strip().splitlines()[-1])
    assert f"{len(labels)} labelled rows of 75 answered in 26 requests read (1 failed" in result.output
    tolerance = 4 * np.finfo(np.float64).eps
    assert answer["metrics"]["accuracy_score"] == pytest.approx(accuracy, abs=tolerance)
    client = MlflowClient(uri)
    assert client.get_run(answer["run_id"]).data.metrics["accuracy_score"] == answer["metrics"]["accuracy_score"]
    assert answer["model_id"] == logged_model_id(client.get_model_version(IRIS, "1").source)
    on_model = {m.key: m.value for m in client.get_logged_model(answer["model_id"]).metrics or []}
    assert on_model["accuracy_score"] == pytest.approx(accuracy, abs=tolerance)


# --- GATEWAY_RECORDS_TRACES ----------------------------------------------------------------


async def test_recorded_predictions_become_traces_on_the_versions_logged_model_and_labels_expectations(
    server: tuple[Process, str, Path], tmp_path: Path
) -> None:
    from gateway.observability.records.traces import trace_id_of

    _, uri, _ = server
    client = MlflowClient(uri)
    model_id = logged_model_id(client.get_model_version(IRIS, "1").source)
    settings = settings_under(
        tmp_path, records_traces=True, records_traces_experiment="gateway traces", feedback_sample=1.0
    )
    async with running_gateway(settings, uri) as gateway:
        path = f"/models/{IRIS}/versions/1/predict"
        answers = {}
        for n in range(3):
            response = await gateway.client.post(
                path, json=iris_split([ROWS[n], ROWS[(n + 1) % 3]]), headers={"X-Request-ID": f"t-{n}"}
            )
            assert response.status_code == 200, response.text
            answers[f"t-{n}"] = response.json()["predictions"]
        failed = await gateway.client.post(path, json={"dataframe_split": {"columns": ["a"], "data": [[1]]}})
        assert failed.status_code == 400  # no trace: nothing was predicted
        assert gateway.services.keeper is not None
        await gateway.services.keeper.flush()
        given = await gateway.client.post(
            "/feedback", json=[{"request_id": "t-0", "row": 1, "label": 2}, {"request_id": "t-2", "row": 0, "label": 0}]
        )
        assert given.json()["counts"] == {"accepted": 2}
        metrics = gateway.services.metrics.registry
    # closed: what waited is written
    experiment = client.get_experiment_by_name("gateway traces")
    assert experiment is not None
    traces = {t.info.tags["gateway.request_id"]: t for t in client.search_traces(locations=[experiment.experiment_id])}
    assert sorted(traces) == ["t-0", "t-1", "t-2"]
    for request_id, trace in traces.items():
        assert trace.info.trace_id == trace_id_of(IRIS, 1, request_id)
        assert trace.info.trace_metadata["mlflow.modelId"] == model_id  # the version's LoggedModel
        assert trace.info.client_request_id == request_id
        assert json.loads(trace.data.spans[0].to_dict()["attributes"]["mlflow.spanOutputs"]) == {
            "predictions": answers[request_id]
        }
    # and the LoggedModel's traces are these (MLflow's own search by model id)
    linked = client.search_traces(locations=[experiment.experiment_id], model_id=model_id)
    assert len(linked) == 3
    expectations = {
        request_id: [(a.name, a.value, a.metadata["row"]) for a in trace.info.assessments]
        for request_id, trace in traces.items()
    }
    assert expectations == {"t-0": [("label", 2, "1")], "t-1": [], "t-2": [("label", 0, "0")]}
    assert metrics.get_sample_value("gateway_record_traces_total", {"outcome": "written"}) == 3
    assert metrics.get_sample_value("gateway_record_traces_total", {"outcome": "expectation"}) == 2


async def test_mlflow_down_fails_no_request_and_the_traces_it_misses_are_counted(
    server: tuple[Process, str, Path], tmp_path: Path
) -> None:
    process, uri, _ = server
    settings = settings_under(tmp_path, records_traces=True, records_traces_experiment="gateway traces, outage")
    async with running_gateway(settings, uri) as gateway:
        metrics = gateway.services.metrics.registry

        def count(outcome: str) -> float:
            return metrics.get_sample_value("gateway_record_traces_total", {"outcome": outcome}) or 0.0

        await _send(gateway, IRIS, 1)  # loaded, and traced, before MLflow goes away
        await until(lambda: count("written") >= 1, "the first trace", timeout=60)
        await asyncio.to_thread(process.stop)
        try:
            await _send(gateway, IRIS, 5)  # answered, MLflow down
            await until(lambda: count("failed") >= 5, "five traces counted as not written", timeout=60)
        finally:
            await asyncio.to_thread(process.start)
        await _send(gateway, IRIS, 2)
        await until(lambda: count("written") >= 3, "the traces once MLflow is back", timeout=60)
    assert (count("written"), count("failed"), count("queue_full")) == (3, 5, 0)
    experiment = MlflowClient(uri).get_experiment_by_name("gateway traces, outage")
    assert experiment is not None
    assert len(MlflowClient(uri).search_traces(locations=[experiment.experiment_id])) == 3


# --- a new leader after the old one died mid-write ---------------------------------------


class _DiesBeforeSettling(WritebackMarks):
    """The leader killed after MLflow took its window and before the state database heard:
    the one instant a kill cannot be aimed at from outside, so it is made here."""

    def settle(self, name: str, version: int, pending: Pending) -> bool:
        raise StateUnavailable("the leader died here")


class _MlflowDropsTheBatch(MlflowClient):
    """The leader killed (or MLflow lost) while its batch was on the way: MLflow never got it."""

    def log_batch(self, *args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("the leader died here")


def test_a_new_leader_logs_each_window_to_mlflow_once_whenever_the_old_one_died(
    server: tuple[Process, str, Path], tmp_path: Path
) -> None:
    _, uri, _ = server
    engine = make_engine(f"sqlite:///{tmp_path / 'state.db'}")
    upgrade(engine)
    figures = FiguresStore(engine)

    def leader(client: MlflowClient, marks: WritebackMarks) -> Writeback:
        """A sync leader as a process that just took the lease builds it: nothing in memory."""
        operational = OperationalFigures(figures)
        return Writeback(
            client, StateStore(engine), operational, marks=marks, experiment="failover", interval_seconds=60
        )

    def published(**requests: int) -> None:  # each serving process's totals since it started
        for replica, count in requests.items():
            figures.publish(replica, [VersionFigures(IRIS_2X, 1, count)], forget_after=3600)

    def logged() -> list[Any]:
        experiment = MlflowClient(uri).get_experiment_by_name("failover")
        assert experiment is not None
        [run] = MlflowClient(uri).search_runs([experiment.experiment_id], f"run_name = '{IRIS_2X} v1'")
        return sorted(
            MlflowClient(uri).get_metric_history(run.info.run_id, "production_requests"), key=lambda m: m.step
        )

    published(a=7)
    first = leader(MlflowClient(uri), _DiesBeforeSettling(engine)).write_once()
    assert first.written == [f"{IRIS_2X}/1"] and first.error is not None and "settling" in first.error
    assert [m.value for m in logged()] == [7.0]  # MLflow has the window; the database does not know

    published(a=10, b=4)
    second = leader(MlflowClient(uri), WritebackMarks(engine)).write_once()
    assert second.written == [f"{IRIS_2X}/1"]
    # The first window is not logged again, and the next holds only what came since: 3 + 4.
    assert [m.value for m in logged()] == [7.0, 7.0]

    published(a=12, b=4)
    third = leader(_MlflowDropsTheBatch(uri), WritebackMarks(engine)).write_once()
    assert third.written == [] and third.error is not None  # begun, never in MLflow
    assert WritebackMarks(engine).read(IRIS_2X, 1).pending is not None

    published(a=12, b=5)
    fourth = leader(MlflowClient(uri), WritebackMarks(engine)).write_once()
    assert fourth.written == [f"{IRIS_2X}/1"]
    points = logged()
    assert [m.value for m in points] == [7.0, 7.0, 3.0]  # the dropped window's 2 and the 1 since
    assert sum(m.value for m in points) == 12 + 5  # every request once, over three leaders
    assert len({m.step for m in points}) == len(points)
    assert WritebackMarks(engine).read(IRIS_2X, 1).pending is None

    # A leader that lost its lease and writes late, from what it read before, changes nothing.
    stale = Mark(IRIS_2X, 1, step=points[0].step)
    assert not WritebackMarks(engine).begin(stale, step=points[-1].step + 1, key="production_requests", covers={})
    engine.dispose()


def test_a_standby_that_takes_over_from_a_killed_leader_logs_no_request_twice(
    server: tuple[Process, str, Path], tmp_path: Path
) -> None:
    """Two processes on one PostgreSQL state database, each serving and syncing; the leader
    SIGKILLed. The standby leads once the lease expires, and its writes go on from the dead
    leader's last window: before, its first write counted every request again since each
    process started (the dead one's published totals too)."""
    _, uri, _ = server
    experiment = "failover-processes"
    client = MlflowClient(uri)

    def logged() -> float:
        found = client.get_experiment_by_name(experiment)
        runs = client.search_runs([found.experiment_id], f"run_name = '{IRIS} v1'") if found is not None else []
        return sum(m.value for run in runs for m in client.get_metric_history(run.info.run_id, "production_requests"))

    def leads(base: str) -> bool:
        try:
            return httpx.get(f"{base}/health/ready", timeout=5).json().get("leader") is True
        except (httpx.HTTPError, ValueError):
            return False

    def send(base: str, count: int) -> None:
        for n in range(count):
            answer = httpx.post(f"{base}/models/{IRIS}/versions/1/predict", json=iris_split([ROWS[n % 3]]), timeout=60)
            assert answer.status_code == 200, answer.text

    with postgres_database() as state_url, ExitStack() as stack:
        engine = make_engine(state_url)
        upgrade(engine)
        engine.dispose()
        env = {
            "GATEWAY_DATABASE_URL": state_url,
            "GATEWAY_MLFLOW_WRITEBACK_SECONDS": "0.2",
            "GATEWAY_MLFLOW_WRITEBACK_EXPERIMENT": experiment,
            "GATEWAY_FOLLOW_INTERVAL_SECONDS": "0.1",
            "GATEWAY_LEASE_SECONDS": "2",
            "GATEWAY_LOG_LEVEL": "warning",
        }
        processes = [gateway_server(tracking_uri=uri, workdir=tmp_path / f"p{i}", env=env) for i in range(2)]
        for process, _ in processes:
            stack.callback(process.stop, signal.SIGKILL)
        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(lambda started: started[0].start(), processes))
        wait_until(lambda: sum(leads(base) for _, base in processes) == 1, timeout=30, what="one leader")
        (leader, leader_base), (_, standby_base) = sorted(processes, key=lambda p: not leads(p[1]))
        send(leader_base, 5)
        send(standby_base, 4)
        wait_until(lambda: logged() >= 9, timeout=60, what="the leader's write-back of 9 requests")
        assert logged() == 9
        leader.stop(signal.SIGKILL)
        wait_until(lambda: leads(standby_base), timeout=30, what="the standby to lead")
        send(standby_base, 3)
        wait_until(lambda: logged() >= 12, timeout=60, what="the new leader's write-back")
        assert logged() == 12  # not 21: the dead leader's 5 and the standby's 4 again
        send(standby_base, 2)
        wait_until(lambda: logged() >= 14, timeout=60, what="the next write-back")
        assert logged() == 14
