"""The Open Inference Protocol over gRPC, spoken by tritonclient's gRPC client (raw tensors,
as its users call it) and by hand with our own stubs (typed contents, garbage), against a
real gateway on a real registry: the gRPC server its lifespan starts beside HTTP."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.utils import InferenceServerException

from gateway.demo import IRIS, TORCH, iris_frame, torch_available
from gateway.protocols.proto import grpc_service_pb2 as pb
from gateway.protocols.proto import grpc_service_pb2_grpc as pb_grpc
from tests.conftest import IRIS_COLUMNS, Registry, empty_registry, settings_under
from tests.gateway.protocols.conftest import served
from tests.support.ci import needs
from tests.support.keys import add_key
from tests.support.numeric import assert_far_from_ties, assert_within, mlp_error_bound
from tests.support.servers import free_port

ROWS = iris_frame()[0].iloc[[0, 60, 120, 149]].to_numpy()  # rows of each class


@pytest.fixture(scope="module")
def grpc_address(sqlite_registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    settings = settings_under(tmp_path_factory.mktemp("oip-grpc"), grpc_port=port)
    with served(settings, sqlite_registry):
        yield f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def client(grpc_address: str) -> Iterator[triton.InferenceServerClient]:
    connection = triton.InferenceServerClient(grpc_address)
    yield connection
    connection.close()


@pytest.fixture(scope="module")
def stub(grpc_address: str) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(grpc_address) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def iris_inputs(rows: np.ndarray) -> list[triton.InferInput]:
    inputs = []
    for index, column in enumerate(IRIS_COLUMNS):
        tensor = triton.InferInput(column, [len(rows), 1], "FP64")
        tensor.set_data_from_numpy(np.ascontiguousarray(rows[:, [index]]))
        inputs.append(tensor)
    return inputs


def expected_labels(registry: Registry, version: int) -> np.ndarray:
    reference = registry.pyfunc(IRIS, version)
    frame = iris_frame()[0].iloc[[0, 60, 120, 149]]
    assert_far_from_ties(reference.get_raw_model(), frame)
    return np.asarray(reference.predict(frame)).reshape(-1, 1)


def test_server_health_and_metadata(client: triton.InferenceServerClient, grpc_address: str) -> None:
    assert client.is_server_live() and client.is_server_ready()
    metadata = client.get_server_metadata()
    assert metadata.name == "registry-gateway" and "binary_tensor_data" in metadata.extensions
    with grpc.insecure_channel(grpc_address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "ready", "inference.GRPCInferenceService"):
            answer = health.Check(health_pb2.HealthCheckRequest(service=service))
            assert answer.status == health_pb2.HealthCheckResponse.SERVING, service
        with pytest.raises(grpc.RpcError) as caught:
            health.Check(health_pb2.HealthCheckRequest(service="nope"))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_model_metadata_and_readiness(client: triton.InferenceServerClient, sqlite_registry: Registry) -> None:
    first, second = sqlite_registry.versions[IRIS]
    metadata = client.get_model_metadata(IRIS, "challenger")
    assert list(metadata.versions) == [str(second)] and metadata.platform == "mlflow"
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [
        (column, "FP64", [-1, 1]) for column in IRIS_COLUMNS
    ]
    assert [(t.name, t.datatype) for t in metadata.outputs] == [("output-0", "INT64")]
    assert list(client.get_model_metadata(IRIS).versions) == [str(first)]  # the default alias
    assert client.is_model_ready(IRIS) and client.is_model_ready(IRIS, str(second))
    assert client.is_model_ready(IRIS, "challenger") and client.is_model_ready(IRIS, "latest")
    with pytest.raises(InferenceServerException, match="no-such-model") as caught:
        client.is_model_ready("no-such-model")
    assert caught.value.status() == "StatusCode.NOT_FOUND"


@pytest.mark.parametrize("selector", ["number", "alias", "default"])
def test_iris_answers_as_pyfunc_does(
    client: triton.InferenceServerClient, sqlite_registry: Registry, selector: str
) -> None:
    first, second = sqlite_registry.versions[IRIS]
    version, expected = {"number": (str(second), second), "alias": ("challenger", second), "default": ("", first)}[
        selector
    ]
    result = client.infer(IRIS, iris_inputs(ROWS), model_version=version)
    np.testing.assert_array_equal(result.as_numpy("output-1"), expected_labels(sqlite_registry, expected))
    response = result.get_response()
    assert response.model_name == IRIS and response.model_version == str(expected)
    assert len(response.raw_output_contents) == 1  # raw in, raw out


def _listening_sockets(port: int) -> int:
    """TCP sockets listening on ``port`` on this machine, from /proc/net/tcp and tcp6."""
    count = 0
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        for line in table.read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            count += state == "0A" and int(local.rsplit(":", 1)[1], 16) == port  # 0A: LISTEN
    return count


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="counts listening sockets in Linux's /proc/net/tcp")
def test_several_acceptors_share_the_port_and_every_connection_is_answered(
    sqlite_registry: Registry, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """GATEWAY_GRPC_ACCEPTORS servers listen on the one port, the kernel spreading connections
    over them; calls on every connection are answered alike, and stopping closes them all."""
    port = free_port()
    settings = settings_under(tmp_path_factory.mktemp("oip-grpc-acceptors"), grpc_port=port, grpc_acceptors=4)
    first, _ = sqlite_registry.versions[IRIS]
    with served(settings, sqlite_registry):
        assert _listening_sockets(port) == 4
        own_connection = [("grpc.use_local_subchannel_pool", 1)]  # else channels share one
        clients = [triton.InferenceServerClient(f"127.0.0.1:{port}", channel_args=own_connection) for _ in range(12)]
        try:
            with ThreadPoolExecutor(len(clients)) as pool:
                answers = list(pool.map(lambda c: c.infer(IRIS, iris_inputs(ROWS)).as_numpy("output-1"), clients))
        finally:
            for connection in clients:
                connection.close()
        for labels in answers:
            np.testing.assert_array_equal(labels, expected_labels(sqlite_registry, first))
    assert _listening_sockets(port) == 0


def test_typed_contents_in_typed_contents_out(
    stub: pb_grpc.GRPCInferenceServiceStub, sqlite_registry: Registry
) -> None:
    first, _ = sqlite_registry.versions[IRIS]
    request = pb.ModelInferRequest(model_name=IRIS, model_version="champion", id="request-7")
    for index, column in enumerate(IRIS_COLUMNS):
        tensor = request.inputs.add(name=column, datatype="FP64", shape=[len(ROWS), 1])
        tensor.contents.fp64_contents.extend(ROWS[:, index].tolist())
    response = stub.ModelInfer(request)
    assert response.id == "request-7" and response.model_version == str(first)
    assert not response.raw_output_contents
    (output,) = response.outputs
    assert (output.name, output.datatype, list(output.shape)) == ("output-1", "INT64", [len(ROWS), 1])
    labels = np.asarray(output.contents.int64_contents).reshape(-1, 1)
    np.testing.assert_array_equal(labels, expected_labels(sqlite_registry, first))


@pytest.mark.torch
@needs(torch_available(), "needs the [torch] extra")
def test_torch_answers_as_pyfunc_does(client: triton.InferenceServerClient, sqlite_registry: Registry) -> None:
    rows = np.random.default_rng(7).standard_normal((5, 4)).astype(np.float32)
    tensor = triton.InferInput("input-0", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    result = client.infer(TORCH, [tensor], model_version="champion")
    reference = sqlite_registry.pyfunc(TORCH, sqlite_registry.versions[TORCH][0])
    answer = result.as_numpy("output-1")
    assert answer.dtype == np.float32 and answer.shape == (5, 3)
    network = reference._model_impl.pytorch_model
    assert_within(answer, reference.predict(rows), 2 * mlp_error_bound(network, rows))


def _raw(datatype: str, shape: list[int], data: bytes) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=IRIS, raw_input_contents=[data])
    request.inputs.add(name="x", datatype=datatype, shape=shape)
    return request


def _typed(**contents: list[float]) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=IRIS)
    tensor = request.inputs.add(name="x", datatype="FP64", shape=[2])
    for field, values in contents.items():
        getattr(tensor.contents, field).extend(values)
    return request


GARBAGE: dict[str, tuple[pb.ModelInferRequest, grpc.StatusCode, str]] = {
    "no inputs": (pb.ModelInferRequest(model_name=IRIS), grpc.StatusCode.INVALID_ARGUMENT, "'inputs'"),
    "raw size and shape disagree": (
        _raw("FP64", [2], b"\0" * 8),
        grpc.StatusCode.INVALID_ARGUMENT,
        "2 elements of FP64 (16 bytes)",
    ),
    "no contents at all": (
        pb.ModelInferRequest(model_name=IRIS, inputs=[{"name": "x", "datatype": "FP64", "shape": [1]}]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "no contents",
    ),
    "raw entries and inputs disagree": (
        pb.ModelInferRequest(
            model_name=IRIS,
            inputs=[{"name": "x", "datatype": "FP64", "shape": [1]}],
            raw_input_contents=[b"\0" * 8, b"\0" * 8],
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "2 entries for 1 inputs",
    ),
    "bytes element runs past its tensor": (
        _raw("BYTES", [1], struct.pack("<I", 1 << 30) + b"abcd"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "1073741824 bytes but 4 are left",
    ),
    "huge shape": (
        _raw("FP64", [4294967296, 4294967296], b"\0" * 8),
        grpc.StatusCode.INVALID_ARGUMENT,
        "18446744073709551616 elements",
    ),
    "unknown datatype": (_raw("FP128", [1], b"\0" * 16), grpc.StatusCode.INVALID_ARGUMENT, "FP128"),
    "typed count and shape disagree": (
        _typed(fp64_contents=[1.0]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "2 elements but fp64_contents has 1",
    ),
    "typed in the wrong field": (
        _typed(fp32_contents=[1.0, 2.0]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "goes in fp64_contents",
    ),
    "wrong columns for the model": (
        _typed(fp64_contents=[1.0, 2.0]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "schema",
    ),
    "unknown model": (
        pb.ModelInferRequest(model_name="no-such-model", inputs=[{"name": "x", "datatype": "FP64", "shape": [0]}]),
        grpc.StatusCode.NOT_FOUND,
        "no-such-model",
    ),
    "unknown version": (
        pb.ModelInferRequest(model_name=IRIS, model_version="999"),
        grpc.StatusCode.NOT_FOUND,
        "999",
    ),
    "unknown alias": (
        pb.ModelInferRequest(model_name=IRIS, model_version="nope"),
        grpc.StatusCode.NOT_FOUND,
        "nope",
    ),
}


@pytest.mark.parametrize("case", list(GARBAGE))
def test_garbage_is_the_right_status_and_the_server_stays_up(stub: pb_grpc.GRPCInferenceServiceStub, case: str) -> None:
    request, code, reason = GARBAGE[case]
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request)
    assert caught.value.code() == code, caught.value.details()
    assert reason in (caught.value.details() or "")
    assert stub.ServerLive(pb.ServerLiveRequest()).live


def test_not_a_message_and_past_the_size_limit(grpc_address: str, stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    with grpc.insecure_channel(grpc_address) as channel:
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        with pytest.raises(grpc.RpcError) as caught:
            infer(b"\xff\xff\xff")
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as caught:
            infer(b"\0" * (10 * 2**20 + 1))  # past GATEWAY_MAX_BODY_BYTES
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert stub.ServerLive(pb.ServerLiveRequest()).live


def test_keys_are_checked_before_any_lookup(
    sqlite_registry: Registry, tmp_path_factory: pytest.TempPathFactory
) -> None:
    port = free_port()
    settings = settings_under(tmp_path_factory.mktemp("oip-grpc-keys"), grpc_port=port, auth="keys")
    secret = add_key(settings, "iris-only", f"predict:{IRIS}")
    with served(settings, sqlite_registry), grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        request = pb.ModelMetadataRequest(name=IRIS)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelMetadata(request)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(pb.ModelInferRequest(model_name=IRIS), metadata=[("x-api-key", "not-a-key")])
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # a key without the model's scope: refused before the (unknown) name is looked up
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelMetadata(pb.ModelMetadataRequest(name="no-such-model"), metadata=[("x-api-key", secret)])
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        answer = stub.ModelMetadata(request, metadata=[("authorization", f"Bearer {secret}")])
        assert answer.name == IRIS
        assert stub.ServerLive(pb.ServerLiveRequest()).live  # a probe: no key


def test_the_default_route_follows_a_canary_split_by_route_key(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A version tagged gateway.traffic.weight=100 takes every default-route call once warm;
    a call that names a version gets exactly it; the route key travels as metadata."""
    from registry_sync.traffic import WEIGHT_TAG
    from tests.support.models import Doubler, log_pyfunc

    registry = empty_registry(tmp_path_factory.mktemp("grpc-split-registry"))
    name = "grpc-split"
    v1, v2 = (registry.log(log_pyfunc, name, Doubler()) for _ in range(2))
    registry.client.set_registered_model_alias(name, "champion", str(v1))
    registry.client.set_model_version_tag(name, str(v2), WEIGHT_TAG, "100")
    port = free_port()
    settings = settings_under(tmp_path_factory.mktemp("grpc-split"), grpc_port=port)
    with served(settings, registry), grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)

        def call(version: str) -> tuple[str, dict[str, str]]:
            request = pb.ModelInferRequest(model_name=name, model_version=version)
            tensor = request.inputs.add(name="x", datatype="FP64", shape=[1, 1])
            tensor.contents.fp64_contents.append(1.5)
            answer, rpc = stub.ModelInfer.with_call(request, metadata=(("x-route-key", "user-1"),))
            return answer.model_version, dict(rpc.trailing_metadata() or ())

        version, trailing = call("")
        assert (version, trailing.get("x-model-route")) == (str(v2), "canary")
        named, trailing = call(str(v1))
        assert (named, trailing.get("x-model-route")) == (str(v1), "named")
