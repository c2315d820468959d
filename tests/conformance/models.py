"""The model kinds of the differential suite (issue 16), logged into a registry of their own.

Each kind is a real MLflow model: sklearn and torch through their flavors, the rest as
``PythonModel`` classes defined here, pickled by reference (the gateway and the reference
server both load them in the test process).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

from gateway.demo import log_iris_version, log_torch_version

PIPELINE_COLUMNS = ["color", "count", "size"]  # string, long, double
INT64_COLUMNS = ["a", "b", "c"]
TRUSTED = ["sklearn.tree._tree.Tree"]  # our own trees: MLflow 3 loads sklearn through skops


class Scaled(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    """x * scale / divide_by, with a params schema; ``fail`` makes it raise on purpose."""

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> Any:
        params = params or {}
        failure = params.get("fail", "")
        if failure == "runtime":
            raise RuntimeError("asked to fail")
        if failure == "assert":
            raise AssertionError("asked to fail")
        if failure == "memory":  # what a model that runs out of memory raises
            raise MemoryError("asked to fail")
        factor = float(params.get("scale", 1.0)) / float(params.get("divide_by", 1.0))  # ZeroDivisionError
        return (model_input["x"] * factor).to_numpy()


SCALED_SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("double", "x")]),
    outputs=Schema([ColSpec("double")]),
    params=ParamSchema(
        [ParamSpec("scale", "double", 1.0), ParamSpec("divide_by", "double", 1.0), ParamSpec("fail", "string", "")]
    ),
)


def unusual(kind: str) -> Any:
    """The outputs MLflow's scoring server encodes that a plain JSON encoder does not."""
    stamps = ["2024-01-01 10:00:00", "2024-01-02 00:00:00"]
    return {
        "scalar": lambda: np.array(3.5),
        "bytes": lambda: [b"ab", b"\x00\xff"],
        "bytes-array": lambda: np.array([b"ab", b"cd"]),
        "datetimes": lambda: pd.DataFrame({"t": pd.to_datetime(stamps)}),
        "tz-aware": lambda: pd.DataFrame({"t": pd.to_datetime(stamps).tz_localize("UTC")}),
        "timestamps": lambda: [pd.Timestamp(s) for s in stamps],
        "dates": lambda: [datetime.date(2024, 1, 1)],
        "big-int": lambda: [2**70, -(2**65)],
        "series": lambda: pd.Series([1.5, 2.5], name="score"),
        "dict": lambda: {"label": np.int64(3), "scores": np.array([0.25, 0.75])},
        "strings": lambda: np.array(["a", "b"], dtype=object),
        "float32": lambda: np.array([0.1, 1 / 3], dtype=np.float32),
        "nested": lambda: [{"a": [np.float64(1.5), None]}, {"b": "x"}],
        "non-finite": lambda: np.array([np.nan, np.inf, -np.inf, 1.5]),
    }[kind]()


UNUSUAL_KINDS = [
    "scalar",
    "bytes",
    "bytes-array",
    "datetimes",
    "tz-aware",
    "timestamps",
    "dates",
    "big-int",
    "series",
    "dict",
    "strings",
    "float32",
    "nested",
    "non-finite",
]


class Unusual(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> Any:
        return unusual(str(model_input["kind"].iloc[0]))


class Chat(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    """Answers chat ``messages`` (the unified LLM input of MLflow's scoring server)."""

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> Any:
        messages = model_input["messages"].iloc[0]
        last = list(messages)[-1]
        return {
            "choices": [{"message": {"role": "assistant", "content": f"echo: {last['content']}"}}],
            "temperature": (params or {}).get("temperature"),
        }


CHAT_EXAMPLE = ({"messages": [{"role": "user", "content": "hi"}]}, {"temperature": 0.5})


@dataclass(frozen=True)
class Kind:
    """One model kind: its registered name and how its outputs compare."""

    name: str
    dtype: str | None  # the dtype of its numeric predictions; None: compared as they are
    fast: bool = False  # sklearn/torch: a second version tagged gateway.fast_path=false
    batches: bool = False  # concurrent requests share one predict call


IRIS = Kind("iris", "int64", fast=True, batches=True)
PIPELINE = Kind("pipeline", None, batches=True)
INT64 = Kind("int64-columns", "float64", fast=True, batches=True)
TORCH = Kind("torch", "float32", fast=True, batches=True)
PARAMS = Kind("params", "float64", batches=True)
UNUSUAL = Kind("unusual-outputs", None)
CHAT = Kind("chat", None)
KINDS = [IRIS, PIPELINE, INT64, TORCH, PARAMS, UNUSUAL, CHAT]


def log_pipeline(name: str) -> int:
    """One-hot colour, passthrough count and size, a decision tree: exact outputs in any batch."""
    import mlflow.sklearn
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder
    from sklearn.tree import DecisionTreeClassifier

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "color": rng.choice(["red", "green", "blue"], 60),
            "count": rng.integers(0, 10, 60).astype(np.int64),
            "size": rng.random(60),
        }
    )
    target = (frame["color"] == "red") ^ (frame["count"] > 4)
    model = Pipeline(
        [
            (
                "columns",
                ColumnTransformer(
                    [("color", OneHotEncoder(handle_unknown="ignore"), ["color"])], remainder="passthrough"
                ),
            ),
            ("tree", DecisionTreeClassifier(max_depth=4, random_state=0)),
        ]
    ).fit(frame, target.astype(np.int64))
    with mlflow.start_run(run_name=name):
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            registered_model_name=name,
            input_example=frame.head(2),
            pip_requirements=["scikit-learn"],
            skops_trusted_types=TRUSTED,
        )
    return int(info.registered_model_version)


def log_int64(name: str) -> int:
    """A regression tree on three int64 columns: leaf values, exact in any batch."""
    import mlflow.sklearn
    from sklearn.tree import DecisionTreeRegressor

    rng = np.random.default_rng(1)
    frame = pd.DataFrame(rng.integers(-100, 100, (80, 3)), columns=INT64_COLUMNS).astype(np.int64)
    model = DecisionTreeRegressor(max_depth=4, random_state=0).fit(frame, frame["a"] * 0.5 - frame["c"] / 3)
    with mlflow.start_run(run_name=name):
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            registered_model_name=name,
            input_example=frame.head(2),
            pip_requirements=["scikit-learn"],
            skops_trusted_types=TRUSTED,
        )
    return int(info.registered_model_version)


def log_python(name: str, model: mlflow.pyfunc.PythonModel, **kwargs: Any) -> int:
    with mlflow.start_run(run_name=name):
        info = mlflow.pyfunc.log_model(
            name="model", python_model=model, registered_model_name=name, pip_requirements=["mlflow"], **kwargs
        )
    return int(info.registered_model_version)


def log_all() -> dict[str, int]:
    """Every kind once; returns name -> version. Call inside ``using_registry``."""
    return {
        IRIS.name: log_iris_version(IRIS.name, c=1.0),
        PIPELINE.name: log_pipeline(PIPELINE.name),
        INT64.name: log_int64(INT64.name),
        TORCH.name: log_torch_version(TORCH.name),
        PARAMS.name: log_python(PARAMS.name, Scaled(), signature=SCALED_SIGNATURE),
        UNUSUAL.name: log_python(
            UNUSUAL.name, Unusual(), signature=ModelSignature(inputs=Schema([ColSpec("string", "kind")]))
        ),
        CHAT.name: log_python(CHAT.name, Chat(), input_example=CHAT_EXAMPLE),
    }
