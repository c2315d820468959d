"""The OpenAI-compatible routes declared to FastAPI: ``GET /v1/models`` answered here, and the
two POST routes for /docs (gateway.app.GatewayApp answers them on bare ASGI first, in
gateway.protocols.openai_serving, as it does the predict paths).

``GET /v1/models`` lists what this gateway serves the way OpenAI's clients read it: each
registered model by its name, and each of its aliases as ``name@alias``: what the POST routes'
``model`` takes (``name/3`` names a version, too). It needs the ``read`` scope, as ``/models`` does.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from gateway.admission.access import Access, requires
from gateway.process import Services
from gateway.protocols import openai_serving
from gateway.wire import openai_shapes

router = APIRouter()

_BODY_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["model"],
                    "properties": {
                        "model": {"type": "string", "description": "`name`, `name@alias` or `name/version`"},
                        "stream": {"type": "boolean", "description": "Server-sent events instead of one answer"},
                    },
                    "additionalProperties": True,
                }
            }
        },
    }
}


class _Lane(Response):
    """The bare-ASGI lane as a response, for an app that mounts this router itself."""

    def __init__(self, services: Services, route: str) -> None:
        super().__init__()
        self._services = services
        self._route = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await openai_serving.serve(self._services, scope, receive, send, self._route)


@router.post(
    openai_serving.RESPONSES,
    tags=["openai"],
    summary="OpenAI's Responses API, for ResponsesAgent versions (model: name, name@alias or name/version)",
    openapi_extra=_BODY_DOC,
)
@requires(Access.PREDICT)
async def responses(request: Request) -> Response:
    return _Lane(request.app.state.services, openai_serving.RESPONSES)


@router.post(
    openai_serving.CHAT,
    tags=["openai"],
    summary="OpenAI's Chat Completions, for ChatModel, ChatAgent and chat-format pyfunc versions",
    openapi_extra=_BODY_DOC,
)
@requires(Access.PREDICT)
async def chat_completions(request: Request) -> Response:
    return _Lane(request.app.state.services, openai_serving.CHAT)


@router.get("/v1/models", tags=["openai"], summary="What this gateway serves, as OpenAI's model list")
@requires(Access.READ)
async def models(request: Request) -> JSONResponse:
    services: Services = request.app.state.services
    listed = await services.inventory.models()
    entries: list[tuple[str, int]] = []
    for model in listed.models:
        entries.append((model.name, 0))
        entries += [(f"{model.name}@{alias}", 0) for alias in sorted(model.aliases)]
    body: dict[str, Any] = openai_shapes.models_list(entries)
    return JSONResponse(body)
