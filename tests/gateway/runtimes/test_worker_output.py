"""What an isolated worker writes on its own stdout and stderr (Python's warnings, a model's
prints, the traceback of a load that failed) reaches the gateway's log as log records, so that
with GATEWAY_LOG_FORMAT=json every line the gateway writes is JSON."""

from __future__ import annotations

import io
import json
import logging
import logging.config
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pytest

from gateway.observability.logs import logging_config
from gateway.runtimes.workers import WorkerProcess
from tests.support.waiting import wait_until

NOISY = """
import warnings

import mlflow


class Noisy(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        warnings.warn("this model is noisy", UserWarning)
        print("a print of the model's own", flush=True)

    def predict(self, context, model_input, params=None):
        return model_input


mlflow.models.set_model(Noisy())
"""


@pytest.fixture(scope="module")
def noisy_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("noisy")
    code = folder / "noisy.py"
    code.write_text(NOISY)
    saved = folder / "model"
    with warnings.catch_warnings():  # MLflow's advice to add type hints to predict
        warnings.simplefilter("ignore")
        mlflow.pyfunc.save_model(
            str(saved), python_model=str(code), pip_requirements=["mlflow"]
        )  # not inferred: seconds
    return saved


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """The gateway's JSON logging, its handler writing into a string; the suite's config after."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    logging.config.dictConfig(logging_config("json", logging.INFO))
    stream = io.StringIO()
    root.handlers[0].setStream(stream)  # type: ignore[attr-defined]
    try:
        yield stream
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)


def test_what_a_worker_writes_is_logged_as_json_lines(noisy_model: Path, json_log: io.StringIO) -> None:
    worker = WorkerProcess(Path(sys.executable), label="noisy-env", on_exit=lambda process, code: None)
    worker.start()
    try:
        answer, _ = worker.call({"op": "load", "id": "noisy/1", "path": str(noisy_model)}, [])
        assert answer["ok"], answer
        answer, _ = worker.call({"op": "load", "id": "gone/1", "path": str(noisy_model.parent / "missing")}, [])
        assert not answer["ok"]  # the worker prints the traceback on its stderr

        def records() -> list[dict[str, Any]]:
            text = json_log.getvalue()
            return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]  # every line: JSON

        def said(text: str) -> bool:
            return any(text in record["message"] for record in records() if record["logger"] == "gateway.worker")

        wait_until(lambda: said("Traceback (most recent call last)"), timeout=20, what="the load's traceback")
        wait_until(lambda: said("this model is noisy"), timeout=20, what="the model's warning")
        wait_until(lambda: said("a print of the model's own"), timeout=20, what="the model's print")
    finally:
        worker.stop()
    ours = [record for record in records() if record["logger"] == "gateway.worker"]
    assert all(record["worker"] == "noisy-env" and record["worker_pid"] == worker.pid for record in ours), ours
    warning = next(record for record in ours if "this model is noisy" in record["message"])
    assert warning["level"] == "WARNING" and "UserWarning" in warning["message"]
