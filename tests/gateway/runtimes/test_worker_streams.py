"""predict_stream in an isolated worker: chunks over the worker's socket, a message each, as the
gateway asks for them; a stream closed early closes the worker's generator (issue 44).

The worker runs on this venv's own interpreter (an environment whose requirements are the
gateway's: no uv build), with the worker's real server and wire.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.models import Model

from gateway.errors import WorkerUnavailable
from gateway.runtimes.environments import BuildOptions, Environment, EnvironmentStore
from gateway.runtimes.isolated import IsolatedRuntime, RemoteModel
from registry_sync.identity import VersionId
from tests.support import agents
from tests.support.mlflow_db import new_mlflow_db
from tests.support.waiting import wait_until

VERSION = VersionId("agent", 1, "models:/m-test", 0)
ASK = {"input": [{"role": "user", "content": "one two three four"}]}


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("worker-streams")
    # No registry here: without a tracking URI, MLflow 3 would keep the agent's traces in
    # ./mlflow.db, the checkout's own folder.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", new_mlflow_db(root / "mlflow.db"))
        yield agents.save_model_from_code(root / "agent", agents.RESPONSES_AGENT)


@pytest.fixture(scope="module")
def remote(model_path: Path) -> Iterator[RemoteModel]:
    root, path = model_path.parent, model_path
    runtime = IsolatedRuntime(EnvironmentStore(root / "envs", BuildOptions()), max_workers=2)
    env = Environment(key="own-venv", path=Path(sys.prefix), python_version="3.11", requested_python=None)
    loaded = runtime.load(VERSION, path, env, Model.load(str(path / "MLmodel")))
    try:
        yield loaded.model
    finally:
        runtime.close()


def test_a_workers_stream_yields_what_mlflow_yields_in_process(remote: RemoteModel, model_path: Path) -> None:
    import mlflow.pyfunc

    reference = list(mlflow.pyfunc.load_model(str(model_path)).predict_stream(ASK))
    assert list(remote.predict_stream(ASK)) == reference
    assert reference[-1]["type"] == "response.output_item.done" and len(reference) == 5


def test_chunks_come_one_at_a_time_and_other_calls_go_between_them(remote: RemoteModel) -> None:
    first = remote.predict_stream(ASK)
    second = remote.predict_stream(ASK)
    assert next(first)["delta"] == "one "
    assert next(second)["delta"] == "one "  # the worker answers another stream between two chunks
    assert remote.predict(ASK)["output"][0]["content"][0]["text"] == "one two three four"
    assert [c.get("delta") for c in first] == ["two ", "three ", "four", None]
    second.close()


def test_closing_the_stream_early_closes_the_generator_in_the_worker(remote: RemoteModel, tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    ask = {**ASK, "custom_inputs": {"repeat": 100, "closed_file": str(closed)}}
    stream = remote.predict_stream(ask)
    assert [next(stream)["delta"] for _ in range(3)] == ["one ", "two ", "three "]
    stream.close()
    wait_until(closed.exists, timeout=20, what="the worker to close the generator")
    assert closed.read_text() == "cancelled 3"


def test_an_error_mid_stream_comes_back_as_the_models_error(remote: RemoteModel) -> None:
    stream = remote.predict_stream({**ASK, "custom_inputs": {"fail_at": 2}})
    assert next(stream)["delta"] == "one " and next(stream)["delta"] == "two "
    with pytest.raises(Exception, match="the model failed before word 2") as raised:
        next(stream)
    assert type(raised.value).__name__ == "ValueError"


def test_a_worker_that_dies_mid_stream_ends_it_with_worker_unavailable(remote: RemoteModel) -> None:
    import os
    import signal

    stream = remote.predict_stream({**ASK, "custom_inputs": {"repeat": 100}})
    next(stream)
    pid = remote.worker_pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(WorkerUnavailable):
        for _ in stream:
            pass
    wait_until(lambda: remote.worker_pid not in (None, pid), timeout=60, what="the worker to start again")
    assert [c.get("delta") for c in remote.predict_stream(ASK)][0] == "one "
