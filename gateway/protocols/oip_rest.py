"""The Open Inference Protocol (KServe V2) over REST: routes that do HTTP only.

``POST /v2/models/{name}[/versions/{version}]/infer`` is answered on bare ASGI by
:func:`serve` (``GatewayApp`` hands it over as it does MLflow's predict paths; FastAPI
declares it too, for /docs and an app that mounts the router). The rest are FastAPI routes.
A version is chosen as on the MLflow routes: the path's number, alias or ``latest``, else
``X-Model-Version``, else the default alias, else latest. Errors are ``{"error": "..."}``
(gateway.http.errors).

A default-route request is copied to the split's shadows once answered, as on the MLflow
routes: run again in this protocol on the shadow version, and its outputs compared with the
primary's (:func:`comparable`).

Readiness for a gateway that loads lazily: the server is ready when ``/health/ready`` is
(started, synced, warm aliases warm); a model version is ready when it resolves to a READY
version that is not refused: it loads on its first request, as on the MLflow routes.
"""

from __future__ import annotations

import math
import struct
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.types import Receive, Scope, Send

from gateway import __version__
from gateway.admission.access import Access, requires
from gateway.dataplane.batching import TensorCall
from gateway.dataplane.loader import LoadedModel
from gateway.dataplane.predictor import Prediction
from gateway.errors import (
    MalformedRequest,
    NotReady,
    PayloadTooLarge,
    ShuttingDown,
    UnsupportedEncoding,
    VersionNotReady,
    VersionRefused,
)
from gateway.http import errors as http_errors
from gateway.http.api_examples import NAME_PARAMETER, OIP_INFER_BODY, VERSION_PARAMETER
from gateway.http.request_body import read_body
from gateway.observability.records.record import Exchange
from gateway.process import Services
from gateway.protocols.mlflow_predict import header_text, header_value
from gateway.routing.catalog import Resolved
from gateway.routing.shadow import ShadowRecord
from gateway.wire import oip_codec

EXTENSIONS = ["binary_tensor_data"]
JSON = "application/json"
BINARY = "application/octet-stream"
HEADER_LENGTH = "Inference-Header-Content-Length"
_COMPRESS_ABOVE = 1024  # bytes: smaller answers are not worth a gzip header
_PREFIX = struct.Struct("<Q")

RawHeaders = Iterable[tuple[bytes, bytes]]


def match(path: str) -> tuple[str, str | None] | None:
    """``(name, version)`` for ``/v2/models/{name}[/versions/{version}]/infer``, else None."""
    parts = path.split("/")
    if len(parts) == 7 and parts[:3] == ["", "v2", "models"] and parts[4] == "versions" and parts[6] == "infer":
        if parts[3] and parts[5]:
            return parts[3], parts[5]
    elif len(parts) == 5 and parts[:3] == ["", "v2", "models"] and parts[4] == "infer" and parts[3]:
        return parts[3], None
    return None


@dataclass(frozen=True, slots=True)
class InferAnswer:
    body: bytes
    headers: dict[str, str]


def _served_headers(served: Resolved) -> dict[str, str]:
    headers = {"X-Model-Name": header_value(served.name), "X-Model-Version": str(served.version)}
    if served.alias:
        headers["X-Model-Alias"] = header_value(served.alias)
    if served.route is not None:
        headers["X-Model-Route"] = served.route
    return headers


def _decompressed(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The body as sent before ``Content-Encoding``, never more than ``limit`` bytes of it."""
    if encoding is None or encoding.strip().lower() in ("", "identity"):
        return body
    coding = encoding.strip().lower()
    if coding in ("gzip", "x-gzip"):
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    elif coding == "deflate":
        # RFC 9110's deflate is zlib-wrapped; some clients send raw deflate: accept both
        inflater = zlib.decompressobj(wbits=zlib.MAX_WBITS if body[:1] == b"\x78" else -zlib.MAX_WBITS)
    else:
        raise UnsupportedEncoding(encoding)
    try:
        out = inflater.decompress(body, limit + 1)  # a bomb stops here, at the limit
        if len(out) > limit:
            raise PayloadTooLarge(limit)
        if not inflater.eof or inflater.unused_data:
            raise MalformedRequest(f"The {coding} body is truncated or has bytes after its end")
    except zlib.error as exc:
        raise MalformedRequest(f"The body is not valid {coding}: {exc}") from exc
    return out


def _accepts_gzip(value: str | None) -> bool:
    if not value:
        return False
    for part in value.split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() in ("gzip", "*"):
            return params.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


class _Infer:
    """One infer request's work in the inference thread: read, decode, predict (with other
    requests' rows on the fast path where the inputs fit it), encode. Its answer is the
    JSON's length (8 bytes, little-endian), the JSON, then any binary outputs."""

    def __init__(self, body: bytes, header_length: int | None, served: Resolved) -> None:
        self._body = body
        self._header_length = header_length
        self._served = served
        self._request: oip_codec.InferRequest | None = None
        self._reply: oip_codec.Reply | None = None

    def call(self) -> TensorCall:
        return TensorCall(self.tensors, self.encode, self.alone)

    def request(self) -> oip_codec.InferRequest:
        if self._request is None:
            self._request = oip_codec.parse_request(self._body, self._header_length)
            self._reply = self._request.reply
        return self._request

    def tensors(self, model: LoadedModel) -> dict[str, Any] | np.ndarray | None:
        fast = model.fast
        if fast is not None and fast.columns is not None:  # plain columns: read in one step
            read = oip_codec.column_rows(self._body, *fast.columns, self._header_length)
            if read is not None:
                self._reply, rows = read
                return rows
        return oip_codec.plain_tensors(self.request(), model.metadata)

    def encode(self, model: LoadedModel, raw: Any) -> bytes:
        reply = self._reply or self.request().reply
        document, binary = oip_codec.encode_response(
            reply, raw, model_name=self._served.name, model_version=str(self._served.version)
        )
        return _PREFIX.pack(len(document)) + document + binary

    def alone(self, model: LoadedModel) -> bytes:
        return self.encode(model, model.predict(oip_codec.to_model_input(self.request(), model.metadata)))


async def _predict(services: Services, served: Resolved, body: bytes, json_length: int | None) -> Prediction:
    kind = f"oip:{served.name}:{served.version}:{json_length}"
    return await services.inference.call(served, _Infer(body, json_length, served).call(), kind=kind, body=body)


def _answer_json(answer: bytes) -> bytes:
    """An answer as OIP's JSON, binary outputs as plain data (for an inference record)."""
    return orjson.dumps({"outputs": comparable(answer)})


def comparable(answer: bytes) -> list[dict[str, Any]]:
    """An answer's outputs as plain values (name, shape, data), from JSON or binary alike: what
    a shadow's answer is compared on (its model version differs from the primary's by design)."""
    (length,) = _PREFIX.unpack_from(answer)
    document = orjson.loads(answer[_PREFIX.size : _PREFIX.size + length])
    binary = memoryview(answer)[_PREFIX.size + length :]
    outputs, offset = [], 0
    for output in document["outputs"]:
        name, datatype, shape = output["name"], output["datatype"], output["shape"]
        size = (output.get("parameters") or {}).get("binary_data_size")
        if size is None:
            data = output["data"]
        else:
            data = oip_codec.from_bytes(name, datatype, math.prod(shape), binary[offset : offset + size]).tolist()
            offset += size
        outputs.append({"name": name, "shape": shape, "data": data})
    return outputs


async def answer(
    services: Services, headers: RawHeaders, receive: Receive, name: str, version: str | None
) -> InferAnswer:
    """Choose, read, infer; counted in the request metrics whatever happens."""
    started = time.perf_counter()
    content_length = selector = encoding = header_length = accept = route_key = None
    route_header = services.route_key_header
    served = None
    body, json_length = b"", None
    for key, value in headers:
        if key == b"content-length" and content_length is None:
            content_length = value.decode("latin-1")
        elif key == b"x-model-version" and selector is None:
            selector = header_text(value)
        elif key == route_header and route_key is None:
            route_key = header_text(value)
        elif key == b"content-encoding" and encoding is None:
            encoding = value.decode("latin-1")
        elif key == b"inference-header-content-length" and header_length is None:
            header_length = value.decode("latin-1")
        elif key == b"accept-encoding" and accept is None:
            accept = value.decode("latin-1")
    try:
        if not services.ready:
            await services.until_ready()
        json_length = None
        if header_length is not None:
            if not header_length.strip().isdigit():
                raise MalformedRequest(f"{HEADER_LENGTH} '{header_length}' is not a number")
            json_length = int(header_length)
        served = await services.inference.choose(name, path=version, header=selector, route_key=route_key)
        limit = services.settings.max_body_bytes
        body = _decompressed(await read_body(receive, content_length, limit), encoding, limit)
        prediction = await _predict(services, served, body, json_length)
    except Exception as exc:
        error = http_errors.classify(exc)
        media_type = "application/json" if json_length is None else "application/octet-stream"  # binary extension
        failed = Exchange("oip", media_type, body, b"", route_key, error_code=error.code)
        services.predict_finished(served, status=error.status, started=started, error=exc, exchange=failed)
        raise
    served = prediction.served  # a canary unloaded meanwhile was answered by its default version
    media_type = "application/json" if json_length is None else "application/octet-stream"  # binary extension
    exchange = Exchange("oip", media_type, body, prediction.body, route_key, answer_json=_answer_json)
    services.predict_finished(served, status=200, started=started, exchange=exchange)
    services.shadows.copy(
        served,
        prediction.body,
        lambda target: _predict(services, target, body, json_length),
        decode=comparable,
        record=ShadowRecord.of(exchange, http_errors.classify),
    )
    (document_length,) = _PREFIX.unpack_from(prediction.body)
    payload = prediction.body[_PREFIX.size :]
    response_headers = _served_headers(served)
    if document_length != len(payload):
        response_headers[HEADER_LENGTH] = str(document_length)
        response_headers["Content-Type"] = BINARY
    else:
        response_headers["Content-Type"] = JSON
    if len(payload) > _COMPRESS_ABOVE and _accepts_gzip(accept):
        payload = _gzip(payload)
        response_headers["Content-Encoding"] = "gzip"
    return InferAnswer(payload, response_headers)


def _gzip(data: bytes) -> bytes:
    compressor = zlib.compressobj(level=1, wbits=16 + zlib.MAX_WBITS)  # fast: the point is the wire
    return compressor.compress(data) + compressor.flush()


async def serve(services: Services, scope: Scope, receive: Receive, send: Send, name: str, version: str | None) -> None:
    """Answer one infer request on ASGI: the answer, or the error's JSON."""
    try:
        result = await answer(services, scope["headers"], receive, name, version)
        status, body, headers = 200, result.body, result.headers
    except Exception as exc:
        error = http_errors.answer_for(exc, scope["method"], scope["path"], oip=True)
        status, body, headers = error.status, error.body, {"Content-Type": JSON, **error.headers}
    raw = [(b"content-length", str(len(body)).encode())]
    raw += [(key.lower().encode("latin-1"), value.encode("latin-1")) for key, value in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


# --- the FastAPI routes -----------------------------------------------------------------

router = APIRouter(prefix="/v2", tags=["open inference protocol"])


def _json(document: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(document), status_code=status, media_type=JSON, headers=headers)


@router.get("", summary="Server metadata: name, version, extensions")
@requires(Access.PROBE)
async def server_metadata() -> Response:
    return _json({"name": "registry-gateway", "version": __version__, "extensions": EXTENSIONS})


@router.get("/health/live", summary="The process is up")
@requires(Access.PROBE)
async def server_live() -> Response:
    return _json({"live": True})


@router.get("/health/ready", summary="Started, synced, and every warm alias warm here (503 while not)")
@requires(Access.PROBE)
async def server_ready(request: Request) -> Response:
    services: Services | None = getattr(request.app.state, "services", None)
    ready = services is not None and (await services.readiness()).ready
    return _json({"ready": ready}, 200 if ready else 503)


async def _choose(request: Request, version: str | None) -> tuple[Services, Resolved]:
    """The version a metadata or readiness read names: looked up, never loaded here."""
    services: Services = request.app.state.services
    if not services.ready:
        await services.until_ready()
    selector = request.headers.get("x-model-version")
    served = await services.inference.choose(
        request.path_params["name"], path=version, header=selector, take_over=False
    )
    return services, served


async def _metadata(request: Request, version: str | None) -> Response:
    services, served = await _choose(request, version)
    mlmodel = await services.inventory.mlmodel(served.name, served.version)
    document = oip_codec.model_metadata(served.name, [str(served.version)], mlmodel)
    return _json(document, headers=_served_headers(served))


async def _ready(request: Request, version: str | None) -> Response:
    try:
        _, served = await _choose(request, version)  # unknown: 404
    except (NotReady, ShuttingDown, VersionNotReady, VersionRefused):  # known, and not servable now
        return _json({"name": request.path_params["name"], "ready": False}, 503)
    return _json({"name": served.name, "ready": True}, headers=_served_headers(served))


@router.get("/models/{name}", summary="Model metadata of the default version")
@requires(Access.PREDICT)
async def model_metadata(request: Request) -> Response:
    return await _metadata(request, None)


@router.get("/models/{name}/versions/{version}", summary="Model metadata of a version, alias or latest")
@requires(Access.PREDICT)
async def version_metadata(request: Request) -> Response:
    return await _metadata(request, request.path_params["version"])


@router.get("/models/{name}/ready", summary="The default version can serve")
@requires(Access.PREDICT)
async def model_ready(request: Request) -> Response:
    return await _ready(request, None)


@router.get("/models/{name}/versions/{version}/ready", summary="This version can serve")
@requires(Access.PREDICT)
async def version_ready(request: Request) -> Response:
    return await _ready(request, request.path_params["version"])


async def _infer(request: Request, version: str | None) -> Response:
    services: Services = request.app.state.services
    name = request.path_params["name"]
    result = await answer(services, request.scope["headers"], request.receive, name, version)
    return Response(result.body, headers=result.headers)


@router.post(
    "/models/{name}/infer",
    summary="Infer with the default version (or X-Model-Version)",
    openapi_extra={**OIP_INFER_BODY, "parameters": [NAME_PARAMETER]},
)
@requires(Access.PREDICT)
async def model_infer(request: Request) -> Response:
    return await _infer(request, None)


@router.post(
    "/models/{name}/versions/{version}/infer",
    summary="Infer with a version, alias or latest",
    openapi_extra={**OIP_INFER_BODY, "parameters": [NAME_PARAMETER, VERSION_PARAMETER]},
)
@requires(Access.PREDICT)
async def version_infer(request: Request) -> Response:
    return await _infer(request, request.path_params["version"])
