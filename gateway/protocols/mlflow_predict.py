"""The predict endpoints on bare ASGI: the service's one hot path.

FastAPI's per-request machinery (its middleware stack, matching over every route, the
Request and Response objects, dependency solving) cost about 100 µs a request on one
core, more than everything else a prediction does (profiled under load; see
bench/README.md). So :class:`gateway.app.GatewayApp` hands the two predict paths to
:func:`serve` before FastAPI sees them. FastAPI still declares the predict routes
(gateway.protocols.mlflow_routes), for /docs and for an app that mounts the router itself; they call the
same :func:`answer`, and errors take the same road (gateway.http.errors) either way.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote

from starlette.types import Receive, Scope, Send

from gateway.dataplane.streaming import Stream
from gateway.http import errors as http_errors
from gateway.http.request_body import read_body
from gateway.observability.records.record import Exchange
from gateway.process import Services
from gateway.protocols import mlflow_stream
from gateway.routing.catalog import Resolved
from gateway.routing.shadow import ShadowRecord
from gateway.wire.mlflow_scoring import parse_content_type

RawHeaders = Iterable[tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class Answer:
    body: bytes  # JSON
    headers: dict[str, str]
    stream: StreamAnswer | None = None  # "stream": true: the events to send instead of ``body``


@dataclass(frozen=True, slots=True)
class StreamAnswer:
    stream: Stream
    request_body: bytes
    route_key: str | None
    started: float

    async def send(self, services: Services, receive: Receive, send: Send, headers: dict[str, str]) -> None:
        await mlflow_stream.serve(
            services,
            self.stream,
            receive,
            send,
            headers=headers,
            request_body=self.request_body,
            route_key=self.route_key,
            started=self.started,
        )


# The last segment of a predict path: the gateway's own, and ``mlflow models serve``'s (its
# ``/invocations``, under the model's path here, so that one gateway serves every model).
_VERBS = frozenset({"predict", "invocations"})
INVOCATIONS = "/invocations"  # mlflow models serve's own path: GATEWAY_DEFAULT_MODEL's


def match(path: str) -> tuple[str, str | None] | None:
    """``(name, version)`` for ``/models/{name}/versions/{version}/predict``, ``(name, None)``
    for ``/models/{name}/predict``, and the same for ``.../invocations``, else None: what
    Starlette's routing matches for those routes (a parameter is one non-empty path segment)."""
    parts = path.split("/")
    if len(parts) == 6 and parts[1] == "models" and parts[3] == "versions" and parts[5] in _VERBS:
        if not parts[0] and parts[2] and parts[4]:
            return parts[2], parts[4]
    elif len(parts) == 4 and parts[1] == "models" and parts[3] in _VERBS and not parts[0] and parts[2]:
        return parts[2], None
    return None


def route_path(scope: Scope) -> str:
    """The path the app routes on: ``path`` less a ``root_path`` prefix, as Starlette does."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        return path[len(root) :]
    return path


def header_value(text: str) -> str:
    """MLflow names may be any Unicode; header values are bytes (latin-1 at most, ASCII to be
    safe). A name with anything else is sent percent-encoded (UTF-8), as in a URL."""
    return text if text.isascii() and text.isprintable() else quote(text, safe=" !#$&'()*+,/:;=?@[]~")


def header_text(value: bytes) -> str:
    """A request header's text: UTF-8 when it is (an alias may be any Unicode word; clients
    send such text as UTF-8), else latin-1, as HTTP's default."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


async def answer(services: Services, headers: RawHeaders, receive: Receive, name: str, version: str | None) -> Answer:
    """Choose the version, read the body, predict; counted in the request metrics whatever
    happens. Raises what went wrong, for http_errors to put into words."""
    started = time.perf_counter()
    content_type = content_length = selector = route_key = None
    route_header = services.route_key_header
    served = None
    media_type, body = "", b""
    for key, value in headers:  # the first of each, as Starlette's Headers.get
        if key == b"content-type" and content_type is None:
            content_type = value.decode("latin-1")
        elif key == b"content-length" and content_length is None:
            content_length = value.decode("latin-1")
        elif key == b"x-model-version" and selector is None:
            selector = header_text(value)
        elif key == route_header and route_key is None:
            route_key = header_text(value)
    try:
        if not services.ready:
            await services.until_ready()
        media_type = parse_content_type(content_type)
        served = await services.inference.choose(name, path=version, header=selector, route_key=route_key)
        body = await read_body(receive, content_length, services.settings.max_body_bytes)
        if (streamed := mlflow_stream.requested(media_type, body)) is not None:
            stream = await mlflow_stream.open_stream(services, served, streamed)
            return Answer(b"", served_headers(stream.served), StreamAnswer(stream, body, route_key, started))
        prediction = await services.inference.predict(served, body, media_type)
    except Exception as exc:
        error = http_errors.classify(exc)
        failed = Exchange("mlflow", media_type, body, b"", route_key, error_code=error.code)
        services.predict_finished(served, status=error.status, started=started, error=exc, exchange=failed)
        raise
    served = prediction.served  # a canary unloaded meanwhile was answered by its default version
    exchange = Exchange("mlflow", media_type, body, prediction.body, route_key)
    services.predict_finished(served, status=200, started=started, exchange=exchange)
    response_headers = served_headers(served)
    if served.route is not None:
        services.shadows.copy(
            served,
            prediction.body,
            lambda target: services.inference.predict(target, body, media_type),
            record=ShadowRecord.of(exchange, http_errors.classify),
        )
    return Answer(prediction.body, response_headers)


def served_headers(served: Resolved) -> dict[str, str]:
    """What every answer says of the version that served it."""
    headers = {"X-Model-Name": header_value(served.name), "X-Model-Version": str(served.version)}
    if served.alias:
        headers["X-Model-Alias"] = header_value(served.alias)
    if served.route is not None:
        headers["X-Model-Route"] = served.route
    return headers


async def serve(services: Services, scope: Scope, receive: Receive, send: Send, name: str, version: str | None) -> None:
    """Answer one predict request on ASGI: the prediction (or its stream), or the error's JSON."""
    try:
        result = await answer(services, scope["headers"], receive, name, version)
        if result.stream is not None:
            await result.stream.send(services, receive, send, result.headers)
            return
        status, body, headers = 200, result.body, result.headers
    except Exception as exc:
        error = http_errors.answer_for(exc, scope["method"], scope["path"])
        status, body, headers = error.status, error.body, error.headers
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(key.lower().encode("latin-1"), value.encode("latin-1")) for key, value in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
