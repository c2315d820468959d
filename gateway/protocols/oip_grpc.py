"""The Open Inference Protocol (KServe V2) over gRPC: ``inference.GRPCInferenceService``.

An asyncio gRPC server (:class:`GrpcServer`) that the app's lifespan starts beside HTTP, in
the same process, on the same services and model cache. Handlers do gRPC only: the key
check goes through the same :class:`~gateway.admission.gate.Gate` as HTTP (``authorization: Bearer``
or ``x-api-key`` metadata, before any lookup or load), versions are chosen as on the REST
routes (``model_version`` a number, an alias, ``latest``, or empty for the default), and
inference runs through ``InferenceService.call`` with the same lease, queue, timeout and
answer cache. Tensors go through :mod:`gateway.wire.oip_codec`, so both protocols read
and check them alike. A default-route ModelInfer is copied to the split's shadows once
answered, like REST's (outputs compared by :func:`comparable`).

``raw_input_contents`` and typed ``contents`` are both accepted; the answer is in
``raw_output_contents`` when the request's inputs were raw (what tritonclient sends), else in
typed contents (FP16, which has no typed field, answers raw). Errors become gRPC status
codes in one place, :func:`status_of`. ``grpc.health.v1`` answers for Kubernetes probes: the
service ``""`` is SERVING while the process is up (liveness), ``ready`` and
``inference.GRPCInferenceService`` once the gateway is ready.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway import __version__
from gateway.admission.access import Access, Requirement
from gateway.admission.limits import NO_PERMIT, Permit
from gateway.dataplane.batching import TensorCall
from gateway.dataplane.loader import LoadedModel
from gateway.dataplane.predictor import Prediction
from gateway.errors import (
    GatewayError,
    MalformedRequest,
    NotReady,
    ShuttingDown,
    VersionNotReady,
    VersionRefused,
)
from gateway.http import errors as http_errors
from gateway.observability.context import begin, current, enter, leave
from gateway.observability.records.record import Exchange
from gateway.process import Services
from gateway.protocols.oip_rest import EXTENSIONS
from gateway.protocols.proto import grpc_service_pb2 as pb
from gateway.routing.catalog import Resolved
from gateway.wire import oip_codec
from registry_sync.errors import RegistryError

log = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"

# --- errors: the one place they become gRPC status codes -------------------------------

# By the HTTP status the same error gets (gateway.http.errors classifies every error once).
_RPC = {"rpc.system": "grpc", "rpc.service": "inference.GRPCInferenceService", "rpc.method": "ModelInfer"}
_BY_HTTP_STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


@dataclass(frozen=True, slots=True)
class GrpcError:
    code: grpc.StatusCode
    message: str
    http_status: int  # for the request metrics, which count by HTTP status on every protocol
    retry_after: int | None = None


def status_of(exc: BaseException) -> GrpcError:
    """The status code and message a request that raised ``exc`` ends with; logs what an
    operator should see, as gateway.http.errors does for HTTP."""
    if not isinstance(exc, GatewayError | RegistryError):
        log.exception("unhandled error on gRPC", exc_info=exc)
        return GrpcError(grpc.StatusCode.INTERNAL, "Internal error; the gateway logged the details", 500)
    answer = http_errors.classify(exc)
    code = _BY_HTTP_STATUS.get(answer.status, grpc.StatusCode.INTERNAL)
    if answer.code == "RESOURCE_EXHAUSTED":  # a model past the whole memory budget: not worth a retry
        code = grpc.StatusCode.RESOURCE_EXHAUSTED
    if answer.status >= 500:
        log.warning("gRPC -> %s: %s", code.name, exc)
    retry_after = getattr(exc, "retry_after", None)
    return GrpcError(
        code,
        str(exc)[:2000],
        answer.status,
        retry_after if isinstance(retry_after, int) else answer.retry_after,
    )


async def _abort(context: grpc.aio.ServicerContext, error: GrpcError) -> None:
    if error.retry_after is not None:
        context.set_trailing_metadata((("retry-after", str(error.retry_after)),))
    await context.abort(error.code, error.message)


# --- requests to the codec's tensors and back ------------------------------------------

_TYPED_FIELDS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    oip_codec.BYTES: "bytes_contents",
}
_CONTENT_FIELDS = sorted(set(_TYPED_FIELDS.values()))


def _parameter(value: pb.InferParameter) -> Any:
    choice = value.WhichOneof("parameter_choice")
    return getattr(value, choice) if choice is not None else None


def _parameters(raw: Any) -> dict[str, Any]:
    if not raw:  # most tensors have none: a map's items() view alone costs more than the check
        return {}
    return {key: _parameter(value) for key, value in raw.items()}


def _set_parameter(target: pb.InferParameter, value: Any) -> None:
    if isinstance(value, bool):
        target.bool_param = value
    elif isinstance(value, int):
        target.int64_param = value
    elif isinstance(value, float):
        target.double_param = value
    else:
        target.string_param = str(value)


def parse_request(message: pb.ModelInferRequest) -> oip_codec.InferRequest:
    """The codec's request from the protobuf one, every size checked as for REST's binary
    tensors: raw contents against shapes, typed contents against shapes."""
    tensors = message.inputs
    if not tensors:
        raise MalformedRequest("'inputs' must be a non-empty list of tensors")
    raw = message.raw_input_contents
    if raw and len(raw) != len(tensors):
        raise MalformedRequest(
            f"raw_input_contents has {len(raw)} entries for {len(tensors)} inputs; send one per input, or none"
        )
    inputs = []
    for position, tensor in enumerate(tensors):
        name, datatype, shape, count = oip_codec.checked_header(
            tensor.name, tensor.datatype, list(tensor.shape), position
        )
        typed = tensor.HasField("contents")
        if raw:
            if typed:
                raise MalformedRequest(f"input '{name}' has both contents and raw_input_contents")
            data = oip_codec.from_bytes(name, datatype, count, memoryview(raw[position]))
        elif not typed:
            raise MalformedRequest(f"input '{name}' has no contents, and the request has no raw_input_contents")
        else:
            data = _from_contents(name, datatype, count, tensor.contents)
        inputs.append(oip_codec.Tensor(name, datatype, shape, data.reshape(shape), _parameters(tensor.parameters)))
    names = [tensor.name for tensor in inputs]
    if len(set(names)) != len(names):
        raise MalformedRequest("Input names must be unique")
    return oip_codec.InferRequest(reply_of(message), _parameters(message.parameters), inputs)


def reply_of(message: pb.ModelInferRequest) -> oip_codec.Reply:
    """What the answer must say back: the request's id and the outputs it asked for."""
    outputs = [oip_codec.RequestedOutput(wanted.name, None) for wanted in message.outputs] or None
    return oip_codec.Reply(message.id or None, outputs)


def column_rows(message: pb.ModelInferRequest, names: Sequence[str], dtype: np.dtype[Any]) -> np.ndarray | None:
    """A request that is nothing but a column model's columns in ``raw_input_contents`` (what
    tritonclient sends), read in one step into rows: one per element, the columns in
    ``names`` order, all of ``dtype``. The data plane's fast path for a model whose signature
    is these columns; None for anything else: :func:`parse_request` then reads it (and names
    what is wrong, if anything is).

    An optimisation, never other rules (as REST's :func:`oip_codec.column_rows`): where it
    answers, :func:`parse_request` and :func:`oip_codec.plain_tensors` would give the same
    columns of the same dtype (the model's own content type, ``pd``, or none; shape ``[n]``
    or ``[n, 1]``; no parameters on a tensor; each tensor's bytes exactly its size)."""
    tensors, raw = message.inputs, message.raw_input_contents
    if len(tensors) != len(names) or len(raw) != len(names):
        return None
    parameters = message.parameters
    if parameters and (
        len(parameters) > 1 or "content_type" not in parameters or _parameter(parameters["content_type"]) != "pd"
    ):
        return None
    datatype = oip_codec.DATATYPE_OF.get(dtype)
    if datatype is None or dtype.kind not in "iuf" or not names:  # BOOL bytes have a check of their own
        return None
    position_of = {name: position for position, name in enumerate(names)}
    rows = -1
    ordered: list[bytes] = [b""] * len(names)
    for index, tensor in enumerate(tensors):
        position = position_of.pop(tensor.name, None)  # popped: a name sent twice is declined
        if position is None or tensor.datatype != datatype or tensor.parameters or tensor.HasField("contents"):
            return None
        shape = tensor.shape
        if (
            len(shape) not in (1, 2)
            or (len(shape) == 2 and shape[1] != 1)
            or shape[0] <= 0
            or rows not in (-1, shape[0])
        ):
            return None
        rows = shape[0]
        ordered[position] = data = raw[index]
        if len(data) != rows * dtype.itemsize:
            return None
    columns = np.frombuffer(b"".join(ordered), dtype=dtype.newbyteorder("<")).reshape(len(names), rows)
    return columns.T.astype(dtype, order="C")  # laid out as column_stack lays columns out: rows of columns


def _from_contents(name: str, datatype: str, count: int, contents: pb.InferTensorContents) -> np.ndarray:
    field = _TYPED_FIELDS.get(datatype)
    if field is None:
        raise MalformedRequest(f"input '{name}': {datatype} has no typed contents; send it in raw_input_contents")
    others = [other for other in _CONTENT_FIELDS if other != field and len(getattr(contents, other))]
    if others:
        raise MalformedRequest(f"input '{name}': {datatype} data goes in {field}, not {', '.join(others)}")
    values: Sequence[Any] = getattr(contents, field)
    if len(values) != count:
        raise MalformedRequest(f"input '{name}': the shape has {count} elements but {field} has {len(values)}")
    if datatype == oip_codec.BYTES:
        array = np.empty(count, dtype=object)
        array[:] = list(values)
        return array
    dtype = oip_codec.DTYPES[datatype].newbyteorder("=")
    wide = np.array(values)  # in the field's own type (int32 for INT8, ...)
    narrow = wide.astype(dtype) if wide.size else np.empty(0, dtype=dtype)
    if wide.size and not np.array_equal(narrow, wide):
        raise MalformedRequest(f"input '{name}': a value does not fit {datatype}")
    return narrow


def encode_response(reply: oip_codec.Reply, raw: Any, *, served: Resolved, raw_outputs: bool) -> pb.ModelInferResponse:
    chosen, content_type = oip_codec.chosen_outputs(reply, raw)
    response = pb.ModelInferResponse(model_name=served.name, model_version=str(served.version), id=reply.id or "")
    _set_parameter(response.parameters["content_type"], content_type)
    raw_outputs = raw_outputs or any(output.datatype not in _TYPED_FIELDS for output, _ in chosen)
    for output, _ in chosen:
        entry = response.outputs.add(name=output.name, datatype=output.datatype, shape=list(output.array.shape))
        if output.content_type is not None:
            _set_parameter(entry.parameters["content_type"], output.content_type)
        if raw_outputs:
            response.raw_output_contents.append(oip_codec.to_bytes(output))
            continue
        flat = output.array.ravel()
        target = getattr(entry.contents, _TYPED_FIELDS[output.datatype])
        if output.datatype == oip_codec.BYTES:
            target.extend(item if isinstance(item, bytes) else str(item).encode("utf-8") for item in flat)
        else:
            target.extend(flat.tolist())
    return response


def _work(message: pb.ModelInferRequest, served: Resolved) -> TensorCall:
    """What runs in the inference thread: decode, predict (with other requests' rows on the
    fast path where the inputs fit it), encode, serialize."""
    raw_outputs = bool(message.raw_input_contents)
    parsed: list[oip_codec.InferRequest] = []

    def request() -> oip_codec.InferRequest:
        if not parsed:
            parsed.append(parse_request(message))
        return parsed[0]

    def tensors(model: LoadedModel) -> dict[str, Any] | np.ndarray | None:
        fast = model.fast
        if fast is not None and fast.columns is not None:  # plain columns: read in one step
            rows = column_rows(message, *fast.columns)
            if rows is not None:
                return rows
        return oip_codec.plain_tensors(request(), model.metadata)

    def encode(model: LoadedModel, answer: Any) -> bytes:
        return _serialize(encode_response(reply_of(message), answer, served=served, raw_outputs=raw_outputs))

    def alone(model: LoadedModel) -> bytes:
        return encode(model, model.predict(oip_codec.to_model_input(request(), model.metadata)))

    return TensorCall(tensors, encode, alone, trickles=True)  # grpc.aio hands over a call a turn


async def _predict(services: Services, served: Resolved, message: pb.ModelInferRequest, body: bytes) -> Prediction:
    kind = f"oip-grpc:{served.name}:{served.version}"
    return await services.inference.call(served, _work(message, served), kind=kind, body=body)


def comparable(answer: bytes) -> list[dict[str, Any]]:
    """An answer's outputs as plain values (name, shape, data), from raw or typed contents
    alike: what a shadow's answer is compared on (its model version differs by design)."""
    response = pb.ModelInferResponse.FromString(answer)
    raw = response.raw_output_contents
    outputs = []
    for position, output in enumerate(response.outputs):
        shape = list(output.shape)
        if raw:
            count = math.prod(shape)
            data = oip_codec.from_bytes(output.name, output.datatype, count, memoryview(raw[position])).tolist()
        else:
            data = list(getattr(output.contents, _TYPED_FIELDS[output.datatype]))
        outputs.append({"name": output.name, "shape": shape, "data": data})
    return outputs


def _metadata(name: str, versions: list[str], mlmodel: Any) -> pb.ModelMetadataResponse:
    document = oip_codec.model_metadata(name, versions, mlmodel)
    response = pb.ModelMetadataResponse(name=name, versions=versions, platform=document["platform"])
    for key, tensors in (("inputs", response.inputs), ("outputs", response.outputs)):
        for tensor in document[key]:
            entry = tensors.add(name=tensor["name"], datatype=tensor["datatype"], shape=tensor["shape"])
            for parameter, value in tensor["parameters"].items():
                _set_parameter(entry.parameters[parameter], value)
    for parameter, value in document["parameters"].items():
        _set_parameter(response.parameters[parameter], value)
    return response


# --- the services ------------------------------------------------------------------------

Handler = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]
Metadata = Sequence[tuple[str, str | bytes]]  # a call's invocation metadata, read once


class InferenceServicer:
    """``inference.GRPCInferenceService`` on the gateway's services."""

    def __init__(self, services: Services) -> None:
        self._services = services

    async def _admit(self, metadata: Metadata, requirement: Requirement) -> Permit:
        gate = self._services.gate
        if not gate.active:
            return NO_PERMIT
        headers = [
            (key.lower().encode("latin-1"), value if isinstance(value, bytes) else value.encode("latin-1"))
            for key, value in metadata
        ]
        return await gate.admit(requirement, headers)

    async def _choose(
        self, name: str, version: str, route_key: str | None = None, *, take_over: bool = True
    ) -> Resolved:
        """``take_over=False`` for a metadata or readiness read: looked up, never loaded here."""
        if not self._services.ready:
            await self._services.until_ready()
        return await self._services.inference.choose(
            name, path=version or None, route_key=route_key, take_over=take_over
        )

    def _guarded(self, access: Access, handler: Handler, *, model: Callable[[Any], str] | None = None) -> Handler:
        """``handler`` behind the gate, its errors as status codes."""

        async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                requirement = Requirement(access, model(request) if model else None)
                permit = await self._admit(context.invocation_metadata() or (), requirement)
            except Exception as exc:
                await _abort(context, status_of(exc))
                raise AssertionError("unreachable: abort raises") from exc
            try:
                return await handler(request, context)
            except Exception as exc:
                await _abort(context, status_of(exc))
                raise AssertionError("unreachable: abort raises") from exc
            finally:
                permit.release()

        return guarded

    async def server_live(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def server_ready(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=(await self._services.readiness()).ready)

    async def server_metadata(self, request: pb.ServerMetadataRequest, context: Any) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name="registry-gateway", version=__version__, extensions=EXTENSIONS)

    async def model_ready(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        try:
            await self._choose(request.name, request.version, take_over=False)  # unknown: NOT_FOUND
        except (NotReady, ShuttingDown, VersionNotReady, VersionRefused):  # known, and not servable now
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    async def model_metadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        served = await self._choose(request.name, request.version, take_over=False)
        mlmodel = await self._services.inventory.mlmodel(served.name, served.version)
        return _metadata(served.name, [str(served.version)], mlmodel)

    async def model_infer(self, body: bytes, context: grpc.aio.ServicerContext) -> bytes:
        """Takes and answers serialized messages: the answer is encoded in the inference
        thread, and the request's own bytes key the answer cache. Traced as HTTP requests are:
        the caller's ``traceparent`` comes in the call's metadata."""
        metadata = context.invocation_metadata() or ()
        request_id = next((str(v).encode() for k, v in metadata if k == "x-request-id"), None)
        request = begin(request_id)
        token = enter(request)
        tracing = self._services.tracing
        if tracing.enabled:
            request.traced(tracing.start_call("ModelInfer", metadata, _RPC))
        status = 500
        try:
            answer = await self._infer(body, context, metadata)
            status = 200
            return answer
        except grpc.aio.AbortError:
            status = request.status or 500
            raise
        finally:
            leave(token)
            if request.span is not None:
                attributes: dict[str, Any] = {"gateway.request_id": request.request_id}
                if request.model is not None:
                    attributes.update({"gateway.model": request.model, "gateway.version": request.version})
                    if request.arm is not None:
                        attributes["gateway.arm"] = request.arm
                tracing.end_request(request.span, status, server_error=status >= 500, attributes=attributes)

    async def _infer(self, body: bytes, context: grpc.aio.ServicerContext, metadata: Metadata) -> bytes:
        services = self._services
        started = time.perf_counter()
        permit = NO_PERMIT
        served: Resolved | None = None
        route_key: str | None = None
        try:
            try:
                message = pb.ModelInferRequest.FromString(body)
            except DecodeError as exc:
                raise MalformedRequest(f"The request is not a ModelInferRequest: {exc}") from exc
            permit = await self._admit(metadata, Requirement(Access.PREDICT, message.model_name))
            route_key = self._route_key(metadata)
            served = await self._choose(message.model_name, message.model_version, route_key)
            prediction = await _predict(services, served, message, body)
        except Exception as exc:
            error = status_of(exc)
            failed = Exchange(
                "oip-grpc", "application/x-protobuf", body, b"", route_key, error_code=http_errors.classify(exc).code
            )
            services.predict_finished(served, status=error.http_status, started=started, error=exc, exchange=failed)
            if (request := current()) is not None:
                request.status = error.http_status
            permit.release()
            await _abort(context, error)
            raise AssertionError("unreachable: abort raises") from exc
        permit.release()
        served = prediction.served  # a canary unloaded meanwhile was answered by its default version
        exchange = Exchange("oip-grpc", "application/x-protobuf", body, prediction.body, route_key)
        services.predict_finished(served, status=200, started=started, exchange=exchange)
        services.shadows.copy(
            served, prediction.body, lambda target: _predict(services, target, message, body), decode=comparable
        )
        if served.route is not None:
            context.set_trailing_metadata((("x-model-version", str(served.version)), ("x-model-route", served.route)))
        return prediction.body

    def _route_key(self, metadata: Metadata) -> str | None:
        wanted = self._services.settings.route_key_header.lower()
        for key, value in metadata:
            if key.lower() == wanted:
                return value if isinstance(value, str) else value.decode("utf-8", "replace")
        return None

    def handlers(self) -> grpc.GenericRpcHandler:
        def unary(handler: Handler, request_type: Any) -> grpc.RpcMethodHandler:
            return grpc.unary_unary_rpc_method_handler(
                handler, request_deserializer=request_type.FromString, response_serializer=_serialize
            )

        probe, predict = Access.PROBE, Access.PREDICT
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "ServerLive": unary(self._guarded(probe, self.server_live), pb.ServerLiveRequest),
                "ServerReady": unary(self._guarded(probe, self.server_ready), pb.ServerReadyRequest),
                "ServerMetadata": unary(self._guarded(probe, self.server_metadata), pb.ServerMetadataRequest),
                "ModelReady": unary(
                    self._guarded(predict, self.model_ready, model=lambda r: r.name), pb.ModelReadyRequest
                ),
                "ModelMetadata": unary(
                    self._guarded(predict, self.model_metadata, model=lambda r: r.name), pb.ModelMetadataRequest
                ),
                # bytes in, bytes out: decoding and encoding run in the inference thread
                "ModelInfer": grpc.unary_unary_rpc_method_handler(self.model_infer),
            },
        )


def _serialize(message: Any) -> bytes:
    data: bytes = message.SerializeToString()
    return data


class HealthServicer(health_pb2_grpc.HealthServicer):  # type: ignore[misc]  # untyped generated base
    """``grpc.health.v1.Health``: ``""`` (liveness) SERVING while the process answers;
    ``ready`` and the inference service SERVING once the gateway is ready."""

    def __init__(self, services: Services) -> None:
        self._services = services

    async def Check(  # noqa: N802 (gRPC's method name)
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
        if request.service == "":
            return health_pb2.HealthCheckResponse(status=serving)
        if request.service in ("ready", SERVICE):
            ready = (await self._services.readiness()).ready
            return health_pb2.HealthCheckResponse(status=serving if ready else not_serving)
        await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        raise AssertionError("unreachable: abort raises")


class GrpcServer:
    """The gRPC server of one gateway process: started and stopped by the app's lifespan.

    In fact ``acceptors`` grpc.aio servers on one port (``grpc.so_reuseport``, grpc's own
    default on Linux, which ``--workers`` relies on too), sharing one set of handlers. A
    grpc.aio server asks its core for the next call only once it has the last one, and each
    answer reaches the event loop in a turn of its own: calls arrive one per turn, and each
    becomes a batch of one (at 32 connections the bench measured batches of 1.04, against
    16 over REST). The kernel hands each new connection to one of the servers, so with N of
    them up to N calls arrive in the same turn and share a batch."""

    def __init__(self, services: Services, *, host: str, port: int) -> None:
        settings = services.settings
        options = [
            ("grpc.max_receive_message_length", settings.max_body_bytes),
            ("grpc.max_send_message_length", -1),
            ("grpc.so_reuseport", 1),
        ]
        inference = InferenceServicer(services).handlers()
        health = HealthServicer(services)
        self._servers: list[grpc.aio.Server] = []
        for _ in range(settings.grpc_acceptors):
            server = grpc.aio.server(options=options)
            server.add_generic_rpc_handlers((inference,))
            health_pb2_grpc.add_HealthServicer_to_server(health, server)
            bound = server.add_insecure_port(f"{host}:{port}")
            if bound == 0:
                raise OSError(f"cannot bind gRPC to {host}:{port}")
            port = bound  # the others on the port the first one took (port 0: any free one)
            self._servers.append(server)
        self.port = port
        self.address = f"{host}:{self.port}"

    async def start(self) -> None:
        for server in self._servers:
            await server.start()
        log.info("gRPC (Open Inference Protocol, grpc.health.v1) on %s, %d acceptors", self.address, len(self._servers))

    async def stop(self, grace: float) -> None:
        """Refuse new calls, let those running finish within ``grace`` seconds, then cancel them."""
        await asyncio.gather(*(server.stop(grace) for server in self._servers))
