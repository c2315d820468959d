"""Real MLflow models with faults the tests can switch on and off.

The gateway loads these in the test process (in-process tests), so a model class
pickled by reference from this module shares these module-level switches with the
test that flips them. That is how a test holds a predict or a load open, or makes a
load fail, without sleeping.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

PREDICT_GATE = threading.Event()  # GatedPredict.predict waits for it
PREDICT_ENTERED = threading.Event()  # ... and sets this when it starts waiting
LOAD_GATE = threading.Event()  # GatedLoad.load_context waits for it
FAIL_LOADS = threading.Event()  # FlakyLoad.load_context fails while it is set
LOADS: dict[str, int] = {}  # load_context calls per model class
_lock = threading.Lock()

SIGNATURE = ModelSignature(inputs=Schema([ColSpec("double", "x")]), outputs=Schema([ColSpec("double")]))
# A string column: "007" is a code of three characters, never the number 7.
CODES_SIGNATURE = ModelSignature(inputs=Schema([ColSpec("string", "code")]), outputs=Schema([ColSpec("long")]))


def _count(kind: str) -> None:
    with _lock:
        LOADS[kind] = LOADS.get(kind, 0) + 1


class Doubler(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> Any:
        return (model_input["x"] * 2).to_numpy()


class Scaler(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    """x times a factor fixed when logged: versions that differ only in their bytes."""

    def __init__(self, factor: float) -> None:
        self.factor = factor

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> Any:
        return (model_input["x"] * self.factor).to_numpy()


class CodeLength(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    """Each row's code's length (CODES_SIGNATURE): 3 for "007", where a number would not do."""

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> Any:
        return model_input["code"].map(len).to_numpy()


class NegativeFails(Doubler):
    """Fails on a negative x, where Doubler answers: a version with a bug its warm-up misses."""

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> Any:
        if (model_input["x"] < 0).any():
            raise ValueError("negative x (a bug injected by NegativeFails)")
        return super().predict(context, model_input, params)


class SlowDoubler(Doubler):
    """Doubles, like Doubler, in 200 ms: a version whose only fault is its latency."""

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> Any:
        time.sleep(0.2)
        return super().predict(context, model_input, params)


class GatedNegativeFails(NegativeFails):
    """NegativeFails whose predict first waits for PREDICT_GATE, as GatedPredict's does."""

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> Any:
        PREDICT_ENTERED.set()
        PREDICT_GATE.wait(timeout=30)
        return super().predict(context, model_input, params)


class GatedPredict(Doubler):
    """Its predict blocks until PREDICT_GATE is set (30 s at most)."""

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> Any:
        PREDICT_ENTERED.set()
        PREDICT_GATE.wait(timeout=30)
        return super().predict(context, model_input, params)


class FileGated(Doubler):
    """Doubles once the file ``gate`` exists (20 s at most): a gate a test opens for gateways in
    processes of their own. Rows of x = 0 (the warm-up's sample from the signature) pass at once.
    With ``entered`` (a folder), each predict that waits leaves a file there first, so the test
    sees how many predicts are held at the gate."""

    def __init__(self, gate: str, entered: str | None = None) -> None:
        self.gate = gate
        self.entered = entered

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> Any:
        entered = getattr(self, "entered", None)
        if entered is not None and (model_input["x"] != 0).any():
            Path(entered, f"{os.getpid()}-{threading.get_ident()}-{time.monotonic_ns()}").touch()
        deadline = time.monotonic() + 20
        while (model_input["x"] != 0).any() and not os.path.exists(self.gate) and time.monotonic() < deadline:
            time.sleep(0.005)  # another process's event: a file is what both can see
        return super().predict(context, model_input, params)


class GatedLoad(Doubler):
    """Its load blocks until LOAD_GATE is set (30 s at most)."""

    def load_context(self, context: Any) -> None:
        _count("gated_load")
        LOAD_GATE.wait(timeout=30)


class FlakyLoad(Doubler):
    """Fails to load while FAIL_LOADS is set, like weights that cannot be read."""

    def load_context(self, context: Any) -> None:
        _count("flaky_load")
        if FAIL_LOADS.is_set():
            raise OSError("weights file is corrupt (injected by FAIL_LOADS)")


def log_pyfunc(name: str, model: mlflow.pyfunc.PythonModel, *, signature: ModelSignature = SIGNATURE) -> int:
    with mlflow.start_run(run_name=name):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=model,
            registered_model_name=name,
            signature=signature,
            pip_requirements=["mlflow"],
        )
    return int(info.registered_model_version)
