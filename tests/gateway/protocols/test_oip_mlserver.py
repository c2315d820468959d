"""Differential: the gateway's Open Inference Protocol against MLServer's (mlserver-mlflow), the
server whose mlflow runtime it follows, on the same registry versions and the same V2 payloads.
Both answer every payload; the answers must be the same field by field (model name and
version, the request's id, parameters, and each output's name, datatype, shape, parameters and
data), less the few differences each named where it is dropped, with the reason.

MLServer runs as a real subprocess on loopback, from ``.venv-mlserver`` (``make mlserver-env``,
with the project's own mlflow, scikit-learn, pandas and numpy), serving the versions'
artifacts downloaded from the registry (bench/mlserver_env.py, shared with the benchmark). The
gateway serves the same registry. Each is started once for the module.

The versions: the session's iris (a column signature of doubles, INT64 labels), its
``tiny-torch`` (a float32 tensor in and out) where torch is installed, and three logged here:
a tensor signature (``np``), a pipeline over columns of five dtypes (INT64, FP32, FP64, BYTES,
BOOL) answering string labels, and a model as code answering a frame (one output
per column). And rows of the flavor matrix (tests/flavors/models.py) whose libraries MLServer's
environment holds, logged by the matrix's own loggers and asked the matrix's own OIP body: there
the per-flavor shapes and datatypes the matrix pins are MLServer's too. Every number compared
is exact by construction: labels of rows checked to be far
from a tie (so no rounding in either process can flip them), integers, strings, and doubles
that are doubled (exact in binary floating point); except the torch network's float32
outputs, which each server computes with the kernels it picks: those must agree within twice
the rounding bound of the network on those rows (tests/support/numeric.py), and the matrix
rows' floats, each server's own computation of the same pyfunc: within 4 ulps of their dtype."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pandas as pd
import pytest

from bench import mlserver_env
from gateway.demo import IRIS, TORCH, iris_frame, torch_available
from gateway.protocols.proto import grpc_service_pb2 as pb
from gateway.protocols.proto import grpc_service_pb2_grpc as pb_grpc
from tests.conftest import IRIS_COLUMNS, Registry, settings_under
from tests.gateway.protocols.conftest import served
from tests.support.ci import missing
from tests.support.envs import env_bin
from tests.support.numeric import assert_far_from_ties, assert_within, mlp_error_bound
from tests.support.servers import Process, free_port

# The flavor matrix's rows MLServer's environment can load (scikit-learn, a model from code,
# code_paths, a LoggedModel): served by both under these names, asked the matrix's OIP body.
MATRIX_KEYS = ("sklearn", "code-paths", "logged-model", "models-from-code")

TENSOR = "oip-tensor"
MIXED = "oip-mixed"
COLUMNS = "oip-columns"
IRIS_ROWS = iris_frame()[0].iloc[[0, 50, 60, 100, 120, 149]]  # each class, and the row after a class starts
MIXED_ROWS = pd.DataFrame(
    {
        "count": np.array([3, 50, 99, 0, 71], dtype=np.int64),
        "ratio": np.array([0.25, 0.5, 0.75, 0.125, 1.0], dtype=np.float32),
        "size": np.array([4.0, 10.5, 18.25, -1.5, 9.0]),
        "colour": ["red", "green", "blue", "green", "red"],
        "flag": np.array([True, False, True, False, False]),
    }
)


# --- the versions -------------------------------------------------------------------------


def _mixed_training(rows: int = 80) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(11)
    frame = pd.DataFrame(
        {
            "count": rng.integers(0, 100, rows).astype(np.int64),
            "ratio": rng.random(rows).astype(np.float32),
            "size": rng.normal(10, 3, rows),
            "colour": rng.choice(["red", "green", "blue"], rows),
            "flag": rng.random(rows) < 0.5,
        }
    )
    score = frame["count"] / 50 + frame["ratio"] + frame["size"] / 5 + (frame["colour"] == "red") + frame["flag"]
    return frame, np.where(score < 3.5, "low", np.where(score < 4.5, "mid", "high")).astype(object)


def _log_mixed() -> tuple[int, Any]:
    """A pipeline over five dtypes (MLflow infers long, float, double, string, boolean) that
    answers string labels."""
    import mlflow.sklearn
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    frame, labels = _mixed_training()
    encode = ColumnTransformer(
        [("colour", OneHotEncoder(handle_unknown="ignore"), ["colour"])], remainder="passthrough"
    )
    pipeline = make_pipeline(encode, LogisticRegression(max_iter=5000)).fit(frame, labels)
    info = mlflow.sklearn.log_model(
        pipeline,
        name="model",
        registered_model_name=MIXED,
        input_example=frame.head(2),
        pip_requirements=["scikit-learn"],
    )
    return int(info.registered_model_version), pipeline


def _log_tensor() -> tuple[int, Any]:
    """iris fitted on a bare array: a tensor signature, float64 (-1, 4) in, int64 out."""
    import mlflow.sklearn
    from sklearn.linear_model import LogisticRegression

    features, target = iris_frame()
    model = LogisticRegression(max_iter=1000).fit(features.to_numpy(), target.to_numpy())
    info = mlflow.sklearn.log_model(
        model,
        name="model",
        registered_model_name=TENSOR,
        input_example=features.to_numpy()[:2],
        pip_requirements=["scikit-learn"],
    )
    return int(info.registered_model_version), model


def _log_columns() -> int:
    import mlflow.pyfunc

    example = pd.DataFrame({"x": [1.5, -2.0], "n": np.array([1, 2], dtype=np.int64), "s": ["a", "b"]})
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=str(Path(__file__).with_name("columns_model.py")),
        registered_model_name=COLUMNS,
        input_example=example,
        pip_requirements=["pandas"],
    )
    return int(info.registered_model_version)


@dataclass
class Versions:
    numbers: dict[str, int]  # model -> the version both servers serve
    torch_network: Any = None  # tiny-torch's network as MLflow loads it, for its rounding bound


def _needs(model: str, versions: Versions) -> None:
    if model not in versions.numbers:
        missing(f"{model} needs the [torch] extra")


@pytest.fixture(scope="session")  # session: set up before the session's registry, as pytest orders by scope
def mlserver_bin() -> Path:
    """The MLServer env: asked for first, so a missing env skips (or fails in CI) before the
    session's registry is built or anything is logged."""
    return env_bin(".venv-mlserver", "mlserver-env")


def matrix_row(key: str) -> Any:
    from tests.flavors.models import FLAVORS

    (flavor,) = [flavor for flavor in FLAVORS if flavor.key == key]
    return flavor


def matrix_name(key: str) -> str:
    return f"oip-matrix-{key}"


@pytest.fixture(scope="module")
def versions(mlserver_bin: Path, sqlite_registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Versions:
    tensor, tensor_model = sqlite_registry.log(_log_tensor)
    mixed, pipeline = sqlite_registry.log(_log_mixed)
    columns = sqlite_registry.log(_log_columns)
    scratch = tmp_path_factory.mktemp("oip-matrix")
    matrix = {}
    for key in MATRIX_KEYS:
        (scratch / key).mkdir()
        matrix[matrix_name(key)] = sqlite_registry.log(matrix_row(key).log, matrix_name(key), scratch / key)
    # The labels compared below are exact only if no row is within rounding of a tie; the
    # pipeline's encoding (one-hot, and passthrough of ints, float32 and bools into float64) is exact.
    iris = sqlite_registry.pyfunc(IRIS, sqlite_registry.versions[IRIS][0])
    assert_far_from_ties(iris.get_raw_model(), IRIS_ROWS)
    assert_far_from_ties(tensor_model, IRIS_ROWS.to_numpy())
    assert_far_from_ties(pipeline[-1], pipeline[:-1].transform(MIXED_ROWS))
    matrix_iris = sqlite_registry.pyfunc(matrix_name("sklearn"), matrix[matrix_name("sklearn")])
    iris_rows = pd.DataFrame({t["name"]: t["data"] for t in matrix_row("sklearn").oip["inputs"]})
    assert_far_from_ties(matrix_iris.get_raw_model(), iris_rows)
    numbers = {IRIS: sqlite_registry.versions[IRIS][0], TENSOR: tensor, MIXED: mixed, COLUMNS: columns, **matrix}
    if not torch_available():
        return Versions(numbers)
    numbers[TORCH] = sqlite_registry.versions[TORCH][0]
    return Versions(numbers, sqlite_registry.pyfunc(TORCH, numbers[TORCH])._model_impl.pytorch_model)


@dataclass
class Servers:
    gateway: httpx.Client
    mlserver: httpx.Client
    gateway_grpc: pb_grpc.GRPCInferenceServiceStub
    mlserver_grpc: pb_grpc.GRPCInferenceServiceStub


@pytest.fixture(scope="module")
def servers(
    versions: Versions, sqlite_registry: Registry, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Servers]:
    root = tmp_path_factory.mktemp("oip-mlserver")
    repository = root / "models"
    for name, number in versions.numbers.items():
        mlserver_env.add_version(repository, name, number, sqlite_registry.tracking_uri)
    # MLServer's three and the gateway's gRPC: free_port()'s, which stay free until MLServer binds them
    *picked, grpc_port = (free_port() for _ in range(4))
    ports = mlserver_env.Ports(*picked)
    mlserver_env.write_settings(repository, ports)
    mlserver = Process(
        mlserver_env.argv(repository),
        env={**os.environ, "PATH": f"{mlserver_env.VENV / 'bin'}:{os.environ.get('PATH', '')}"},
        log=root / "mlserver.log",
        health_url=f"http://127.0.0.1:{ports.http}/v2/health/ready",  # 200 once every model loaded
        name="MLServer",
    )
    mlserver.launch()  # it loads its models while the gateway starts
    try:
        with served(settings_under(root / "gateway", grpc_port=grpc_port), sqlite_registry) as address:
            mlserver.wait_up(timeout=120)
            with (
                httpx.Client(base_url=f"http://{address}", timeout=60) as gateway,
                httpx.Client(base_url=f"http://127.0.0.1:{ports.http}", timeout=60) as reference,
                grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as gateway_channel,
                grpc.insecure_channel(f"127.0.0.1:{ports.grpc}") as reference_channel,
            ):
                yield Servers(
                    gateway,
                    reference,
                    pb_grpc.GRPCInferenceServiceStub(gateway_channel),
                    pb_grpc.GRPCInferenceServiceStub(reference_channel),
                )
    finally:
        mlserver.stop()


# --- the payloads -------------------------------------------------------------------------


def _column(name: str, datatype: str, values: Any, *, shape: str = "column", **parameters: Any) -> dict[str, Any]:
    data = [value.item() if hasattr(value, "item") else value for value in values]
    tensor: dict[str, Any] = {
        "name": name,
        "datatype": datatype,
        "shape": [len(data), 1] if shape == "column" else [len(data)],
        "data": data,
    }
    if parameters:
        tensor["parameters"] = parameters
    return tensor


def _iris(rows: pd.DataFrame, **column: Any) -> list[dict[str, Any]]:
    return [_column(name, "FP64", rows[name].to_numpy(), **column) for name in IRIS_COLUMNS]


MIXED_TYPES = {"count": "INT64", "ratio": "FP32", "size": "FP64", "colour": "BYTES", "flag": "BOOL"}


def _mixed(rows: pd.DataFrame, **column: Any) -> list[dict[str, Any]]:
    return [_column(name, datatype, rows[name].to_numpy(), **column) for name, datatype in MIXED_TYPES.items()]


def _columns(shape: str = "column") -> list[dict[str, Any]]:
    return [
        _column("x", "FP64", [1.5, -2.25, 0.0, 1e300], shape=shape),
        _column("n", "INT64", [1, -5, 7, 2**40], shape=shape),
        _column("s", "BYTES", ["ab", "Cd", "é", ""], shape=shape),
    ]


TORCH_ROWS = np.random.default_rng(5).standard_normal((6, 4)).astype(np.float32)  # as JSON: exact


def _tensor(rows: np.ndarray, datatype: str = "FP64", **parameters: Any) -> dict[str, Any]:
    tensor: dict[str, Any] = {"name": "input-0", "datatype": datatype, "shape": list(rows.shape)}
    tensor["data"] = rows.ravel().tolist()
    if parameters:
        tensor["parameters"] = parameters
    return tensor


PAYLOADS: dict[str, tuple[str, dict[str, Any]]] = {
    "iris: FP64 columns [N, 1], the model's content type (pd)": (IRIS, {"inputs": _iris(IRIS_ROWS)}),
    "iris: content_type pd on the request, and an id": (
        IRIS,
        {"id": "diff-1", "parameters": {"content_type": "pd"}, "inputs": _iris(IRIS_ROWS)},
    ),
    "iris: one row": (IRIS, {"inputs": _iris(IRIS_ROWS.iloc[[3]])}),
    "iris: [N] shapes": (IRIS, {"inputs": _iris(IRIS_ROWS, shape="flat")}),
    "iris: content_type np on each input": (IRIS, {"inputs": _iris(IRIS_ROWS, content_type="np")}),
    "iris: outputs names its one output": (IRIS, {"inputs": _iris(IRIS_ROWS), "outputs": [{"name": "output-1"}]}),
    "tensor: one FP64 [N, 4], the model's content type (np)": (TENSOR, {"inputs": [_tensor(IRIS_ROWS.to_numpy())]}),
    "tensor: content_type np on the request and the input, and an id": (
        TENSOR,
        {
            "id": "diff-2",
            "parameters": {"content_type": "np"},
            "inputs": [_tensor(IRIS_ROWS.to_numpy(), content_type="np")],
        },
    ),
    "tensor: one row": (TENSOR, {"inputs": [_tensor(IRIS_ROWS.to_numpy()[:1])]}),
    "mixed: INT64, FP32, FP64, BYTES and BOOL columns": (MIXED, {"inputs": _mixed(MIXED_ROWS)}),
    "mixed: content types on the request (pd) and the inputs (np, str)": (
        MIXED,
        {
            "parameters": {"content_type": "pd"},
            "inputs": [
                {**tensor, "parameters": {"content_type": "str" if tensor["datatype"] == "BYTES" else "np"}}
                for tensor in _mixed(MIXED_ROWS)
            ],
        },
    ),
    "mixed: one row": (MIXED, {"inputs": _mixed(MIXED_ROWS.iloc[[2]])}),
    "columns: a frame answers one output per column": (COLUMNS, {"inputs": _columns()}),
    "columns: [N] shapes, and an id": (COLUMNS, {"id": "diff-3", "inputs": _columns(shape="flat")}),
    "columns: outputs chooses and orders": (
        COLUMNS,
        {"inputs": _columns(), "outputs": [{"name": "shout"}, {"name": "doubled"}]},
    ),
    "torch: one FP32 [N, 4], the model's content type (np)": (TORCH, {"inputs": [_tensor(TORCH_ROWS, "FP32")]}),
    "torch: one row, content_type np, and an id": (
        TORCH,
        {"id": "diff-4", "inputs": [_tensor(TORCH_ROWS[:1], "FP32", content_type="np")]},
    ),
}


# --- the comparison -----------------------------------------------------------------------


def comparable(answer: dict[str, Any], request: dict[str, Any], *, mlserver: bool, rest: bool) -> dict[str, Any]:
    """An answer less what legitimately differs between the two servers."""
    answer = dict(answer)
    if "id" not in request and rest:
        # MLServer makes up a UUID for a REST request that sent no id; the gateway echoes an id
        # only when there is one (the protocol: "the identifier given in the request, if any").
        # Over gRPC an id is a string that is empty when not sent, and both leave it empty.
        made_up = answer.pop("id", None)
        assert (made_up is not None) if mlserver else (made_up is None), made_up
    if mlserver and "outputs" in request:
        # MLServer 1.7's mlflow runtime ignores `outputs` and answers every output; the gateway
        # answers those asked for, in the order asked. Compare with MLServer's answer chosen so.
        by_name = {output["name"]: output for output in answer["outputs"]}
        answer["outputs"] = [by_name[wanted["name"]] for wanted in request["outputs"]]
    return answer


def assert_same(answer: dict[str, Any], expected: dict[str, Any], bound: np.ndarray | None = None) -> None:
    """Field by field; with ``bound``, each output's data within it of the reference's (in the
    output's shape), the rest still exact."""
    assert answer.keys() == expected.keys()
    for key in answer.keys() - {"outputs"}:
        assert answer[key] == expected[key], key
    assert [output["name"] for output in answer["outputs"]] == [output["name"] for output in expected["outputs"]]
    for output, reference in zip(answer["outputs"], expected["outputs"], strict=True):
        if bound is None:
            assert output == reference, output["name"]  # name, datatype, shape, parameters and data
            continue
        assert {**output, "data": None} == {**reference, "data": None}, output["name"]
        shape = output["shape"]
        assert_within(np.reshape(output["data"], shape), np.reshape(reference["data"], shape), bound)


def rounding_bound(versions: Versions, model: str, body: dict[str, Any]) -> np.ndarray | None:
    """For the torch network, twice its rounding bound on the payload's rows (each server's
    answer is within the bound of the exact one); None for the models compared exactly."""
    if model != TORCH:
        return None
    (tensor,) = body["inputs"]
    rows = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
    return 2 * mlp_error_bound(versions.torch_network, rows)


@pytest.mark.parametrize("payload", list(PAYLOADS))
def test_the_same_payload_gets_the_same_answer(servers: Servers, versions: Versions, payload: str) -> None:
    model, body = PAYLOADS[payload]
    _needs(model, versions)
    path = f"/v2/models/{model}/versions/{versions.numbers[model]}/infer"
    theirs, ours = servers.mlserver.post(path, json=body), servers.gateway.post(path, json=body)
    assert theirs.status_code == 200, f"MLServer: {theirs.text[-2000:]}"
    assert ours.status_code == 200, f"gateway: {ours.text}"
    expected = comparable(theirs.json(), body, mlserver=True, rest=True)
    bound = rounding_bound(versions, model, body)
    assert_same(comparable(ours.json(), body, mlserver=False, rest=True), expected, bound)


TYPED_CONTENTS = {
    "BOOL": "bool_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def grpc_request(model: str, version: int, body: dict[str, Any]) -> pb.ModelInferRequest:
    """The same payload as a ``ModelInferRequest`` with typed contents (what the JSON says,
    field for field; BYTES as their UTF-8)."""
    request = pb.ModelInferRequest(model_name=model, model_version=str(version), id=body.get("id", ""))
    for key, value in body.get("parameters", {}).items():
        request.parameters[key].string_param = value
    for tensor in body["inputs"]:
        entry = request.inputs.add(name=tensor["name"], datatype=tensor["datatype"], shape=tensor["shape"])
        for key, value in tensor.get("parameters", {}).items():
            entry.parameters[key].string_param = value
        data = [item.encode() for item in tensor["data"]] if tensor["datatype"] == "BYTES" else tensor["data"]
        getattr(entry.contents, TYPED_CONTENTS[tensor["datatype"]]).extend(data)
    for wanted in body.get("outputs", []):
        request.outputs.add(name=wanted["name"])
    return request


def as_json(response: pb.ModelInferResponse) -> dict[str, Any]:
    """A gRPC answer in the form of the REST answer's JSON (typed contents as ``data``, BYTES
    as text, parameters as plain values, none where there are none), to compare as one."""
    assert not response.raw_output_contents  # typed contents in, typed contents out

    def plain(parameters: Any) -> dict[str, Any]:
        return {key: getattr(value, value.WhichOneof("parameter_choice")) for key, value in parameters.items()}

    document: dict[str, Any] = {"model_name": response.model_name, "model_version": response.model_version}
    if response.id:
        document["id"] = response.id
    document["parameters"] = plain(response.parameters)
    document["outputs"] = []
    for output in response.outputs:
        values = list(getattr(output.contents, TYPED_CONTENTS[output.datatype]))
        entry: dict[str, Any] = {
            "name": output.name,
            "datatype": output.datatype,
            "shape": list(output.shape),
            "data": [value.decode() for value in values] if output.datatype == "BYTES" else values,
        }
        if output.parameters:
            entry["parameters"] = plain(output.parameters)
        document["outputs"].append(entry)
    return document


@pytest.mark.parametrize("payload", list(PAYLOADS))
def test_the_same_payload_over_grpc_gets_the_same_answer(servers: Servers, versions: Versions, payload: str) -> None:
    model, body = PAYLOADS[payload]
    _needs(model, versions)
    request = grpc_request(model, versions.numbers[model], body)
    answer = comparable(as_json(servers.gateway_grpc.ModelInfer(request, timeout=60)), body, mlserver=False, rest=False)
    if model == MIXED:
        # MLServer 1.7 cannot answer strings held in an object array (sklearn's labels) over
        # gRPC: its NumpyCodec leaves them str, and its gRPC converter wants bytes for
        # bytes_contents. Its REST answer to the same payload is the reference instead. (When
        # MLServer answers here, this fails: compare with its gRPC answer then.)
        with pytest.raises(grpc.RpcError) as caught:
            servers.mlserver_grpc.ModelInfer(request, timeout=60)
        assert caught.value.code() == grpc.StatusCode.INTERNAL, caught.value
        assert "expected bytes, str found" in str(caught.value.details())
        path = f"/v2/models/{model}/versions/{versions.numbers[model]}/infer"
        expected = comparable(servers.mlserver.post(path, json=body).json(), body, mlserver=True, rest=True)
    else:
        expected = as_json(servers.mlserver_grpc.ModelInfer(request, timeout=60))
        expected = comparable(expected, body, mlserver=True, rest=False)
    assert_same(answer, expected, rounding_bound(versions, model, body))


@pytest.mark.parametrize("model", [IRIS, TENSOR, MIXED, COLUMNS, TORCH])
def test_model_metadata_is_the_same(servers: Servers, versions: Versions, model: str) -> None:
    _needs(model, versions)
    path = f"/v2/models/{model}/versions/{versions.numbers[model]}"
    theirs, ours = servers.mlserver.get(path).json(), servers.gateway.get(path).json()
    # What the gateway adds: the concrete version it resolved (MLServer 1.7 lists none, though
    # its model has one) and the platform (MLServer leaves it empty).
    assert ours.pop("versions") == [str(versions.numbers[model])] and theirs.pop("versions") == []
    assert ours.pop("platform") == "mlflow" and theirs.pop("platform") == ""
    assert ours == theirs
    assert servers.gateway.get(path + "/ready").status_code == servers.mlserver.get(path + "/ready").status_code == 200


# The OIP datatypes of floats, as numpy reads them: what an ulp of each is.
FLOAT_DTYPES = {"FP16": np.float16, "FP32": np.float32, "FP64": np.float64}


@pytest.mark.parametrize("key", MATRIX_KEYS)
def test_a_flavor_matrix_row_gets_mlservers_outputs(servers: Servers, versions: Versions, key: str) -> None:
    """The matrix's OIP body for the row, to both servers: the same outputs (name, datatype,
    shape, parameters), their data exact, floats within 4 ulps of their dtype."""
    name, body = matrix_name(key), matrix_row(key).oip
    path = f"/v2/models/{name}/versions/{versions.numbers[name]}/infer"
    theirs, ours = servers.mlserver.post(path, json=body), servers.gateway.post(path, json=body)
    assert theirs.status_code == 200, f"MLServer: {theirs.text[-2000:]}"
    assert ours.status_code == 200, f"gateway: {ours.text}"
    expected = comparable(theirs.json(), body, mlserver=True, rest=True)
    answer = comparable(ours.json(), body, mlserver=False, rest=True)
    assert answer.keys() == expected.keys()
    for field in answer.keys() - {"outputs"}:
        assert answer[field] == expected[field], field
    assert [o["name"] for o in answer["outputs"]] == [o["name"] for o in expected["outputs"]]
    for output, reference in zip(answer["outputs"], expected["outputs"], strict=True):
        assert {**output, "data": None} == {**reference, "data": None}, (output["name"], output, reference)
        dtype = FLOAT_DTYPES.get(reference["datatype"])
        if dtype is None:
            assert output["data"] == reference["data"], output["name"]
            continue
        desired = np.asarray(reference["data"], dtype=dtype)
        assert_within(output["data"], desired, 4 * np.spacing(np.abs(desired)).astype(np.float64))


def test_the_docs_count_the_payloads_and_name_the_matrix_rows() -> None:
    text = " ".join((Path(__file__).resolve().parents[3] / "docs" / "protocols.md").read_text().split())
    assert f"The same {len(PAYLOADS)} V2 payloads" in text
    assert "(" + ", ".join(f"`{key}`" for key in MATRIX_KEYS) + ")" in text
