"""The flavor matrix's models: each built in the test from data a package ships or generates
(no downloaded weights), logged with MLflow's own flavor, and a request body for each route.

``FLAVORS`` is the matrix, one row per kind of version: the loading flavor the gateway's policy
sees, how to log it, the MLflow scoring body, the Open Inference Protocol body where OIP applies
(or why not), and the dtype its numeric answers compare in. docs/user-guide.md's table is
checked against it (tests/flavors/test_matrix.py).
"""

from __future__ import annotations

import os

# Keras 3 computes on the torch backend here; chosen before anything imports keras.
os.environ.setdefault("KERAS_BACKEND", "torch")

import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version as installed
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

Logger = Callable[[str, Path], int]  # (registered name, a scratch directory) -> version


@dataclass(frozen=True)
class Flavor:
    key: str  # the matrix's row (docs/user-guide.md: Flavors)
    flavor: str  # the loading flavor (GATEWAY_ALLOWED_FLAVORS)
    log: Logger
    body: dict[str, Any]  # MLflow's scoring protocol (/invocations, /predict)
    dtype: str | None  # the dtype its numeric answers compare in; None: as they are
    oip: dict[str, Any] | None = None  # the V2 body, None where OIP does not apply...
    no_oip: str = ""  # ...and why
    pickled: bool = False  # GATEWAY_ALLOW_PICKLE=false refuses it
    fast: bool = False  # served by the fast path (the flavor's own predict on the decoded array)

    @property
    def name(self) -> str:
        return f"matrix-{self.key}"


def _requirements(*distributions: str) -> list[str]:
    """Pinned as MLflow pins what it infers, to this environment's releases: the version fits
    the gateway's own environment and loads in process (no requirement inference: it loads
    every model in a subprocess)."""
    return [f"{name}=={installed(name)}" for name in ("mlflow", *distributions)]


def _split(frame: pd.DataFrame) -> dict[str, Any]:
    """``dataframe_split`` with every digit (pandas' to_json keeps 10): the same doubles as OIP's."""
    data = frame.copy()
    for column in data.columns:
        if pd.api.types.is_datetime64_any_dtype(data[column]):
            data[column] = data[column].dt.strftime("%Y-%m-%dT%H:%M:%S")
    return {"dataframe_split": {"columns": [str(c) for c in data.columns], "data": data.to_numpy().tolist()}}


def _columns(frame: pd.DataFrame, datatype: str) -> dict[str, Any]:
    """A frame as OIP tensors, one per column, as MLServer's mlflow runtime takes it."""
    return {
        "inputs": [
            {"name": str(c), "datatype": datatype, "shape": [len(frame), 1], "data": frame[c].tolist()}
            for c in frame.columns
        ]
    }


def _tensor(array: np.ndarray, datatype: str, name: str = "input-0") -> dict[str, Any]:
    return {
        "inputs": [{"name": name, "datatype": datatype, "shape": list(array.shape), "data": array.ravel().tolist()}]
    }


def _strings(texts: list[str], name: str = "input-0") -> dict[str, Any]:
    return {
        "inputs": [{"name": name, "datatype": "BYTES", "shape": [len(texts)], "data": texts}],
        "parameters": {"content_type": "str"},
    }


# --- data ---------------------------------------------------------------------------------


def iris() -> tuple[pd.DataFrame, pd.Series]:
    from sklearn.datasets import load_iris

    features, target = load_iris(return_X_y=True, as_frame=True)
    return features, target


def diabetes() -> tuple[pd.DataFrame, pd.Series]:
    from sklearn.datasets import load_diabetes

    features, target = load_diabetes(return_X_y=True, as_frame=True)
    return features, target


IRIS_ROWS = [0, 25, 60, 90, 120, 149]
DIABETES_ROWS = [0, 7, 51, 100, 222, 441]
TEXTS = ["the cat sat on the mat", "a dog ran", "the mat sat on a cat and a dog"]


def _iris_rows() -> pd.DataFrame:
    return iris()[0].iloc[IRIS_ROWS].reset_index(drop=True)


def _diabetes_rows() -> pd.DataFrame:
    return diabetes()[0].iloc[DIABETES_ROWS].reset_index(drop=True)


# --- the flavors --------------------------------------------------------------------------


def log_sklearn(name: str, scratch: Path) -> int:
    import mlflow.sklearn
    from sklearn.linear_model import LogisticRegression

    features, target = iris()
    model = LogisticRegression(max_iter=1000).fit(features, target)
    info = mlflow.sklearn.log_model(
        model,
        name="model",
        registered_model_name=name,
        input_example=features.head(2),
        pip_requirements=_requirements("scikit-learn"),
    )
    return int(info.registered_model_version)


TORCH_ROWS = np.random.default_rng(11).standard_normal((5, 4)).astype(np.float32)


def _torch_logger(serialization: str) -> Logger:
    def log(name: str, scratch: Path) -> int:
        import mlflow.pytorch
        import torch

        torch.manual_seed(5)
        net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)).eval()
        info = mlflow.pytorch.log_model(
            net,
            name="model",
            registered_model_name=name,
            input_example=TORCH_ROWS[:2],
            serialization_format=serialization,
            pip_requirements=_requirements("torch"),
        )
        return int(info.registered_model_version)

    return log


def log_xgboost(name: str, scratch: Path) -> int:
    import mlflow.xgboost
    import xgboost

    features, target = diabetes()
    model = xgboost.XGBRegressor(n_estimators=12, max_depth=3, n_jobs=1, random_state=0).fit(features, target)
    info = mlflow.xgboost.log_model(
        model,
        name="model",
        registered_model_name=name,
        input_example=features.head(2),
        pip_requirements=_requirements("xgboost-cpu"),
    )
    return int(info.registered_model_version)


def log_lightgbm(name: str, scratch: Path) -> int:
    import lightgbm
    import mlflow.lightgbm

    features, target = iris()
    model = lightgbm.LGBMClassifier(n_estimators=10, num_leaves=7, n_jobs=1, verbose=-1, random_state=0)
    model.fit(features, target)
    info = mlflow.lightgbm.log_model(
        model,
        name="model",
        registered_model_name=name,
        input_example=features.head(2),
        pip_requirements=_requirements("lightgbm", "scikit-learn"),
    )
    return int(info.registered_model_version)


def log_catboost(name: str, scratch: Path) -> int:
    import catboost
    import mlflow.catboost

    features, target = diabetes()
    model = catboost.CatBoostRegressor(
        iterations=20, depth=3, verbose=False, thread_count=1, random_seed=0, allow_writing_files=False
    ).fit(features, target)
    info = mlflow.catboost.log_model(
        model,
        name="model",
        registered_model_name=name,
        input_example=features.head(2),
        pip_requirements=_requirements("catboost"),
    )
    return int(info.registered_model_version)


def log_statsmodels(name: str, scratch: Path) -> int:
    import mlflow.statsmodels
    import statsmodels.api as sm

    features, target = diabetes()
    model = sm.OLS(target, features).fit()
    info = mlflow.statsmodels.log_model(
        model,
        name="model",
        registered_model_name=name,
        input_example=features.head(2),
        pip_requirements=_requirements("statsmodels"),
    )
    return int(info.registered_model_version)


PROPHET_DAYS = pd.DataFrame({"ds": pd.date_range("2026-03-01", periods=5, freq="D")})


def log_prophet(name: str, scratch: Path) -> int:
    import mlflow.prophet
    from prophet import Prophet

    days = pd.date_range("2026-01-01", periods=60, freq="D")
    trend = np.arange(60, dtype=np.float64)
    history = pd.DataFrame({"ds": days, "y": 10 + 0.5 * trend + 3 * np.sin(2 * np.pi * trend / 7)})
    model = Prophet(uncertainty_samples=0, yearly_seasonality=False, daily_seasonality=False).fit(
        history, algorithm="Newton"
    )
    info = mlflow.prophet.log_model(
        model,
        name="model",
        registered_model_name=name,
        input_example=PROPHET_DAYS.head(2),
        pip_requirements=_requirements("prophet"),
    )
    return int(info.registered_model_version)


def log_onnx(name: str, scratch: Path) -> int:
    import mlflow.onnx
    from mlflow.models import infer_signature
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    features, target = iris()
    model = LogisticRegression(max_iter=1000).fit(features.to_numpy(np.float32), target)
    onnx_model = to_onnx(
        model, features.to_numpy(np.float32)[:1], options={id(model): {"zipmap": False}}, target_opset=17
    )
    info = mlflow.onnx.log_model(
        onnx_model,
        name="model",
        registered_model_name=name,
        # MLflow infers no signature for ONNX from an example; without one an OIP request must
        # say its content_type ("np"), as with MLServer
        signature=infer_signature(features.to_numpy(np.float32)[:2]),
        pip_requirements=_requirements("onnx", "onnxruntime"),
    )
    return int(info.registered_model_version)


def log_keras(name: str, scratch: Path) -> int:
    import keras
    import mlflow.keras
    from mlflow.models import infer_signature

    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)])
    outputs = keras.ops.convert_to_numpy(model(TORCH_ROWS[:2]))
    info = mlflow.keras.log_model(
        model,
        name="model",
        registered_model_name=name,
        signature=infer_signature(TORCH_ROWS[:2], outputs),  # MLflow 3.17's keras flavor fails saving an input_example
        pip_requirements=_requirements("keras", "torch"),
    )
    return int(info.registered_model_version)


# A WordPiece vocabulary of our own: the tokenizer is built from it, nothing is downloaded.
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(" ".join(TEXTS).split()))]


def _tiny_bert(scratch: Path, *, classes: int | None) -> tuple[Any, Any]:
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertModel, BertTokenizerFast

    vocab = scratch / "vocab.txt"
    vocab.write_text("\n".join(VOCAB) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True)
    config = BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        **({"num_labels": classes} if classes else {}),
    )
    torch.manual_seed(0)
    model = (BertForSequenceClassification if classes else BertModel)(config).eval()
    return model, tokenizer


def _transformers_logger(task: str) -> Logger:
    def log(name: str, scratch: Path) -> int:
        import mlflow.transformers
        from transformers import pipeline

        model, tokenizer = _tiny_bert(scratch, classes=2 if task == "text-classification" else None)
        pipe = pipeline(task, model=model, tokenizer=tokenizer, device="cpu")
        info = mlflow.transformers.log_model(
            pipe,
            name="model",
            registered_model_name=name,
            input_example=TEXTS[:1],
            pip_requirements=_requirements("transformers", "torch"),
        )
        return int(info.registered_model_version)

    return log


def log_sentence_transformers(name: str, scratch: Path) -> int:
    import mlflow.sentence_transformers
    from sentence_transformers import SentenceTransformer, models

    bert, tokenizer = _tiny_bert(scratch, classes=None)
    saved = scratch / "tiny-bert"
    bert.save_pretrained(saved)
    tokenizer.save_pretrained(saved)
    encoder = models.Transformer(str(saved), max_seq_length=32)
    model = SentenceTransformer(modules=[encoder, models.Pooling(encoder.get_word_embedding_dimension())], device="cpu")
    info = mlflow.sentence_transformers.log_model(
        model,
        name="model",
        registered_model_name=name,
        input_example=TEXTS[:1],
        pip_requirements=_requirements("sentence-transformers", "transformers", "torch"),
    )
    return int(info.registered_model_version)


class Affine(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    """A PythonModel pickled by reference to this module (importable by the gateway here)."""

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> Any:
        return model_input.sum(axis=1).to_numpy() * 0.5 + 1.0


def log_python_model(name: str, scratch: Path) -> int:
    features = _iris_rows()
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=Affine(),
        registered_model_name=name,
        input_example=features.head(2),
        pip_requirements=_requirements(),
    )
    return int(info.registered_model_version)


MODEL_CODE = textwrap.dedent(
    """
    import mlflow


    class Scaled(mlflow.pyfunc.PythonModel):
        def load_context(self, context):
            self.factor = float((context.model_config or {}).get("factor", 1.0))

        def predict(self, context, model_input, params=None):
            return model_input.mul(self.factor).sum(axis=1).to_numpy()


    mlflow.models.set_model(Scaled())
    """
)


def _code_logger(config: dict[str, Any] | None) -> Logger:
    def log(name: str, scratch: Path) -> int:
        code = scratch / "scaled_model.py"
        code.write_text(MODEL_CODE)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(code),
            registered_model_name=name,
            input_example=_iris_rows().head(2),
            model_config=config,
            pip_requirements=_requirements(),
        )
        return int(info.registered_model_version)

    return log


FEATURES_CODE = textwrap.dedent(
    '''
    import numpy as np
    from sklearn.base import BaseEstimator, TransformerMixin


    class Ratios(BaseEstimator, TransformerMixin):
        """Adds each column's ratio to the first: a transformer only code_paths ships."""

        def fit(self, X, y=None):
            return self

        def transform(self, X):
            X = np.asarray(X, dtype=np.float64)
            return np.hstack([X, X / X[:, :1]])
    '''
)


def log_code_paths(name: str, scratch: Path) -> int:
    import importlib.util
    import sys

    import mlflow.sklearn
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    module = scratch / "matrix_ratios.py"
    module.write_text(FEATURES_CODE)
    spec = importlib.util.spec_from_file_location("matrix_ratios", module)
    assert spec is not None and spec.loader is not None
    loaded = importlib.util.module_from_spec(spec)
    sys.modules["matrix_ratios"] = loaded  # as if imported: pickled by reference to it
    spec.loader.exec_module(loaded)
    features, target = iris()
    pipeline = make_pipeline(loaded.Ratios(), LogisticRegression(max_iter=2000)).fit(features, target)
    try:
        info = mlflow.sklearn.log_model(
            pipeline,
            name="model",
            registered_model_name=name,
            input_example=features.head(2),
            code_paths=[str(module)],
            serialization_format="cloudpickle",
            pip_requirements=_requirements("scikit-learn"),
        )
    finally:
        del sys.modules["matrix_ratios"]  # the gateway must find it through code_paths
    return int(info.registered_model_version)


def log_logged_model(name: str, scratch: Path) -> int:
    """A LoggedModel, outside any run, registered by its ``models:/m-...`` URI (MLflow 3)."""
    import mlflow.sklearn
    from sklearn.tree import DecisionTreeRegressor

    features, target = diabetes()
    model = DecisionTreeRegressor(max_depth=4, random_state=0).fit(features, target)
    info = mlflow.sklearn.log_model(
        model,
        name="logged",
        input_example=features.head(2),
        serialization_format="cloudpickle",
        pip_requirements=_requirements("scikit-learn"),
    )
    assert info.model_uri.startswith("models:/m-"), info.model_uri
    return int(mlflow.register_model(info.model_uri, name).version)


IRIS_BODY = _split(_iris_rows())
DIABETES_BODY = _split(_diabetes_rows())

FLAVORS: list[Flavor] = [
    Flavor("sklearn", "sklearn", log_sklearn, IRIS_BODY, "int64", _columns(_iris_rows(), "FP64"), fast=True),
    Flavor(
        "pytorch-pt2",
        "pytorch",
        _torch_logger("pt2"),
        {"inputs": TORCH_ROWS.tolist()},
        "float32",
        _tensor(TORCH_ROWS, "FP32"),
        fast=True,
    ),
    Flavor(
        "pytorch-pickle",
        "pytorch",
        _torch_logger("pickle"),
        {"inputs": TORCH_ROWS.tolist()},
        "float32",
        _tensor(TORCH_ROWS, "FP32"),
        pickled=True,
        fast=True,
    ),
    Flavor("xgboost", "xgboost", log_xgboost, DIABETES_BODY, "float32", _columns(_diabetes_rows(), "FP64"), fast=True),
    Flavor(
        "lightgbm",
        "lightgbm",
        log_lightgbm,
        IRIS_BODY,
        "int64",
        _columns(_iris_rows(), "FP64"),
        pickled=True,
        fast=True,
    ),
    Flavor(
        "catboost", "catboost", log_catboost, DIABETES_BODY, "float64", _columns(_diabetes_rows(), "FP64"), fast=True
    ),
    Flavor(
        "statsmodels",
        "statsmodels",
        log_statsmodels,
        DIABETES_BODY,
        "float64",
        _columns(_diabetes_rows(), "FP64"),
        pickled=True,
    ),
    Flavor(
        "prophet",
        "prophet",
        log_prophet,
        _split(PROPHET_DAYS),
        None,
        no_oip="its input is a column of dates, which OIP has no datatype for",
    ),
    Flavor(
        "onnx",
        "onnx",
        log_onnx,
        {"inputs": _iris_rows().to_numpy(np.float32).tolist()},
        "float32",
        _tensor(_iris_rows().to_numpy(np.float32), "FP32"),
    ),
    Flavor("keras", "keras", log_keras, {"inputs": TORCH_ROWS.tolist()}, "float32", _tensor(TORCH_ROWS, "FP32")),
    Flavor(
        "transformers-text",
        "transformers",
        _transformers_logger("text-classification"),
        {"inputs": TEXTS},
        None,
        _strings(TEXTS),
    ),
    Flavor(
        "transformers-tensor",
        "transformers",
        _transformers_logger("feature-extraction"),
        {"inputs": TEXTS},
        "float32",
        _strings(TEXTS),
    ),
    Flavor(
        "sentence-transformers",
        "sentence_transformers",
        log_sentence_transformers,
        {"inputs": TEXTS},
        "float32",
        _strings(TEXTS),
    ),
    Flavor(
        "python-model",
        "python_function",
        log_python_model,
        IRIS_BODY,
        "float64",
        _columns(_iris_rows(), "FP64"),
        pickled=True,
    ),
    Flavor(
        "models-from-code",
        "python_function",
        _code_logger(None),
        IRIS_BODY,
        "float64",
        _columns(_iris_rows(), "FP64"),
    ),
    Flavor(
        "model-config",
        "python_function",
        _code_logger({"factor": 3.0}),
        IRIS_BODY,
        "float64",
        _columns(_iris_rows(), "FP64"),
    ),
    Flavor(
        "code-paths",
        "sklearn",
        log_code_paths,
        IRIS_BODY,
        "int64",
        _columns(_iris_rows(), "FP64"),
        pickled=True,
        fast=True,
    ),
    Flavor(
        "logged-model",
        "sklearn",
        log_logged_model,
        DIABETES_BODY,
        "float64",
        _columns(_diabetes_rows(), "FP64"),
        pickled=True,
        fast=True,
    ),
]

# Not served: these flavors' loaders need a Java runtime (a JVM the gateway does not start).
NOT_SERVED = {
    "spark": "needs a Java runtime and a Spark session in the serving process",
    "h2o": "needs a Java runtime and an H2O cluster started by the loader",
}
