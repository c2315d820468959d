"""The OpenAI-compatible routes declared to FastAPI: ``GET /v1/models`` answered here, and the
two POST routes for /docs (gateway.app.GatewayApp answers them on bare ASGI first, in
gateway.protocols.openai_serving, as it does the predict paths).

``GET /v1/models`` lists what this gateway serves the way OpenAI's clients read it: each
registered model by its name, and each of its aliases as ``name@alias``: what the POST routes'
``model`` takes (``name/3`` names a version, too). It lists only what those routes can call:
a name or alias whose version speaks OpenAI (openai_serving.speaks_openai: agents, chat models,
chat-format pyfuncs; never a flavor's model such as scikit-learn's iris), and of those only the
models the caller's key may predict (any ``predict:`` scope lists what it matches, as OpenAI's
clients list with the key they call with; the ``read`` scope lists all). Nothing is loaded: a
version's MLmodel is read from the artifact cache.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from gateway.admission.access import Access, requires
from gateway.errors import GatewayError
from gateway.http.api_examples import CHAT_BODY, RESPONSES_BODY
from gateway.process import Services
from gateway.protocols import openai_serving
from gateway.wire import openai_shapes

router = APIRouter()


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
    openapi_extra=RESPONSES_BODY,
)
@requires(Access.PREDICT)
async def responses(request: Request) -> Response:
    return _Lane(request.app.state.services, openai_serving.RESPONSES)


@router.post(
    openai_serving.CHAT,
    tags=["openai"],
    summary="OpenAI's Chat Completions, for ChatModel, ChatAgent and chat-format pyfunc versions",
    openapi_extra=CHAT_BODY,
)
@requires(Access.PREDICT)
async def chat_completions(request: Request) -> Response:
    return _Lane(request.app.state.services, openai_serving.CHAT)


@router.get("/v1/models", tags=["openai"], summary="The models this gateway's OpenAI routes serve, as OpenAI's list")
@requires(Access.LIST)
async def models(request: Request) -> JSONResponse:
    services: Services = request.app.state.services
    may_call = await services.gate.listed(request.headers.raw)
    listed = await services.inventory.models()
    entries: list[tuple[str, int]] = []
    for model in listed.models:
        if not may_call(model.name):
            continue
        try:
            default: int | None = (await services.inference.default_version(model.name, take_over=False)).version
        except GatewayError:
            default = None
        if default is not None and await _speaks_openai(services, model.name, default):
            entries.append((model.name, 0))
        for alias in sorted(model.aliases):
            if await _speaks_openai(services, model.name, model.aliases[alias]):
                entries.append((f"{model.name}@{alias}", 0))
    body: dict[str, Any] = openai_shapes.models_list(entries)
    return JSONResponse(body)


async def _speaks_openai(services: Services, name: str, version: int) -> bool:
    try:
        return openai_serving.speaks_openai(await services.inventory.mlmodel(name, version))
    except GatewayError:
        return False  # deleted since the listing, or its files unreadable: nothing to call
