"""MLflow's scoring protocol declared to FastAPI: the predict routes, for /docs and for an app
that mounts this router itself.

:class:`gateway.app.GatewayApp` answers these paths on bare ASGI before FastAPI sees them
(:mod:`gateway.protocols.mlflow_predict` says why); declared here, they call the same
:func:`~gateway.protocols.mlflow_predict.answer`. They read their parameters themselves, so they
are documented by hand.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from gateway.admission.access import Access, requires
from gateway.errors import NoDefaultModel
from gateway.http.api_examples import (
    NAME_PARAMETER,
    PREDICT_BODY,
    PREDICT_ERRORS,
    VERSION_PARAMETER,
    documented_parameter,
    error_responses,
)
from gateway.process import Services
from gateway.protocols import mlflow_predict, mlflow_stream
from gateway.wire.api_schemas import PredictionBody

_HEADER_DOC = documented_parameter(
    "X-Model-Version", "header", "A version number, an alias or `latest`; on the versioned path it must agree with it"
)
_PREDICT_RESPONSES = error_responses(PREDICT_ERRORS)

router = APIRouter()
_Route = Callable[[Request], Awaitable[Response]]


def _predict_route(path: str, summary: str, *parameters: dict[str, Any]) -> Callable[[_Route], _Route]:
    """One predict route as /docs shows it: the scoring body, a prediction or the errors it
    can answer, and ``parameters``, which the route reads itself."""
    return router.post(
        path,
        response_model=PredictionBody,
        responses=_PREDICT_RESPONSES,
        openapi_extra={**PREDICT_BODY, "parameters": list(parameters)},
        tags=["predict"],
        summary=summary,
    )


@_predict_route(
    "/models/{name}/versions/{version}/invocations",
    "The same, at the path of mlflow models serve (its /invocations, per model and version)",
    NAME_PARAMETER,
    VERSION_PARAMETER,
    _HEADER_DOC,
)
@_predict_route(
    "/models/{name}/versions/{version}/predict",
    "Predict with a chosen version",
    NAME_PARAMETER,
    VERSION_PARAMETER,
    _HEADER_DOC,
)
@requires(Access.PREDICT)
async def predict_version(request: Request) -> Response:
    params = request.path_params
    return await _predict(request, params["name"], params["version"])


@_predict_route(
    "/models/{name}/invocations",
    "The same, at the path of mlflow models serve (its /invocations, per model)",
    NAME_PARAMETER,
    _HEADER_DOC,
)
@_predict_route(
    "/models/{name}/predict",
    "Predict with the version in X-Model-Version, else the default alias, else latest",
    NAME_PARAMETER,
    _HEADER_DOC,
)
@requires(Access.PREDICT)
async def predict_default(request: Request) -> Response:
    return await _predict(request, request.path_params["name"], None)


@_predict_route(
    "/invocations", "The route of mlflow models serve itself: predict with GATEWAY_DEFAULT_MODEL", _HEADER_DOC
)
@requires(Access.PREDICT)
async def invocations(request: Request) -> Response:
    services: Services = request.app.state.services
    target = services.settings.default_target
    if target is None:
        raise NoDefaultModel()
    return await _predict(request, *target)


async def _predict(request: Request, name: str, version: str | None) -> Response:
    services: Services = request.app.state.services
    result = await mlflow_predict.answer(services, request.scope["headers"], request.receive, name, version)
    if result.stream is not None:
        answer = result.stream
        return mlflow_stream.EventStreamResponse(
            services,
            answer.stream,
            headers=result.headers,
            request_body=answer.request_body,
            route_key=answer.route_key,
            started=answer.started,
        )
    return Response(result.body, media_type="application/json", headers=result.headers)
