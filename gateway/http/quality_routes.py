"""Ground truth and live quality over HTTP: ``POST /feedback``, a version's quality, and every
version's as last computed (``GET /quality``, what ``/status`` and ``registry-gateway status`` show)."""

from __future__ import annotations

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import Response

from gateway.admission.access import Access, requires
from gateway.http.api_examples import PREDICT_ERRORS, error_responses
from gateway.http.model_routes import NameParam, VersionParam
from gateway.http.request_body import read_body
from gateway.process import Services
from gateway.quality.monitor import arm_body, describe
from gateway.wire.api_schemas import ArmQualityBody, ErrorBody, FeedbackAnswer, QualityList, VersionQualityBody
from gateway.wire.selectors import parse_selector
from registry_sync.quality import task_of_tag

router = APIRouter()

# One label is a request id and a row; a thousand of them fit well within this.
_MAX_FEEDBACK_BYTES = 8 * 1024 * 1024


@router.post(
    "/feedback",
    response_model=FeedbackAnswer,
    tags=["models"],
    summary="Labels (ground truth) for answers already given, by request id; answered per item",
    responses={
        400: {"model": ErrorBody, "description": "The body is not JSON, or neither a label nor an array of them"},
        413: {"model": ErrorBody, "description": "More labels than GATEWAY_FEEDBACK_MAX_ITEMS, or too large a body"},
        503: {"model": ErrorBody, "description": "The state database cannot be written: nothing was accepted"},
    },
)
@requires(Access.FEEDBACK)
async def post_feedback(request: Request) -> Response:
    services: Services = request.app.state.services
    body = await read_body(request.receive, request.headers.get("content-length"), _MAX_FEEDBACK_BYTES)
    answer = await services.feedback.receive(body)
    text = FeedbackAnswer.model_validate(answer).model_dump_json(exclude_none=True)
    return Response(text, media_type="application/json")


@router.get(
    "/models/{name}/versions/{version}/quality",
    response_model=VersionQualityBody,
    responses=error_responses(
        PREDICT_ERRORS, "bad_selector", "negative_version", "unknown_model", "unknown_version", "unknown_alias"
    ),
    tags=["models"],
    summary="A version's live quality over its latest labels, per arm and all together",
)
@requires(Access.READ)
async def get_version_quality(request: Request, name: NameParam, version: VersionParam) -> VersionQualityBody:
    services: Services = request.app.state.services
    resolved = await services.catalog.resolve(name, parse_selector(version), take_over=False)
    state = services.catalog.state(name, resolved.version)
    task = task_of_tag(state.tags) if state is not None else None
    window = services.settings.quality_window
    store = services.quality.store

    def read() -> list[ArmQualityBody]:
        arms = sorted({arm for identity, arm in store.labelled() if identity.same_version(resolved.id)})
        found = [arm_body("all", store.scored(resolved.id, arm=None, window=window, task=task))]
        return found + [arm_body(arm, store.scored(resolved.id, arm=arm, window=window, task=task)) for arm in arms]

    arms = await anyio.to_thread.run_sync(read)
    return VersionQualityBody(model=name, version=resolved.version, arms=arms)


@router.get(
    "/quality",
    response_model=QualityList,
    tags=["models"],
    summary="Every version and arm with labels (of one model: ?model=), as this process last computed them",
)
@requires(Access.READ)
async def list_quality(request: Request, model: str | None = None) -> QualityList:
    services: Services = request.app.state.services
    return describe(services.quality, model)
