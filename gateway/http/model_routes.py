"""The model routes (`/models`, a model, a version, its traffic): read the request, call the
service, shape the response. Nothing more. The predict routes are MLflow's scoring protocol's
(:mod:`gateway.protocols.mlflow_routes`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request

from gateway.admission.access import Access, requires
from gateway.http.api_examples import (
    NAME_DESCRIPTION,
    NAME_EXAMPLES,
    PREDICT_ERRORS,
    VERSION_DESCRIPTION,
    VERSION_EXAMPLES,
    error_responses,
)
from gateway.process import Services
from gateway.wire.api_schemas import ModelDetail, ModelList, TrafficDetail, VersionDetail

NameParam = Annotated[str, Path(description=NAME_DESCRIPTION, openapi_examples=NAME_EXAMPLES)]
VersionParam = Annotated[str, Path(description=VERSION_DESCRIPTION, openapi_examples=VERSION_EXAMPLES)]

router = APIRouter()


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
