"""Loading in the gateway's own process: what MLflow cannot load twice at once loads in turn."""

from __future__ import annotations

import sys
import textwrap
import threading
from pathlib import Path

import mlflow.pyfunc
from mlflow.models import Model

from gateway.runtimes.inprocess import InProcessRuntime, loads_serially

# A model from code whose code takes a moment to run: two loads at once overlap for sure.
MODEL_CODE = textwrap.dedent(
    """
    import time

    import mlflow
    from mlflow.pyfunc import PythonModel

    time.sleep(0.2)


    class Doubler(PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input * 2


    mlflow.models.set_model(Doubler())
    """
)


def _model_from_code(tmp_path: Path) -> Path:
    code = tmp_path / "doubler.py"
    code.write_text(MODEL_CODE)
    path = tmp_path / "model"
    mlflow.pyfunc.save_model(str(path), python_model=str(code), pip_requirements=["mlflow"])
    return path


def test_models_from_code_load_one_at_a_time_and_leave_no_stand_in_dbutils(tmp_path: Path) -> None:
    """MLflow runs a model's code with a stand-in ``dbutils`` in sys.modules; two loads at once
    left it there for good (and with it, e.g., every later hypothesis test failed on it)."""
    path = _model_from_code(tmp_path)
    metadata = Model.load(str(path))
    assert loads_serially(metadata)
    runtime = InProcessRuntime()
    loaded: list[object] = []
    errors: list[BaseException] = []

    def load() -> None:
        try:
            loaded.append(runtime.load(path, metadata).model)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(loaded) == 4
    assert "dbutils" not in sys.modules


def test_other_pyfunc_models_still_load_side_by_side(tmp_path: Path) -> None:
    class Doubler(mlflow.pyfunc.PythonModel):
        def predict(self, context: object, model_input: object, params: object = None) -> object:
            return model_input

    path = tmp_path / "pickled"
    mlflow.pyfunc.save_model(str(path), python_model=Doubler(), pip_requirements=["mlflow"])
    assert not loads_serially(Model.load(str(path)))
