"""Drift over HTTP: a version's figures against its reference (``GET
/models/{name}/versions/{version}/drift``) and every version's (``GET /drift``, what ``/status``
and ``registry-gateway status`` show), as this process last computed them
(gateway/drift/report.py)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from gateway.admission.access import Access, requires
from gateway.drift.report import describe, version_body
from gateway.http.api_examples import PREDICT_ERRORS, error_responses
from gateway.http.model_routes import NameParam, VersionParam
from gateway.process import Services
from gateway.rooms.drift import tabular_columns
from gateway.wire.api_schemas import DriftList, VersionDriftBody
from gateway.wire.selectors import parse_selector

router = APIRouter()


@router.get(
    "/models/{name}/versions/{version}/drift",
    response_model=VersionDriftBody,
    responses=error_responses(
        PREDICT_ERRORS, "bad_selector", "negative_version", "unknown_model", "unknown_version", "unknown_alias"
    ),
    tags=["models"],
    summary="A version's drift per feature and output against its reference, over the fleet's window, or why none",
)
@requires(Access.READ)
async def get_version_drift(request: Request, name: NameParam, version: VersionParam) -> VersionDriftBody:
    services: Services = request.app.state.services
    resolved = await services.catalog.resolve(name, parse_selector(version), take_over=False)
    loaded = services.cache.peek(resolved.id)
    tabular = tabular_columns(loaded.metadata) is not None if loaded is not None else None
    settings = services.settings
    return version_body(
        services.drift,
        resolved.id,
        tabular=tabular,
        window_seconds=settings.drift_window_seconds,
        window_rows=settings.drift_window_rows,
        baseline_rows=settings.drift_baseline_rows,
    )


@router.get(
    "/drift",
    response_model=DriftList,
    tags=["models"],
    summary="Every version with a drift window (of one model: ?model=), drifting first, as last computed",
)
@requires(Access.READ)
async def list_drift(request: Request, model: str | None = None) -> DriftList:
    services: Services = request.app.state.services
    return describe(services.drift, model)
