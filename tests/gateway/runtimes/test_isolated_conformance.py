"""An isolated version answers exactly as the same version served in process: the conformance
corpus (tests/conformance) sent to one gateway with GATEWAY_ENV_ISOLATE=always and to one
without, alone and batched, status, error code and body for body.

The Open Inference Protocol's REST adapter is compared the same way on the iris version
(tensors that take the fast path, tensors pyfunc converts, a refused request).

The kinds that run here are the scikit-learn ones and the generic pyfunc whose class a worker
can import: pickled PythonModels of the test suite itself (tests.conformance.models) name a
module only the test process has, and torch's environment from the public index is a CUDA
build of several GB (docs/operations.md: Models with their own environments).
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from mlflow.tracking import MlflowClient

from gateway.demo import using_registry
from tests.conformance import harness
from tests.conformance import models as kinds
from tests.conformance.corpus import corpus
from tests.conftest import IRIS_COLUMNS, Registry, running_gateway, settings_under
from tests.support.mlflow_db import new_mlflow_db

pytestmark = pytest.mark.anyio

KINDS = [kinds.IRIS, kinds.PIPELINE, kinds.INT64]
_ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
OIP_BODIES = {
    "oip FP64 columns": {
        "inputs": [
            {"name": column, "datatype": "FP64", "shape": [len(_ROWS), 1], "data": [row[i] for row in _ROWS]}
            for i, column in enumerate(IRIS_COLUMNS)
        ]
    },
    "oip FP32 columns (pyfunc converts)": {
        "inputs": [
            {"name": column, "datatype": "FP32", "shape": [len(_ROWS)], "data": [row[i] for row in _ROWS]}
            for i, column in enumerate(IRIS_COLUMNS)
        ]
    },
    "oip a missing column": {"inputs": [{"name": IRIS_COLUMNS[0], "datatype": "FP64", "shape": [1], "data": [1.0]}]},
}


@pytest.fixture(scope="module")
def corpus_registry(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, int]]:
    root = tmp_path_factory.mktemp("isolated-corpus")
    uri = new_mlflow_db(root / "mlflow.db")
    with using_registry(uri, root / "artifacts"):
        versions = {
            kinds.IRIS.name: kinds.log_iris_version(kinds.IRIS.name, c=1.0),
            kinds.PIPELINE.name: kinds.log_pipeline(kinds.PIPELINE.name),
            kinds.INT64.name: kinds.log_int64(kinds.INT64.name),
        }
    return uri, versions


@pytest.fixture(scope="module")
def env_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One environment folder for the module's gateways: the corpus's versions all need the same
    environment, built once (uv venv and install) where each test built its own copy of it."""
    return tmp_path_factory.mktemp("corpus-envs")


async def answers(
    uri: str, versions: dict[str, int], root: Path, **settings: object
) -> dict[tuple[str, str, str], list[harness.Answer]]:
    out: dict[tuple[str, str, str], list[harness.Answer]] = {}
    async with running_gateway(settings_under(root, **settings), uri) as gw:
        for kind in KINDS:
            url = f"/models/{kind.name}/versions/{versions[kind.name]}/predict"
            cases = corpus(kind)
            for case, answer in (await harness.alone(gw.client, url, cases)).items():
                out[(kind.name, case, harness.ALONE)] = [answer]
            for case, batch in (await harness.batched(gw.client, url, cases, rounds=1, seed=1)).items():
                out[(kind.name, case, harness.BATCHED)] = batch
            if kind is kinds.IRIS:  # the Open Inference Protocol: columns as tensors, one row per tensor row
                for label, body in OIP_BODIES.items():
                    answer = await gw.client.post(
                        f"/v2/models/{kind.name}/versions/{versions[kind.name]}/infer", json=body
                    )
                    out[(kind.name, label, "oip")] = [harness.Answer(answer.status_code, None, answer.json())]
            runtime = (await gw.client.get(f"/models/{kind.name}/versions/{versions[kind.name]}")).json()["runtime"]
            out[(kind.name, "runtime", "")] = [harness.Answer(200, None, runtime["runtime"])]
    return out


def _same(answers: list[harness.Answer]) -> list[harness.Answer]:
    """The answers, with the one part of MLflow's messages that no two processes write alike:
    the extra inputs its schema check lists from a set, in the process's string-hash order."""
    out = []
    for answer in answers:
        document = answer.document
        if isinstance(document, dict) and isinstance(document.get("message"), str):
            message = re.sub(
                r"extra inputs: \[([^\]]*)\]",
                lambda m: "extra inputs: [" + ", ".join(sorted(m.group(1).split(", "))) + "]",
                document["message"],
            )
            document = {**document, "message": message}
        out.append(harness.Answer(answer.status, answer.error_code, document))
    return out


async def test_isolated_versions_answer_the_corpus_as_in_process_ones_do(
    corpus_registry: tuple[str, dict[str, int]], tmp_path: Path, env_dir: Path
) -> None:
    uri, versions = corpus_registry
    here = await answers(uri, versions, tmp_path / "in-process", env_dir=env_dir)
    isolated = await answers(uri, versions, tmp_path / "isolated", env_dir=env_dir, env_isolate="always")
    for kind in KINDS:
        assert here.pop((kind.name, "runtime", ""))[0].document == "in_process"
        assert isolated.pop((kind.name, "runtime", ""))[0].document == "isolated"
    assert here.keys() == isolated.keys()
    differ = {key: (here[key], isolated[key]) for key in here if _same(here[key]) != _same(isolated[key])}
    assert not differ, differ
    assert sum(1 for answers in here.values() for a in answers if a.status == 200) > 50  # most cases answer


async def test_an_isolated_fast_path_survives_its_worker_being_killed(
    corpus_registry: tuple[str, dict[str, int]], tmp_path: Path, env_dir: Path
) -> None:
    import os
    import signal

    from tests.support.waiting import eventually

    uri, versions = corpus_registry
    url = f"/models/iris/versions/{versions['iris']}/predict"
    body = {"dataframe_split": {"columns": IRIS_COLUMNS, "data": _ROWS}}
    settings = settings_under(tmp_path, env_dir=env_dir, env_isolate="always")
    async with running_gateway(settings, uri) as gw:
        first = await gw.client.post(url, json=body)
        assert first.status_code == 200, first.text
        pid = (await gw.client.get(f"/models/iris/versions/{versions['iris']}")).json()["runtime"]["worker_pid"]

        def fast() -> float:
            sample = gw.services.metrics.registry.get_sample_value
            return sample("gateway_predictions_by_path_total", {"model": "iris", "path": "fast"}) or 0.0

        before = fast()
        os.kill(pid, signal.SIGKILL)

        async def answered() -> httpx.Response | None:
            again = await gw.client.post(url, json=body)
            if again.status_code != 200:
                assert again.status_code == 503, again.text  # while it restarts: never a 400 or 500
                return None
            return again

        again = await eventually(answered, "the restarted worker to answer", timeout=60)
        assert again.status_code == 200 and again.content == first.content
        assert fast() > before  # the restarted worker took the fast path again


def test_grpc_answers_from_an_isolated_worker_are_those_of_in_process_serving(
    corpus_registry: tuple[str, dict[str, int]], tmp_path: Path, env_dir: Path
) -> None:
    """The Open Inference Protocol over gRPC, with tritonclient as its users call it: the same
    tensors from a version in process and from the same version in a worker."""
    import numpy as np
    import tritonclient.grpc as triton
    from tritonclient.utils import InferenceServerException

    from tests.gateway.protocols.conftest import served
    from tests.support.servers import free_port

    uri, versions = corpus_registry
    registry = Registry("sqlite", uri, tmp_path, MlflowClient(tracking_uri=uri))
    rows = np.asarray(_ROWS)

    runtimes = []

    def answers(label: str, **settings: object) -> list[object]:
        port = free_port()
        out: list[object] = []
        with served(settings_under(tmp_path / label, env_dir=env_dir, grpc_port=port, **settings), registry) as http:
            client = triton.InferenceServerClient(f"127.0.0.1:{port}")
            try:
                for dtype, cast in (("FP64", np.float64), ("FP32", np.float32)):
                    inputs = []
                    for index, column in enumerate(IRIS_COLUMNS):
                        tensor = triton.InferInput(column, [len(rows), 1], dtype)
                        tensor.set_data_from_numpy(np.ascontiguousarray(rows[:, [index]].astype(cast)))
                        inputs.append(tensor)
                    result = client.infer(kinds.IRIS.name, inputs, model_version=str(versions[kinds.IRIS.name]))
                    out.append(result.get_response(as_json=True)["outputs"])
                bad = triton.InferInput("nonsense", [1], "FP64")
                bad.set_data_from_numpy(np.zeros(1))
                try:
                    client.infer(kinds.IRIS.name, [bad], model_version=str(versions[kinds.IRIS.name]))
                except InferenceServerException as exc:
                    out.append((exc.status(), exc.message()))
            finally:
                client.close()
            detail = httpx.get(f"http://{http}/models/{kinds.IRIS.name}/versions/{versions[kinds.IRIS.name]}")
            runtimes.append(detail.json()["runtime"]["runtime"])
        return out

    here = answers("in-process")
    isolated = answers("isolated", env_isolate="always")
    assert runtimes == ["in_process", "isolated"]
    assert len(here) == 3 and here == isolated
