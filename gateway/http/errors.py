"""The one place errors become HTTP responses.

Every error answer has one JSON shape, MLflow's: ``{"error_code", "message"}``, but on the
Open Inference Protocol's routes (``/v2``), whose clients read ``{"error": "..."}``: the
same statuses either way. Nothing else leaves the process: an unexpected exception is logged here with its traceback and
answered with a generic 500.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import Scope, Send

from gateway import errors
from gateway.jobs.files import errors as job_files
from registry_sync import errors as registry_errors
from registry_sync.repository import StateUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class HttpError:
    status: int
    code: str
    retry_after: int | None = None
    headers: tuple[tuple[str, str], ...] = ()


_CHALLENGE = 'Bearer realm="registry-gateway"'
# RFC 6750, section 3: what a bearer token's holder is told (the reason is in the body)
_INVALID_TOKEN = 'Bearer realm="registry-gateway", error="invalid_token"'
_NO_SCOPE = 'Bearer realm="registry-gateway", error="insufficient_scope"'
_NOT_FOUND = HttpError(404, "RESOURCE_DOES_NOT_EXIST")
_UNAVAILABLE = HttpError(503, "TEMPORARILY_UNAVAILABLE", retry_after=1)

# Most specific first: the first isinstance match wins.
_TABLE: tuple[tuple[type[Exception], HttpError], ...] = (
    (errors.ModelNotFound, _NOT_FOUND),
    (errors.VersionNotFound, _NOT_FOUND),
    (errors.AliasNotFound, _NOT_FOUND),
    (errors.NoDefaultModel, HttpError(404, "ENDPOINT_NOT_FOUND")),
    (errors.NoReadyVersion, _NOT_FOUND),
    (errors.VersionNotReady, HttpError(409, "INVALID_STATE")),
    (errors.VersionRefused, HttpError(409, "INVALID_STATE")),
    (errors.InvalidToken, HttpError(401, "UNAUTHENTICATED", headers=(("WWW-Authenticate", _INVALID_TOKEN),))),
    (errors.Unauthenticated, HttpError(401, "UNAUTHENTICATED", headers=(("WWW-Authenticate", _CHALLENGE),))),
    (errors.IssuerUnavailable, _UNAVAILABLE),
    (errors.InsufficientScope, HttpError(403, "PERMISSION_DENIED", headers=(("WWW-Authenticate", _NO_SCOPE),))),
    (errors.Forbidden, HttpError(403, "PERMISSION_DENIED")),
    (errors.RateLimited, HttpError(429, "REQUEST_LIMIT_EXCEEDED")),
    (errors.LoadsThrottled, _UNAVAILABLE),
    (errors.InvalidSelector, HttpError(400, "INVALID_PARAMETER_VALUE")),
    (errors.SelectorConflict, HttpError(400, "INVALID_PARAMETER_VALUE")),
    (errors.MalformedRequest, HttpError(400, "BAD_REQUEST")),
    (errors.InvalidInput, HttpError(400, "INVALID_PARAMETER_VALUE")),
    (errors.ModelRaised, HttpError(400, "BAD_REQUEST")),
    (errors.PayloadTooLarge, HttpError(413, "REQUEST_LIMIT_EXCEEDED")),
    (errors.DecodedTooLarge, HttpError(413, "REQUEST_LIMIT_EXCEEDED")),
    (errors.TooManyLabels, HttpError(413, "REQUEST_LIMIT_EXCEEDED")),
    (errors.UnsupportedMediaType, HttpError(415, "BAD_REQUEST")),
    (errors.UnsupportedEncoding, HttpError(415, "BAD_REQUEST")),
    (errors.ModelLoadFailed, _UNAVAILABLE),
    (errors.ModelTooLarge, HttpError(503, "RESOURCE_EXHAUSTED")),
    (errors.ShuttingDown, _UNAVAILABLE),
    (errors.Overloaded, _UNAVAILABLE),
    (errors.WorkerUnavailable, _UNAVAILABLE),
    (errors.WorkersExhausted, HttpError(503, "RESOURCE_EXHAUSTED", retry_after=1)),
    (errors.NotReady, _UNAVAILABLE),
    (errors.NotStreamable, HttpError(400, "INVALID_PARAMETER_VALUE")),
    (errors.WrongInterface, HttpError(400, "INVALID_PARAMETER_VALUE")),
    (errors.StreamIdle, HttpError(504, "DEADLINE_EXCEEDED")),
    (errors.StreamsExhausted, HttpError(503, "RESOURCE_EXHAUSTED", retry_after=1)),
    (errors.PredictTimeout, HttpError(504, "DEADLINE_EXCEEDED")),
    (errors.PredictFailed, HttpError(500, "INTERNAL_ERROR")),
    (errors.InvalidJob, HttpError(400, "INVALID_PARAMETER_VALUE")),
    (errors.JobNotFound, _NOT_FOUND),
    (errors.JobsFull, HttpError(429, "REQUEST_LIMIT_EXCEEDED", retry_after=5)),
    (errors.JobResultMissing, HttpError(409, "INVALID_STATE")),
    (errors.ChunkRejected, HttpError(400, "INVALID_PARAMETER_VALUE")),  # a chunk's failure: never an answer
    (errors.VersionReplaced, HttpError(409, "INVALID_STATE")),  # a job's failure: never an answer
    (job_files.InputUnavailable, _UNAVAILABLE),  # the input's store did not answer: not the caller's fault
    (job_files.OutputUnavailable, _UNAVAILABLE),  # the output's store did not take the probe write now
    (job_files.OutputUnwritable, HttpError(400, "INVALID_PARAMETER_VALUE")),
    (job_files.JobFileError, HttpError(400, "INVALID_PARAMETER_VALUE")),
    (ClientDisconnect, HttpError(400, "BAD_REQUEST")),
    (registry_errors.RegisteredModelNotFound, _NOT_FOUND),
    (registry_errors.RegistryUnavailable, _UNAVAILABLE),
    (StateUnavailable, _UNAVAILABLE),  # POST /feedback with the state database down: try again
    (registry_errors.ArtifactFetchFailed, _UNAVAILABLE),
    (registry_errors.ArtifactLocationRefused, HttpError(409, "INVALID_STATE")),
)
_INTERNAL = HttpError(500, "INTERNAL_ERROR")
# Starlette's routing, not the gateway's errors: see _http.
_NO_ENDPOINT = HttpError(404, "ENDPOINT_NOT_FOUND")
_NO_SUCH_METHOD = HttpError(405, "METHOD_NOT_ALLOWED")


def classify(exc: BaseException) -> HttpError:
    for kind, answer in _TABLE:
        if isinstance(exc, kind):
            return answer
    return _INTERNAL


_MAX_MESSAGE = 2000  # MLflow's schema errors echo the whole input; keep answers small


@dataclass(frozen=True, slots=True)
class ErrorAnswer:
    """An error as it goes on the wire: for a Starlette Response, or straight to ASGI send."""

    status: int
    body: bytes
    headers: dict[str, str]

    def response(self) -> Response:
        return Response(self.body, status_code=self.status, media_type="application/json", headers=self.headers)


def error_answer(
    status: int,
    code: str,
    message: str,
    *,
    retry_after: int | None = None,
    headers: tuple[tuple[str, str], ...] = (),
    fields: dict[str, str] | None = None,
    oip: bool = False,
) -> ErrorAnswer:
    """The error body, ``{"error_code", "message"}`` plus any ``fields`` that name the cause
    for scripts (a 429's ``limit``); ``{"error": message}`` (and the fields) for ``oip``."""
    if len(message) > _MAX_MESSAGE:
        message = message[:_MAX_MESSAGE] + " ..."
    out = dict(headers)
    if retry_after is not None:
        out["Retry-After"] = str(retry_after)
    body = {"error": message} if oip else {"error_code": code, "message": message}
    return ErrorAnswer(status, orjson.dumps({**body, **(fields or {})}), out)


def speaks_oip(scope: Scope) -> bool:
    """Whether the request is on the Open Inference Protocol's routes (``/v2``, under any
    ``root_path``): its errors take that protocol's shape."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return path == "/v2" or path.startswith("/v2/")


def _from(exc: BaseException, answer: HttpError, *, oip: bool = False) -> ErrorAnswer:
    """An error the table classified; an error may carry its own ``retry_after``, ``fields``
    and ``headers``."""
    retry_after = getattr(exc, "retry_after", None)
    own = getattr(exc, "headers", None)  # a quota's X-RateLimit-*
    return error_answer(
        answer.status,
        answer.code,
        str(exc),
        retry_after=retry_after if isinstance(retry_after, int) else answer.retry_after,
        headers=answer.headers + tuple(own.items()) if isinstance(own, dict) else answer.headers,
        fields=getattr(exc, "fields", None),
        oip=oip,
    )


async def send_error(send: Send, answer: ErrorAnswer) -> None:
    """An error straight to ASGI (for what answers before any framework sees the request)."""
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(answer.body)).encode())]
    raw += [(key.lower().encode("latin-1"), value.encode("latin-1")) for key, value in answer.headers.items()]
    await send({"type": "http.response.start", "status": answer.status, "headers": raw})
    await send({"type": "http.response.body", "body": answer.body})


def error_response(
    status: int, code: str, message: str, *, retry_after: int | None = None, oip: bool = False
) -> Response:
    return error_answer(status, code, message, retry_after=retry_after, oip=oip).response()


def answer_for(exc: BaseException, method: str, path: str, *, oip: bool = False) -> ErrorAnswer:
    """What a request that raised ``exc`` gets back (in the OIP's shape if ``oip``); logs what
    an operator should see."""
    if isinstance(exc, ClientDisconnect):
        log.info("client went away during %s %s", method, path)
        return error_answer(400, "BAD_REQUEST", "The client disconnected before sending the whole body", oip=oip)
    if isinstance(exc, errors.GatewayError | registry_errors.RegistryError):
        answer = classify(exc)
        if answer.status >= 500:
            told = isinstance(exc, errors.GatewayError) and exc.told  # a load's failure: one WARNING
            log.log(logging.INFO if told else logging.WARNING, "%s %s -> %d: %s", method, path, answer.status, exc)
        return _from(exc, answer, oip=oip)
    log.exception("unhandled error on %s %s", method, path, exc_info=exc)
    return error_answer(500, "INTERNAL_ERROR", "Internal error; the gateway logged the details", oip=oip)


def documented(exc: BaseException) -> tuple[int, dict[str, str]]:
    """The status and JSON body a request that raised ``exc`` gets, for the OpenAPI examples."""
    error = _from(exc, classify(exc))
    return error.status, orjson.loads(error.body)


async def _mapped(request: Request, exc: Exception) -> Response:
    return answer_for(exc, request.method, request.url.path, oip=speaks_oip(request.scope)).response()


async def _http(request: Request, exc: Exception) -> Response:
    """What Starlette's routing raises: no route for the path (404), or a route for the path
    that takes other methods (405, with Starlette's ``Allow`` header naming them); anything
    else (FastAPI's "error parsing the body") is a 4xx of the status it carries."""
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 404:
        answer, message = _NO_ENDPOINT, f"No endpoint at {request.method} {request.url.path}"
    elif exc.status_code == 405:
        # Starlette joins a set of methods: sorted, the header reads the same every time
        allowed = ", ".join(sorted({m.strip() for m in headers.pop("Allow", "").split(",") if m.strip()}))
        if allowed:
            headers["Allow"] = allowed
        answer = _NO_SUCH_METHOD
        message = f"Method {request.method} is not allowed on {request.url.path}" + (
            f"; it takes {allowed}" if allowed else ""
        )
    else:
        answer, message = HttpError(exc.status_code, "BAD_REQUEST"), str(exc.detail)
    response = error_response(answer.status, answer.code, message, oip=speaks_oip(request.scope))
    for key, value in headers.items():
        response.headers[key] = value
    return response


async def _validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = "; ".join(
        f"{'.'.join(str(p) for p in error.get('loc', ()))}: {error.get('msg', '')}" for error in exc.errors()
    )
    return error_response(400, "INVALID_PARAMETER_VALUE", f"Invalid request: {problems}", oip=speaks_oip(request.scope))


def install(app: FastAPI) -> None:
    for kind in (errors.GatewayError, registry_errors.RegistryError, ClientDisconnect, Exception):
        app.add_exception_handler(kind, _mapped)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(RequestValidationError, _validation)
