"""The Open Inference Protocol spoken by the KServe Python SDK's clients (``InferenceRESTClient``
in V2, ``InferenceGRPCClient``), against a real gateway on a real registry: server and model
readiness, model metadata, inference by number, alias and default, sklearn and torch, with
answers equal to pyfunc's.

The SDK's pins clash with the gateway's (envs/kserve.txt), so it runs in ``.venv-kserve``:
tests/gateway/protocols/kserve_driver.py is started once for the module with that interpreter
and makes each call this module asks for, reporting what the SDK handed back."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gateway.demo import IRIS, TORCH, iris_frame, torch_available
from tests.conftest import IRIS_COLUMNS, Registry, settings_under
from tests.gateway.protocols.conftest import served
from tests.support.ci import needs
from tests.support.envs import env_bin
from tests.support.numeric import assert_far_from_ties, assert_within, mlp_error_bound
from tests.support.servers import free_port

DRIVER = Path(__file__).with_name("kserve_driver.py")
FRAME = iris_frame()[0].iloc[[0, 60, 120, 149]]  # rows of each class
ROWS = FRAME.to_numpy()
# (transport, binary): REST JSON, REST with the binary tensor extension, gRPC typed contents,
# gRPC raw_input_contents; the SDK's own choice for each is set_data_from_numpy(binary_data=...)
WIRES = {
    "rest-json": ("rest", False),
    "rest-binary": ("rest", True),
    "grpc-typed": ("grpc", False),
    "grpc-raw": ("grpc", True),
}


class KServeClients:
    """The driver subprocess: one JSON line out per call, one back."""

    def __init__(self, python: Path, log: Path) -> None:
        self.log = log
        with log.open("wb") as errors:
            self.process = subprocess.Popen(
                [str(python), str(DRIVER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors, text=True
            )

    def connect(self, rest: str, grpc: str) -> None:
        self._send({"rest": rest, "grpc": grpc})

    def _send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()

    def call(self, call: str, **arguments: Any) -> dict[str, Any]:
        """``{"ok": result}`` or ``{"error": {...}}`` as the driver reported it."""
        assert self.process.stdout is not None
        self._send({"call": call, **arguments})
        line = self.process.stdout.readline()
        assert line, f"the kserve driver exited ({self.process.poll()}):\n{self.log.read_text()[-4000:]}"
        return json.loads(line)  # type: ignore[no-any-return]

    def ok(self, call: str, **arguments: Any) -> Any:
        outcome = self.call(call, **arguments)
        assert "ok" in outcome, outcome
        return outcome["ok"]

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()  # the driver's loop ends at end of input
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="session")  # session: set up before the session's registry, as pytest orders by scope
def kserve_python() -> Path:
    """The kserve env's interpreter: asked for first, so a missing env skips (or fails in CI)
    before the session's registry is built."""
    return env_bin(".venv-kserve", "kserve-env") / "python"


@pytest.fixture(scope="module")
def kserve(
    kserve_python: Path, sqlite_registry: Registry, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KServeClients]:
    python = kserve_python
    root = tmp_path_factory.mktemp("oip-kserve")
    clients = KServeClients(python, root / "kserve-driver.log")  # importing the SDK overlaps the gateway's start
    try:
        grpc_port = free_port()
        with served(settings_under(root, grpc_port=grpc_port), sqlite_registry) as http:
            clients.connect(f"http://{http}", f"127.0.0.1:{grpc_port}")
            yield clients
    finally:
        clients.close()


@pytest.fixture(scope="module")
def iris_labels(sqlite_registry: Registry) -> dict[int, np.ndarray]:
    """pyfunc's labels for ROWS, per iris version: exact, since no row is near a tie."""
    labels = {}
    for version in sqlite_registry.versions[IRIS]:
        reference = sqlite_registry.pyfunc(IRIS, version)
        assert_far_from_ties(reference.get_raw_model(), FRAME)
        labels[version] = np.asarray(reference.predict(FRAME)).reshape(-1, 1)
    return labels


def iris_inputs(rows: np.ndarray) -> list[dict[str, Any]]:
    return [
        {"name": column, "datatype": "FP64", "dtype": "float64", "shape": [len(rows), 1], "data": rows[:, [i]].tolist()}
        for i, column in enumerate(IRIS_COLUMNS)
    ]


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_server_live_and_ready(kserve: KServeClients, transport: str) -> None:
    assert kserve.ok("server", transport=transport) == {"live": True, "ready": True}


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_model_readiness_by_number_alias_and_default(
    kserve: KServeClients, sqlite_registry: Registry, transport: str
) -> None:
    _, second = sqlite_registry.versions[IRIS]
    for version in (None, str(second), "challenger", "latest"):
        assert kserve.ok("model_ready", transport=transport, model=IRIS, version=version) is True, version
    if transport == "rest":  # the REST client says False for a 4xx, as V2 has it
        assert kserve.ok("model_ready", transport=transport, model=IRIS, version="999") is False
        assert kserve.ok("model_ready", transport=transport, model="no-such-model", version=None) is False
    else:  # the gRPC client raises the status
        for model, version in ((IRIS, "999"), ("no-such-model", None)):
            error = kserve.call("model_ready", transport=transport, model=model, version=version)["error"]
            assert error["code"] == "NOT_FOUND", error


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_model_metadata_as_the_sdk_reads_it(kserve: KServeClients, sqlite_registry: Registry, transport: str) -> None:
    first, second = sqlite_registry.versions[IRIS]
    metadata = kserve.ok("model_metadata", transport=transport, model=IRIS, version="challenger")
    assert metadata["name"] == IRIS and metadata["versions"] == [str(second)] and metadata["platform"] == "mlflow"
    described = [(t["name"], t["datatype"], t["shape"]) for t in metadata["inputs"]]
    assert described == [(column, "FP64", [-1, 1]) for column in IRIS_COLUMNS]
    assert [(t["name"], t["datatype"], t["shape"]) for t in metadata["outputs"]] == [("output-0", "INT64", [-1, 1])]
    default = kserve.ok("model_metadata", transport=transport, model=IRIS, version=None)
    assert default["versions"] == [str(first)]  # the default alias, champion
    if torch_available():
        torch_metadata = kserve.ok("model_metadata", transport=transport, model=TORCH, version="latest")
        assert [(t["name"], t["datatype"], t["shape"]) for t in torch_metadata["inputs"]] == [
            ("input-0", "FP32", [-1, 4])
        ]


@pytest.mark.parametrize("wire", list(WIRES))
@pytest.mark.parametrize("selector", ["number", "alias", "default"])
def test_iris_answers_as_pyfunc_does(
    kserve: KServeClients,
    sqlite_registry: Registry,
    iris_labels: dict[int, np.ndarray],
    selector: str,
    wire: str,
) -> None:
    first, second = sqlite_registry.versions[IRIS]
    version, expected = {"number": (str(second), second), "alias": ("challenger", second), "default": (None, first)}[
        selector
    ]
    transport, binary = WIRES[wire]
    answer = kserve.ok(
        "infer", transport=transport, binary=binary, model=IRIS, version=version, inputs=iris_inputs(ROWS)
    )
    assert answer["model_name"] == IRIS and answer["model_version"] == str(expected)
    (output,) = answer["outputs"]
    assert (output["name"], output["datatype"], output["shape"], output["dtype"]) == (
        "output-1",
        "INT64",
        [len(ROWS), 1],
        "int64",
    )
    np.testing.assert_array_equal(np.asarray(output["data"]), iris_labels[expected])


@pytest.mark.parametrize("wire", list(WIRES))
def test_the_id_is_echoed_and_outputs_are_chosen(kserve: KServeClients, wire: str) -> None:
    transport, binary = WIRES[wire]
    answer = kserve.ok(
        "infer",
        transport=transport,
        binary=binary,
        model=IRIS,
        version="champion",
        inputs=iris_inputs(ROWS[:1]),
        outputs=["output-1"],
        id=f"kserve-{wire}",
    )
    assert answer["id"] == f"kserve-{wire}" and [output["name"] for output in answer["outputs"]] == ["output-1"]
    unknown = kserve.call(
        "infer",
        transport=transport,
        binary=binary,
        model=IRIS,
        version="champion",
        inputs=iris_inputs(ROWS[:1]),
        outputs=["proba"],
    )
    assert "proba" in unknown["error"]["message"], unknown


@pytest.mark.torch
@needs(torch_available(), "needs the [torch] extra")
@pytest.mark.parametrize("wire", list(WIRES))
def test_torch_answers_as_pyfunc_does(kserve: KServeClients, sqlite_registry: Registry, wire: str) -> None:
    rows = np.random.default_rng(7).standard_normal((5, 4)).astype(np.float32)
    transport, binary = WIRES[wire]
    tensor = {"name": "input-0", "datatype": "FP32", "dtype": "float32", "shape": [5, 4], "data": rows.tolist()}
    # output-1 asked for by name: in binary on the binary wires, so the SDK decodes FP32 bytes
    answer = kserve.ok(
        "infer",
        transport=transport,
        binary=binary,
        model=TORCH,
        version="champion",
        inputs=[tensor],
        outputs=["output-1"],
    )
    (output,) = answer["outputs"]
    assert (output["name"], output["datatype"], output["shape"], output["dtype"]) == (
        "output-1",
        "FP32",
        [5, 3],
        "float32",
    )
    reference = sqlite_registry.pyfunc(TORCH, sqlite_registry.versions[TORCH][0])
    network = reference._model_impl.pytorch_model
    assert_within(np.asarray(output["data"]), reference.predict(rows), 2 * mlp_error_bound(network, rows))


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_errors_reach_the_sdk_as_its_own_exceptions(kserve: KServeClients, transport: str) -> None:
    unknown = kserve.call(
        "infer", transport=transport, binary=False, model="no-such-model", version=None, inputs=iris_inputs(ROWS)
    )["error"]
    wrong = [{"name": "nope", "datatype": "FP64", "dtype": "float64", "shape": [1, 1], "data": [[1.0]]}]
    refused = kserve.call("infer", transport=transport, binary=False, model=IRIS, version=None, inputs=wrong)["error"]
    if transport == "rest":
        assert unknown["status"] == 404 and "no-such-model" in unknown["message"], unknown
        assert refused["status"] == 400 and "schema" in refused["message"], refused
    else:
        assert unknown["code"] == "NOT_FOUND" and "no-such-model" in unknown["message"], unknown
        assert refused["code"] == "INVALID_ARGUMENT" and "schema" in refused["message"], refused
