"""A small MLflow registry to try the gateway on (``registry-gateway demo-registry``).

It holds an sklearn iris classifier with two versions (aliases ``champion`` -> 1 and
``challenger`` -> 2) and, when torch is installed, a small torch network ``tiny-torch``.
Each start puts the aliases back where the README's tour begins.
The helpers that log those models are also what the test suite trains with.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from gateway import demo_models

IRIS = "iris"
TORCH = "tiny-torch"
AGENT = "echo-agent"  # a ResponsesAgent (gateway/demo_models): streams, and answers OpenAI's Responses API
CHAT = "echo-chat"  # a ChatModel: streams, and answers OpenAI's Chat Completions
EXPERIMENT = "registry-gateway-demo"
# Where each model's aliases point when the demo starts, as the README's tour expects (its
# step 5 moves champion): set again on every start.
START_ALIASES = {
    IRIS: {"champion": 1, "challenger": 2},
    TORCH: {"champion": 1},
    AGENT: {"champion": 1},
    CHAT: {"champion": 1},
}


def iris_frame() -> tuple[pd.DataFrame, pd.Series]:
    from sklearn.datasets import load_iris

    features, target = load_iris(return_X_y=True, as_frame=True)
    return features, target


# A versicolor on which the demo's two iris versions disagree: version 1 (C=0.05) answers 2,
# version 2 (C=10) answers 1. The README's tour sends it, so a promotion shows in the answer.
DISAGREEING_ROW = (7.0, 3.2, 4.7, 1.4)


def log_iris_version(name: str = IRIS, *, c: float = 1.0, serialization_format: str | None = None) -> int:
    """Train a LogisticRegression on iris (regularised by ``c``), register it, return the version.
    ``serialization_format``: MLflow's (``skops`` by default in MLflow 3; ``cloudpickle``...)."""
    import mlflow.sklearn
    from sklearn.linear_model import LogisticRegression

    features, target = iris_frame()
    model = LogisticRegression(C=c, max_iter=1000).fit(features, target)
    with mlflow.start_run(run_name=f"{name}-C{c:g}"):
        mlflow.log_param("C", c)
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            registered_model_name=name,
            input_example=features.head(2),
            pip_requirements=["scikit-learn"],  # skips slow requirement inference
            **({"serialization_format": serialization_format} if serialization_format else {}),
        )
    return int(info.registered_model_version)


def torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


def log_torch_version(name: str = TORCH, *, seed: int = 0) -> int:
    """A small feed-forward network, 4 inputs to 3 outputs, registered as ``name``."""
    import mlflow.pytorch
    import torch

    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)).eval()
    example = np.random.default_rng(seed).random((2, 4), dtype=np.float32)
    with mlflow.start_run(run_name=f"{name}-seed{seed}"):
        info = mlflow.pytorch.log_model(
            net, name="model", registered_model_name=name, input_example=example, pip_requirements=["torch"]
        )
    return int(info.registered_model_version)


@contextmanager
def using_registry(tracking_uri: str, artifact_root: Path | None = None) -> Iterator[MlflowClient]:
    """Point MLflow's fluent API at one registry for the duration, then restore it."""
    # mlflow.set_tracking_uri sets MLFLOW_TRACKING_URI too and keeps the URI in a module global:
    # restore the variable as it was and leave no global behind (restoring through
    # set_tracking_uri(previous) would pin the global to a variable's value that its owner may
    # unset later, and MLflow would go on following it).
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(tracking_uri)
    try:
        client = MlflowClient(tracking_uri=tracking_uri)
        experiment = client.get_experiment_by_name(EXPERIMENT)
        if experiment is None:
            location = artifact_root.as_uri() if artifact_root is not None else None
            client.create_experiment(EXPERIMENT, artifact_location=location)
        mlflow.set_experiment(EXPERIMENT)
        yield client
    finally:
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]
        if previous is not None:
            os.environ["MLFLOW_TRACKING_URI"] = previous


@dataclass
class DemoRegistry:
    path: Path
    tracking_uri: str
    models: dict[str, dict[str, int]] = field(default_factory=dict)  # name -> alias -> version
    notes: list[str] = field(default_factory=list)

    def describe(self, base_url: str | None = None) -> str:
        lines = [f"Demo registry at {self.path}", f"  MLFLOW_TRACKING_URI={self.tracking_uri}"]
        for name, aliases in self.models.items():
            shown = ", ".join(f"{alias} -> {version}" for alias, version in sorted(aliases.items()))
            lines.append(f"  {name}: {shown}")
        lines.extend(f"  note: {note}" for note in self.notes)
        if base_url:
            lines += ["", "Try it (once the gateway is up):", *self.curl_lines(base_url)]
        return "\n".join(lines)

    def curl_lines(self, base_url: str) -> list[str]:
        json = "-H 'Content-Type: application/json'"
        split = (
            '{"dataframe_split": {"columns": ["sepal length (cm)", "sepal width (cm)", '
            f'"petal length (cm)", "petal width (cm)"], "data": [{list(DISAGREEING_ROW)}]}}}}'
        )
        lines = [
            f"  curl -s {base_url}/models | python3 -m json.tool",
            f"  curl -si {base_url}/models/{IRIS}/predict {json} -d '{split}'",
            f"  curl -si {base_url}/models/{IRIS}/predict {json} -H 'X-Model-Version: challenger' -d '{split}'",
            f"  curl -s {base_url}/models/{IRIS}/versions/latest/predict {json} -d '{split}'",
            f"  curl -s {base_url}/models/{IRIS}/versions/2 | python3 -m json.tool",
        ]
        if TORCH in self.models:
            body = '{"inputs": [[0.1, 0.2, 0.3, 0.4]]}'
            lines.append(f"  curl -s {base_url}/models/{TORCH}/predict {json} -d '{body}'")
        if AGENT in self.models:
            ask = '{"input": [{"role": "user", "content": "streamed a word at a time"}], "stream": true}'
            lines.append(f"  curl -sN {base_url}/models/{AGENT}/invocations {json} -d '{ask}'")
        if CHAT in self.models:
            chat = '{"model": "' + CHAT + '", "messages": [{"role": "user", "content": "hello there"}], "stream": true}'
            lines.append(f"  curl -sN {base_url}/v1/chat/completions {json} -d '{chat}'")
        lines += [
            f"  curl -s {base_url}/metrics | grep gateway_",
            "",
            f"The OpenAPI page, with examples: {base_url}/docs",
        ]
        return lines


def build_demo_registry(path: Path) -> DemoRegistry:
    """Create (or reuse) the demo registry under ``path``."""
    path.mkdir(parents=True, exist_ok=True)
    tracking_uri = f"sqlite:///{path / 'mlflow.db'}"
    demo = DemoRegistry(path=path, tracking_uri=tracking_uri)
    with using_registry(tracking_uri, path / "artifacts") as client:
        existing = {model.name: model for model in client.search_registered_models()}
        if IRIS not in existing:
            log_iris_version(IRIS, c=0.05)  # version 1, the champion
            log_iris_version(IRIS, c=10.0)  # version 2, the challenger
        demo.models[IRIS] = _start_aliases(client, IRIS, demo)
        if torch_available():
            if TORCH not in existing:
                log_torch_version(TORCH)
            demo.models[TORCH] = _start_aliases(client, TORCH, demo)
        else:
            demo.notes.append("torch is not installed: pip install '.[torch]' in the checkout for the torch model")
        for name, code in ((AGENT, demo_models.ECHO_AGENT), (CHAT, demo_models.ECHO_CHAT)):
            if name not in existing:
                with mlflow.start_run(run_name=name):
                    mlflow.pyfunc.log_model(name="model", python_model=str(code), registered_model_name=name)
            demo.models[name] = _start_aliases(client, name, demo)
    return demo


def _start_aliases(client: MlflowClient, name: str, demo: DemoRegistry) -> dict[str, int]:
    """Point ``name``'s aliases where the tour starts (a tour run before moved champion), and
    drop any other; a note says what moved back."""
    start = START_ALIASES[name]
    found = {alias: int(version) for alias, version in client.get_registered_model(name).aliases.items()}
    for alias in found.keys() - start.keys():
        client.delete_registered_model_alias(name, alias)
    for alias, version in start.items():
        if found.get(alias) != version:
            client.set_registered_model_alias(name, alias, str(version))
    moved = {alias: version for alias, version in found.items() if start.get(alias) != version}
    if moved:
        shown = ", ".join(f"{alias} was {version}" for alias, version in sorted(moved.items()))
        demo.notes.append(f"{name}: aliases reset to where the tour starts ({shown})")
    return dict(start)
