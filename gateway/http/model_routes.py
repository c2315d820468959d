"""HTTP routes: read the request, call the service, shape the response. Nothing more."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from gateway.admission.access import Access, requires
from gateway.errors import NoDefaultModel
from gateway.http.api_examples import (
    NAME_EXAMPLES,
    PREDICT_BODY,
    PREDICT_ERRORS,
    VERSION_EXAMPLES,
    error_responses,
)
from gateway.http.schemas import ModelDetail, ModelList, PredictionBody, TrafficDetail, VersionDetail
from gateway.process import Services
from gateway.protocols import mlflow_predict as predict_endpoint

_NAME = "Registered model name"
_VERSION = "A version number, an alias such as `champion`, or `latest`"
NameParam = Annotated[str, Path(description=_NAME, openapi_examples=NAME_EXAMPLES)]
VersionParam = Annotated[str, Path(description=_VERSION, openapi_examples=VERSION_EXAMPLES)]

# The predict routes: GatewayApp answers these two paths on bare ASGI before FastAPI sees
# them (gateway.protocols.mlflow_predict says why). They are declared here for /docs, and work the
# same for an app that mounts this router: both ways call predict_endpoint.answer. They
# read their parameters themselves, so they are documented by hand.


def _documented(
    name: str, where: str, description: str, examples: dict[str, dict[str, str]] | None = None
) -> dict[str, Any]:
    """An OpenAPI parameter entry for a parameter the route reads itself."""
    entry: dict[str, Any] = {"name": name, "in": where, "required": where == "path", "schema": {"type": "string"}}
    if examples is not None:
        entry["examples"] = examples
    return entry | {"description": description}


_NAME_DOC = _documented("name", "path", _NAME, NAME_EXAMPLES)
_VERSION_DOC = _documented("version", "path", _VERSION, VERSION_EXAMPLES)
_HEADER_DOC = _documented(
    "X-Model-Version", "header", "A version number, an alias or `latest`; on the versioned path it must agree with it"
)
_PREDICT_RESPONSES = error_responses(PREDICT_ERRORS)

router = APIRouter()


@router.post(
    "/models/{name}/versions/{version}/invocations",
    response_model=PredictionBody,
    responses=_PREDICT_RESPONSES,
    openapi_extra={**PREDICT_BODY, "parameters": [_NAME_DOC, _VERSION_DOC, _HEADER_DOC]},
    tags=["predict"],
    summary="The same, at the path of `mlflow models serve` (its /invocations, per model and version)",
)
@router.post(
    "/models/{name}/versions/{version}/predict",
    response_model=PredictionBody,
    responses=_PREDICT_RESPONSES,
    openapi_extra={**PREDICT_BODY, "parameters": [_NAME_DOC, _VERSION_DOC, _HEADER_DOC]},
    tags=["predict"],
    summary="Predict with a chosen version",
)
@requires(Access.PREDICT)
async def predict_version(request: Request) -> Response:
    params = request.path_params
    return await _predict(request, params["name"], params["version"])


@router.post(
    "/models/{name}/invocations",
    response_model=PredictionBody,
    responses=_PREDICT_RESPONSES,
    openapi_extra={**PREDICT_BODY, "parameters": [_NAME_DOC, _HEADER_DOC]},
    tags=["predict"],
    summary="The same, at the path of `mlflow models serve` (its /invocations, per model)",
)
@router.post(
    "/models/{name}/predict",
    response_model=PredictionBody,
    responses=_PREDICT_RESPONSES,
    openapi_extra={**PREDICT_BODY, "parameters": [_NAME_DOC, _HEADER_DOC]},
    tags=["predict"],
    summary="Predict with the version in X-Model-Version, else the default alias, else latest",
)
@requires(Access.PREDICT)
async def predict_default(request: Request) -> Response:
    return await _predict(request, request.path_params["name"], None)


@router.post(
    "/invocations",
    response_model=PredictionBody,
    responses=_PREDICT_RESPONSES,
    openapi_extra={**PREDICT_BODY, "parameters": [_HEADER_DOC]},
    tags=["predict"],
    summary="`mlflow models serve`'s own route: predict with GATEWAY_DEFAULT_MODEL",
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
    result = await predict_endpoint.answer(services, request.scope["headers"], request.receive, name, version)
    return Response(result.body, media_type="application/json", headers=result.headers)


@router.get("/models", response_model=ModelList, tags=["models"])
@requires(Access.READ)
async def list_models(request: Request) -> ModelList:
    services: Services = request.app.state.services
    return await services.inventory.models()


@router.get(
    "/models/{name}",
    response_model=ModelDetail,
    responses=error_responses(PREDICT_ERRORS, "unknown_model"),
    tags=["models"],
)
@requires(Access.READ)
async def get_model(request: Request, name: NameParam) -> ModelDetail:
    services: Services = request.app.state.services
    return await services.inventory.model(name)


@router.get(
    "/models/{name}/versions/{version}",
    response_model=VersionDetail,
    responses=error_responses(
        PREDICT_ERRORS, "bad_selector", "negative_version", "unknown_model", "unknown_version", "unknown_alias"
    ),
    tags=["models"],
)
@requires(Access.READ)
async def get_version(request: Request, name: NameParam, version: VersionParam) -> VersionDetail:
    services: Services = request.app.state.services
    return await services.inventory.version(name, version)


@router.get(
    "/models/{name}/traffic",
    response_model=TrafficDetail,
    responses=error_responses(PREDICT_ERRORS, "unknown_model"),
    tags=["models"],
    summary="The model's traffic split (canaries, shadows) as configured, as served here, and summed over replicas",
)
@requires(Access.READ)
async def get_traffic(request: Request, name: NameParam) -> TrafficDetail:
    services: Services = request.app.state.services
    return await services.traffic_report.describe(name)
