"""The one place errors become HTTP responses.

Every error answer has one JSON shape, MLflow's: ``{"error_code", "message"}``. Nothing
else leaves the process: an unexpected exception is logged here with its traceback and
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

from gateway import errors
from registry_sync import errors as registry_errors

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class HttpError:
    status: int
    code: str
    retry_after: int | None = None


_NOT_FOUND = HttpError(404, "RESOURCE_DOES_NOT_EXIST")
_UNAVAILABLE = HttpError(503, "TEMPORARILY_UNAVAILABLE", retry_after=1)

# Most specific first: the first isinstance match wins.
_TABLE: tuple[tuple[type[Exception], HttpError], ...] = (
    (errors.ModelNotFound, _NOT_FOUND),
    (errors.VersionNotFound, _NOT_FOUND),
    (errors.AliasNotFound, _NOT_FOUND),
    (errors.NoReadyVersion, _NOT_FOUND),
    (errors.VersionNotReady, HttpError(409, "INVALID_STATE")),
    (errors.VersionRefused, HttpError(409, "INVALID_STATE")),
    (errors.InvalidSelector, HttpError(400, "INVALID_PARAMETER_VALUE")),
    (errors.SelectorConflict, HttpError(400, "INVALID_PARAMETER_VALUE")),
    (errors.MalformedRequest, HttpError(400, "BAD_REQUEST")),
    (errors.InvalidInput, HttpError(400, "INVALID_PARAMETER_VALUE")),
    (errors.ModelRaised, HttpError(400, "BAD_REQUEST")),
    (errors.PayloadTooLarge, HttpError(413, "REQUEST_LIMIT_EXCEEDED")),
    (errors.UnsupportedMediaType, HttpError(415, "BAD_REQUEST")),
    (errors.ModelLoadFailed, _UNAVAILABLE),
    (errors.ModelTooLarge, HttpError(503, "RESOURCE_EXHAUSTED")),
    (errors.ShuttingDown, _UNAVAILABLE),
    (errors.Overloaded, _UNAVAILABLE),
    (errors.NotReady, _UNAVAILABLE),
    (errors.PredictTimeout, HttpError(504, "DEADLINE_EXCEEDED")),
    (errors.PredictFailed, HttpError(500, "INTERNAL_ERROR")),
    (ClientDisconnect, HttpError(400, "BAD_REQUEST")),
    (registry_errors.RegisteredModelNotFound, _NOT_FOUND),
    (registry_errors.RegistryUnavailable, _UNAVAILABLE),
    (registry_errors.ArtifactFetchFailed, _UNAVAILABLE),
)
_INTERNAL = HttpError(500, "INTERNAL_ERROR")


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


def error_answer(status: int, code: str, message: str, *, retry_after: int | None = None) -> ErrorAnswer:
    if len(message) > _MAX_MESSAGE:
        message = message[:_MAX_MESSAGE] + " ..."
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
    return ErrorAnswer(status, orjson.dumps({"error_code": code, "message": message}), headers)


def error_response(status: int, code: str, message: str, *, retry_after: int | None = None) -> Response:
    return error_answer(status, code, message, retry_after=retry_after).response()


def answer_for(exc: BaseException, method: str, path: str) -> ErrorAnswer:
    """What a request that raised ``exc`` gets back; logs what an operator should see."""
    if isinstance(exc, ClientDisconnect):
        log.info("client went away during %s %s", method, path)
        return error_answer(400, "BAD_REQUEST", "The client disconnected before sending the whole body")
    if isinstance(exc, errors.GatewayError | registry_errors.RegistryError):
        answer = classify(exc)
        if answer.status >= 500:
            log.warning("%s %s -> %d: %s", method, path, answer.status, exc)
        return error_answer(answer.status, answer.code, str(exc), retry_after=answer.retry_after)
    log.exception("unhandled error on %s %s", method, path, exc_info=exc)
    return error_answer(500, "INTERNAL_ERROR", "Internal error; the gateway logged the details")


def documented(exc: BaseException) -> tuple[int, dict[str, str]]:
    """The status and JSON body a request that raised ``exc`` gets, for the OpenAPI examples."""
    answer = classify(exc)
    error = error_answer(answer.status, answer.code, str(exc), retry_after=answer.retry_after)
    return error.status, orjson.loads(error.body)


async def _mapped(request: Request, exc: Exception) -> Response:
    return answer_for(exc, request.method, request.url.path).response()


async def _http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "ENDPOINT_NOT_FOUND", 405: "BAD_REQUEST"}.get(exc.status_code, "BAD_REQUEST")
    message = exc.detail if exc.status_code != 404 else f"No endpoint at {request.method} {request.url.path}"
    response = error_response(exc.status_code, code, str(message))
    for key, value in (exc.headers or {}).items():
        response.headers[key] = value
    return response


async def _validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = "; ".join(
        f"{'.'.join(str(p) for p in error.get('loc', ()))}: {error.get('msg', '')}" for error in exc.errors()
    )
    return error_response(400, "INVALID_PARAMETER_VALUE", f"Invalid request: {problems}")


def install(app: FastAPI) -> None:
    for kind in (errors.GatewayError, registry_errors.RegistryError, ClientDisconnect, Exception):
        app.add_exception_handler(kind, _mapped)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(RequestValidationError, _validation)
