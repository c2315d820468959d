"""The flavor matrix (issue 41): a version of every flavor below, logged with MLflow's own
flavor, is served by the gateway with its default settings and answers as MLflow does: each
answer is compared with MLflow's scoring app (``mlflow models serve``'s, in process) over
``mlflow.pyfunc.load_model`` on the same body, through the MLflow scoring routes and the Open
Inference Protocol where it applies, floats within 4 ulps of the answer's dtype.

One registry and one gateway for the module (every model logged once); the libraries are the
project's ``flavors`` extra, so the versions load in process as in most deployments, and one
flavor is served again from an environment of its own, built with uv, to show that path too.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from mlflow.models import Model

from gateway.runtimes.policy import TESTED_FLAVORS, LoadingPolicy, PolicyViolation, loading_flavor
from tests.conformance.corpus import Case
from tests.conformance.harness import Answer, read_answer, reference_answers, same_document
from tests.conftest import Registry, empty_registry, settings_under
from tests.flavors.models import FLAVORS, NOT_SERVED, Flavor
from tests.gateway.protocols.conftest import served
from tests.support.ci import missing

LIBRARIES = ("xgboost", "lightgbm", "catboost", "statsmodels", "prophet", "onnxruntime", "skl2onnx", "keras")
LIBRARIES += ("transformers", "sentence_transformers", "torch")
_missing = [name for name in LIBRARIES if importlib.util.find_spec(name) is None]
if _missing:
    missing(f"the flavors extra is not installed ({', '.join(_missing)}): pip install '.[flavors]'", module=True)

ROOT = Path(__file__).resolve().parents[2]
BY_KEY = {flavor.key: flavor for flavor in FLAVORS}
ISOLATED = "lightgbm"  # served again from an environment of its own


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> tuple[Registry, dict[str, int]]:
    """Every flavor's version, logged once into a registry of the module's own."""
    registry = empty_registry(tmp_path_factory.mktemp("matrix-registry"))
    scratch = tmp_path_factory.mktemp("matrix-scratch")
    versions = {}
    for flavor in FLAVORS:
        (scratch / flavor.key).mkdir()
        versions[flavor.key] = registry.log(flavor.log, flavor.name, scratch / flavor.key)
    return registry, versions


@dataclass(frozen=True)
class Reference:
    answer: Answer  # MLflow's scoring app's, for the flavor's body
    raw: Any  # its pyfunc's predict on the body as that app parses it (before JSON)
    metadata: Model


@pytest.fixture(scope="module")
def references(matrix: tuple[Registry, dict[str, int]]) -> dict[str, Reference]:
    """What MLflow answers for each flavor's body: its scoring app's JSON, and its pyfunc's own
    output on the same input (what an OIP answer is made of)."""
    from mlflow.pyfunc.scoring_server import _parse_json_data

    registry, versions = matrix
    found = {}
    for flavor in FLAVORS:
        pyfunc = registry.pyfunc(flavor.name, versions[flavor.key])
        body = json.dumps(flavor.body)
        answer = asyncio.run(reference_answers(pyfunc, [Case(flavor.key, body.encode())]))[flavor.key]
        parsed = _parse_json_data(body, pyfunc.metadata, pyfunc.metadata.get_input_schema())
        found[flavor.key] = Reference(answer, pyfunc.predict(parsed.data, params=parsed.params), pyfunc.metadata)
    return found


@pytest.fixture(scope="module")
def gateway(matrix: tuple[Registry, dict[str, int]], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One gateway with the default settings (the flavors allowed are the defaults)."""
    registry, _ = matrix
    with served(settings_under(tmp_path_factory.mktemp("matrix-gateway")), registry) as address:
        yield f"http://{address}"


@pytest.fixture(scope="module")
def client(gateway: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway, timeout=120) as connection:
        yield connection


def _bound(expected: Any, dtype: str | None, *, fast: bool = True) -> Any:
    """4 ulps of the answer's dtype at each expected value (the fast path's allowance); None,
    exact equality, where the gateway answers through the same pyfunc as MLflow (not `fast`)."""
    if not fast or dtype is None or not dtype.startswith("float"):
        return None
    try:
        values = np.abs(np.asarray(expected, dtype=dtype))
    except (TypeError, ValueError):  # records, mixed: compared as they are
        return None
    return 4 * np.spacing(values).astype(np.float64)


def _agrees(flavor: Flavor, expected: Answer, actual: Answer) -> None:
    assert expected.status == 200, f"MLflow itself refused the body: {expected.short()}"
    assert actual.status == 200, actual.short()
    predictions = expected.document["predictions"]
    bound = _bound(predictions, flavor.dtype, fast=flavor.fast) if isinstance(predictions, list) else None
    assert same_document(expected.document, actual.document, flavor.dtype, bound), (
        f"\n  mlflow:  {json.dumps(expected.document)[:600]}\n  gateway: {json.dumps(actual.document)[:600]}"
    )


def test_the_default_flavors_are_the_matrix(references: dict[str, Reference]) -> None:
    """Each version's loading flavor is the row's, and the defaults admit exactly those."""
    for flavor in FLAVORS:
        assert loading_flavor(references[flavor.key].metadata) == flavor.flavor, flavor.key
    assert sorted({flavor.flavor for flavor in FLAVORS}) == sorted(TESTED_FLAVORS)


@pytest.mark.parametrize("route", ["predict", "invocations"])
@pytest.mark.parametrize("key", list(BY_KEY))
def test_mlflow_scoring_routes_answer_as_mlflow(
    client: httpx.Client,
    matrix: tuple[Registry, dict[str, int]],
    references: dict[str, Reference],
    key: str,
    route: str,
) -> None:
    flavor, version = BY_KEY[key], matrix[1][key]
    answer = client.post(f"/models/{flavor.name}/versions/{version}/{route}", json=flavor.body)
    _agrees(flavor, references[key].answer, read_answer(answer))


def _outputs(raw: Any) -> dict[str, list[Any]]:
    """A pyfunc's output as the OIP outputs MLServer's mlflow runtime gives: a frame as one
    output per column, a dict as one per key, anything else (an array, a Series, a list) as
    ``output-1``; each flattened, as its ``data``."""
    if isinstance(raw, pd.DataFrame):
        return {str(name): np.asarray(raw[name]).ravel().tolist() for name in raw.columns}
    if isinstance(raw, dict):
        return {str(name): np.asarray(value).ravel().tolist() for name, value in raw.items()}
    return {"output-1": np.asarray(raw).ravel().tolist()}


@pytest.mark.parametrize("key", [flavor.key for flavor in FLAVORS if flavor.oip is not None])
def test_the_open_inference_protocol_answers_as_mlflow(
    client: httpx.Client,
    matrix: tuple[Registry, dict[str, int]],
    references: dict[str, Reference],
    key: str,
) -> None:
    flavor, version = BY_KEY[key], matrix[1][key]
    answer = client.post(f"/v2/models/{flavor.name}/versions/{version}/infer", json=flavor.oip)
    assert answer.status_code == 200, answer.text
    outputs = {output["name"]: output for output in answer.json()["outputs"]}
    expected = _outputs(references[key].raw)
    assert sorted(outputs) == sorted(expected), (sorted(outputs), sorted(expected))
    for name, flat in expected.items():
        ours = outputs[name]["data"]
        bound = _bound(flat, flavor.dtype, fast=flavor.fast)
        assert same_document(flat, ours, flavor.dtype, bound), (name, flat[:8], ours[:8])
        assert int(np.prod(outputs[name]["shape"])) == len(flat)
        assert outputs[name]["datatype"] == oip_datatype(references[key].raw, name), (name, outputs[name]["datatype"])


# The Open Inference Protocol's tensor datatypes by numpy kind and size (its spec's table:
# https://github.com/kserve/open-inference-protocol, "Tensor Data Types"), written here, not
# taken from the gateway's codec: what each output of MLflow's own answer must be sent as.
OIP_DATATYPES = {
    ("b", 1): "BOOL",
    ("i", 1): "INT8", ("i", 2): "INT16", ("i", 4): "INT32", ("i", 8): "INT64",
    ("u", 1): "UINT8", ("u", 2): "UINT16", ("u", 4): "UINT32", ("u", 8): "UINT64",
    ("f", 2): "FP16", ("f", 4): "FP32", ("f", 8): "FP64",
}  # fmt: skip


def oip_datatype(raw: Any, name: str) -> str:
    """The datatype of output `name` of a pyfunc's raw answer (see _outputs), by the spec's table;
    strings and objects are BYTES."""
    if isinstance(raw, pd.DataFrame):
        values = np.asarray(raw[name])
    elif isinstance(raw, dict):
        values = np.asarray(raw[name])
    else:
        values = np.asarray(raw)
    if values.dtype.kind in "OUS":
        return "BYTES"
    return OIP_DATATYPES[(values.dtype.kind, values.dtype.itemsize)]


def test_flavors_without_oip_say_why() -> None:
    for flavor in FLAVORS:
        assert (flavor.oip is None) == bool(flavor.no_oip), flavor.key


def test_the_pickle_setting_refuses_exactly_the_pickled_formats(
    matrix: tuple[Registry, dict[str, int]], references: dict[str, Reference]
) -> None:
    """GATEWAY_ALLOW_PICKLE=false, flavor by flavor, on the versions' own files."""
    import mlflow.artifacts

    registry, versions = matrix
    refused = []
    for flavor in FLAVORS:
        uri = f"models:/{flavor.name}/{versions[flavor.key]}"
        path = Path(registry.log(mlflow.artifacts.download_artifacts, uri))
        metadata = Model.load(str(path / "MLmodel"))
        try:
            LoadingPolicy(allow_pickle=False).check(metadata, path)
        except PolicyViolation:
            refused.append(flavor.key)
        LoadingPolicy(allow_pickle=True).check(metadata, path)  # the default: every flavor loads
    assert refused == [flavor.key for flavor in FLAVORS if flavor.pickled]


@pytest.mark.parametrize("key", list(BY_KEY))
def test_each_version_is_served_by_the_path_its_row_says(
    client: httpx.Client, matrix: tuple[Registry, dict[str, int]], key: str
) -> None:
    flavor, version = BY_KEY[key], matrix[1][key]
    assert client.post(f"/models/{flavor.name}/versions/{version}/predict", json=flavor.body).status_code == 200
    loaded = client.get(f"/models/{flavor.name}/versions/{version}").json()["loaded"]
    assert loaded["path"] == ("fast" if flavor.fast else "pyfunc"), loaded["path_reason"]


def test_the_user_guide_has_the_matrix() -> None:
    """docs/user-guide.md's Flavors table: one row per flavor of the matrix (its loading flavor,
    whether OIP serves it, whether the fast path serves it, and whether GATEWAY_ALLOW_PICKLE=false
    refuses it), then the flavors not served."""
    text = (ROOT / "docs" / "user-guide.md").read_text()
    section = text.split("\n## Flavors\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([^`]+)` \| `([^`]+)` \|[^|]*\|([^|]*)\|([^|]*)\|", section, flags=re.MULTILINE)
    # per flavor: its key, loading flavor, whether OIP serves it, the path, what the pickle setting does
    expected = [
        (f.key, f.flavor, f.oip is not None, "fast path" if f.fast else "pyfunc", "refused" if f.pickled else "loads")
        for f in FLAVORS
    ]
    shown = [
        (key, flavor, not oip.strip().startswith("not served"), path.split(";")[0].strip(), path.strip().split()[-1])
        for key, flavor, oip, path in rows
    ]
    assert shown == expected
    for flavor, why in NOT_SERVED.items():
        assert f"| `{flavor}` | not served |" in section and why in section


KERAS_LOAD = """
import sys
from pathlib import Path
from mlflow.models import Model
from gateway.runtimes.inprocess import InProcessRuntime

path = Path(sys.argv[1])
loaded = InProcessRuntime().load(path, Model.load(str(path / "MLmodel")))
import keras
print(keras.backend.backend())
"""


def test_a_keras_version_loads_on_its_own_backend_where_nothing_chose_one(
    matrix: tuple[Registry, dict[str, int]],
) -> None:
    """Keras takes its backend from KERAS_BACKEND once; MLflow's loader sets none, so a torch
    version fails in a fresh process (Keras reaches for TensorFlow) unless the gateway sets it from
    the version's MLmodel. Another backend already chosen is refused in words."""
    import mlflow.artifacts

    registry, versions = matrix
    path = registry.log(mlflow.artifacts.download_artifacts, f"models:/{BY_KEY['keras'].name}/{versions['keras']}")
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    command = [sys.executable, "-c", KERAS_LOAD, path]
    fresh = subprocess.run(command, capture_output=True, text=True, timeout=180, env=env, check=False)
    assert fresh.returncode == 0 and fresh.stdout.strip() == "torch", fresh.stderr[-2000:]
    other = subprocess.run(
        command, capture_output=True, text=True, timeout=180, env={**env, "KERAS_BACKEND": "jax"}, check=False
    )
    assert other.returncode != 0
    assert "saved on Keras's torch backend and Keras here runs on jax (KERAS_BACKEND)" in other.stderr


def test_one_flavor_serves_from_an_environment_of_its_own(
    matrix: tuple[Registry, dict[str, int]],
    references: dict[str, Reference],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The per-model environment path: the same version in a worker on an environment uv builds
    from its requirements (GATEWAY_ENV_ISOLATE=always), answering as MLflow does."""
    registry, versions = matrix
    flavor = BY_KEY[ISOLATED]
    root = tmp_path_factory.mktemp("matrix-isolated")
    settings = settings_under(root, env_dir=root / "envs", env_isolate="always")
    with served(settings, registry) as address, httpx.Client(base_url=f"http://{address}", timeout=300) as http:
        answer = http.post(f"/models/{flavor.name}/versions/{versions[ISOLATED]}/invocations", json=flavor.body)
        _agrees(flavor, references[ISOLATED].answer, read_answer(answer))
        runtime = http.get(f"/models/{flavor.name}/versions/{versions[ISOLATED]}").json()["runtime"]
        assert runtime["runtime"] == "isolated", runtime


@pytest.mark.parametrize("form", ["records", "columns reordered", "one row"])
@pytest.mark.parametrize("key", ["xgboost", "lightgbm", "catboost"])
def test_the_tree_fast_paths_answer_as_mlflow_on_other_bodies(
    client: httpx.Client, matrix: tuple[Registry, dict[str, int]], key: str, form: str
) -> None:
    """XGBoost, LightGBM and CatBoost predict on the decoded array, never a frame: bodies the
    fast path reads otherwise (records, columns in another order, one row) answer as MLflow does."""
    registry, versions = matrix
    flavor = BY_KEY[key]
    split = flavor.body["dataframe_split"]
    columns, rows = split["columns"], split["data"]
    if form == "records":
        body: dict[str, Any] = {"dataframe_records": [dict(zip(columns, row, strict=True)) for row in rows]}
    elif form == "columns reordered":
        order = list(reversed(range(len(columns))))
        body = {
            "dataframe_split": {"columns": [columns[i] for i in order], "data": [[r[i] for i in order] for r in rows]}
        }
    else:
        body = {"dataframe_split": {"columns": columns, "data": rows[:1]}}
    pyfunc = registry.pyfunc(flavor.name, versions[key])
    expected = asyncio.run(reference_answers(pyfunc, [Case(form, json.dumps(body).encode())]))[form]
    answer = client.post(f"/models/{flavor.name}/versions/{versions[key]}/predict", json=body)
    _agrees(flavor, expected, read_answer(answer))
    assert client.get(f"/models/{flavor.name}/versions/{versions[key]}").json()["loaded"]["path"] == "fast"


BURSTS = 5  # of concurrent requests, until one shares a predict call


@pytest.mark.parametrize("key", ["xgboost", "lightgbm", "catboost"])
def test_the_tree_flavors_batch_and_each_request_gets_its_own_rows(
    gateway: str, matrix: tuple[Registry, dict[str, int]], references: dict[str, Reference], key: str
) -> None:
    """Row-independent like sklearn: concurrent requests share a predict call (batching is on
    by default for these flavors), and each gets exactly MLflow's answer for its own row."""
    registry, versions = matrix
    flavor = BY_KEY[key]
    split = flavor.body["dataframe_split"]
    expected = references[key].answer.document["predictions"]
    url = f"/models/{flavor.name}/versions/{versions[key]}/predict"

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=gateway, timeout=60) as http:
            bodies = [{"dataframe_split": {"columns": split["columns"], "data": [row]}} for row in split["data"]]
            return await asyncio.gather(*(http.post(url, json=body) for body in bodies * 4))

    def batches() -> float:  # predict calls of this model so far (the batcher's histogram's count)
        text = httpx.get(f"{gateway}/metrics", timeout=30).text
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("gateway_batch_size_count{") and f'model="{flavor.name}"' in line
        )

    # Whether requests meet in the queue depends on how they arrive: on a busy 2-core host the
    # client may send them one by one, each answered before the next comes (seen once in CI). A
    # batcher that works forms a batch within a few bursts; a broken one never does.
    made = []
    for _ in range(BURSTS):
        before = batches()
        answers = asyncio.run(burst())
        made.append(batches() - before)
        if 0 < made[-1] < len(answers):
            break
    assert 0 < made[-1] < len(answers), (
        f"bursts of {len(answers)} concurrent requests made {made} predict calls: no batch"
    )
    for index, answer in enumerate(answers):
        row = index % len(split["data"])
        assert answer.status_code == 200, answer.text
        document = {"predictions": answer.json()["predictions"]}
        reference = {"predictions": expected[row : row + 1]}
        assert same_document(reference, document, flavor.dtype, _bound(expected[row : row + 1], flavor.dtype))
