"""Build the ASGI application. ``app_factory`` is the entry point uvicorn calls."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.types import Message, Receive, Scope, Send

from gateway import __version__
from gateway.admission.access import Access, AccessMap, declared
from gateway.admission.access import routes as access_routes
from gateway.admission.limits import NO_PERMIT
from gateway.errors import GatewayError
from gateway.http import api_docs
from gateway.http import errors as http_errors
from gateway.http.api_examples import AUTH_ERRORS, SECURITY_SCHEMES, error_responses
from gateway.http.control_routes import router as control_router
from gateway.http.drift_routes import router as drift_router
from gateway.http.fleet_routes import router as fleet_router
from gateway.http.health_routes import router as health_router
from gateway.http.job_routes import router as job_router
from gateway.http.model_routes import router as model_router
from gateway.http.quality_routes import router as quality_router
from gateway.http.status_page import router as status_router
from gateway.http.usage_routes import router as usage_router
from gateway.observability import context
from gateway.process import Services
from gateway.protocols import mlflow_predict as predict_endpoint
from gateway.protocols import mlflow_routes, oip_rest, openai_routes, openai_serving
from gateway.settings import GatewaySettings
from registry_sync.registry import RegistryReader

DESCRIPTION = """
Serves every version of every model in an MLflow model registry.

Choose a version by path (`/models/{name}/versions/{version}/predict`) or with the
`X-Model-Version` header on `/models/{name}/predict`; a version is a number, an alias
(`champion`) or `latest`. Bodies speak MLflow's scoring protocol, so a request that
works against `mlflow models serve` works here unchanged. Errors are
`{"error_code", "message"}`.
"""

log = logging.getLogger(__name__)

# gRPC calls still running when gRPC stops accepting (at the end of the drain, or when the
# lifespan ends) get this long more.
_GRPC_GRACE_SECONDS = 5.0


def create_app(
    settings: GatewaySettings, *, reader: RegistryReader | None = None, start_in_background: bool = False
) -> GatewayApp:
    """An app whose lifespan builds its services from ``settings`` and closes them.

    The lifespan waits for the services to start (sync, warm) unless ``start_in_background``:
    then the server takes connections at once, and ``/health/ready`` answers 503 with the
    reason until startup is done (what a server under an orchestrator wants: liveness
    probes answer while a large model warms)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        assert isinstance(app, GatewayApp)
        app.access = AccessMap.of(app)  # again: routes added since create_app must declare theirs too
        services = Services.build(settings, reader=reader)
        app.state.services = services
        grpc_server = None
        grpc_stopping: list[asyncio.Task[None]] = []
        try:
            if settings.grpc_port is not None and settings.serves_models:
                # before the services start: its health service answers while they warm. Imported
                # here: a gateway serving no gRPC port never loads grpc (0.15 s of CPU a start)
                from gateway.protocols import oip_grpc

                grpc_server = oip_grpc.GrpcServer(services, host=settings.grpc_host, port=settings.grpc_port)
                await grpc_server.start()
                app.state.grpc_address = grpc_server.address
                stop_grpc = grpc_server.stop
                services.drain.on_stop(
                    lambda: grpc_stopping.append(asyncio.create_task(stop_grpc(_GRPC_GRACE_SECONDS)))
                )
            if services.drain.install():  # SIGTERM: not ready, keep serving GATEWAY_DRAIN_SECONDS, then stop
                log.info("on SIGTERM, draining for %g s before stopping", settings.drain_seconds)
            if start_in_background:
                services.start_soon()
            else:
                await services.start()
            yield
        finally:
            if grpc_stopping:
                await asyncio.gather(*grpc_stopping)  # stopped accepting when the drain ended
            elif grpc_server is not None:
                await grpc_server.stop(_GRPC_GRACE_SECONDS)
            await services.close()

    app = GatewayApp(
        title="registry-gateway",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # FastAPI's pages load their scripts from a CDN; api_docs serves them here
        redoc_url=None,
    )
    http_errors.install(app)
    api_docs.install(app)
    app.include_router(health_router)  # first: these answer /health/* and /metrics in every role
    if settings.serves_models:  # a sync-only process serves no models
        app.include_router(mlflow_routes.router)
        app.include_router(model_router)
        app.include_router(oip_rest.router)
        app.include_router(openai_routes.router)
        app.include_router(quality_router)
        app.include_router(drift_router)
        app.include_router(job_router)
    app.include_router(control_router)
    app.include_router(usage_router)
    app.include_router(fleet_router)
    app.include_router(status_router)
    app.serves_predictions = settings.serves_models
    app.default_target = settings.default_target
    app.asks_for_keys = settings.auth != "off"
    app.access = AccessMap.of(app)  # every route declared what it needs, or no app
    return app


_INVALID_PARAMETERS = {
    "description": "Invalid parameters",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
}


_KEYED = frozenset({Access.READ, Access.ADMIN, Access.PREDICT, Access.CALLER})


class GatewayApp(FastAPI):
    """FastAPI, with the predict paths answered on bare ASGI before its middleware and
    routing (gateway.protocols.mlflow_predict). Middleware added to this app does not see predict
    requests: wrap the app instead."""

    serves_predictions = False
    default_target: tuple[str, str | None] | None = None  # what /invocations serves (GATEWAY_DEFAULT_MODEL)
    asks_for_keys = False  # GATEWAY_AUTH on: the schema documents the keys (see _document_security)
    access = AccessMap([])

    def openapi(self) -> dict[str, Any]:
        """FastAPI's schema, saying what invalid parameters really get: 400 with the error
        body (http_errors maps validation errors so), not FastAPI's default 422."""
        if self.openapi_schema is None:
            schema = super().openapi()
            for item in schema.get("paths", {}).values():
                for operation in item.values():
                    responses = operation.get("responses", {})
                    if responses.pop("422", None) is not None:
                        responses.setdefault("400", _INVALID_PARAMETERS)
            if self.asks_for_keys:  # else no route asks for one: no "Authorize", no lock icons
                self._document_security(schema)
            for unused in ("HTTPValidationError", "ValidationError"):
                schema.get("components", {}).get("schemas", {}).pop(unused, None)
            self.openapi_schema = schema
        return self.openapi_schema

    def _document_security(self, schema: dict[str, Any]) -> None:
        """The key schemes, and the 401, 403 and 429 answers, on every route that needs a key
        (so /docs offers "Authorize"); only with ``GATEWAY_AUTH=keys``, when they apply."""
        schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
        answers = {}
        for status, entry in error_responses(AUTH_ERRORS).items():
            content = {"schema": {"$ref": "#/components/schemas/ErrorBody"}, **entry["content"]["application/json"]}
            answers[str(status)] = {"description": entry["description"], "content": {"application/json": content}}
        for route in access_routes(self):
            if declared(route, openapi_url=self.openapi_url) not in _KEYED:
                continue
            item = schema.get("paths", {}).get(getattr(route, "path_format", ""), {})
            for method in getattr(route, "methods", ()) or ():
                operation = item.get(method.lower())
                if operation is None:
                    continue
                operation["security"] = [{name: []} for name in SECURITY_SCHEMES]
                for status, answer in answers.items():
                    operation.setdefault("responses", {}).setdefault(status, answer)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        services: Services | None = getattr(self.state, "services", None)
        request = context.begin(_header(scope["headers"], context.REQUEST_ID_HEADER))
        request.path = scope["path"]
        token = context.enter(request)
        tracing = services.tracing if services is not None else None
        if tracing is not None and tracing.enabled:
            span = tracing.start_request(scope["method"], scope["headers"], {"url.path": scope["path"]})
            if span is not None:  # most requests: sampled out, before any span was made
                request.traced(span)
        echoed = [(b"x-request-id", request.request_id.encode("ascii"))]
        if services is not None:  # which process answered, through a balancer too (registry-gateway status)
            echoed.append((b"x-gateway-replica", services.replica_header))
        if (trace_id := request.trace_id) is not None:
            echoed.append((b"x-trace-id", trace_id.encode("ascii")))
        if services is not None and services.drain.draining:
            # Kept-alive clients come back through the balancer, which sends them elsewhere.
            echoed.append((b"connection", b"close"))
        status = 500  # what the access log says of a request that ended before an answer began

        async def answering(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), *echoed]}
            await send(message)

        try:
            await self._serve(scope, receive, answering, services)
        finally:
            context.leave(token)
            if services is not None:
                self._observe(scope, services, request, status)

    def _observe(self, scope: Scope, services: Services, request: context.RequestContext, status: int) -> None:
        """The access log's line and the request span's end, once the answer is sent."""
        seconds = time.perf_counter() - request.started
        if services.access_log is not None:
            path = scope["path"]
            if query := scope.get("query_string"):
                path = f"{path}?{query.decode('latin-1')}"
            client = scope.get("client")
            # A client named by a trusted proxy's X-Forwarded-For has no known port (uvicorn: 0).
            where = (f"{client[0]}:{client[1]}" if client[1] else client[0]) if client else None
            services.access_log.request_done(scope["method"], path, status, seconds, request, where)
        if request.span is not None:
            route = scope.get("route")
            template = getattr(route, "path", None) or request.route or scope["path"]
            request.span.update_name(f"{scope['method']} {template}")
            attributes: dict[str, Any] = {"http.request.method": scope["method"], "http.route": template}
            attributes["gateway.request_id"] = request.request_id
            if request.model is not None:
                attributes.update({"gateway.model": request.model, "gateway.version": request.version})
                if request.arm is not None:
                    attributes["gateway.arm"] = request.arm
            services.tracing.end_request(request.span, status, server_error=status >= 500, attributes=attributes)

    async def _serve(self, scope: Scope, receive: Receive, send: Send, services: Services | None) -> None:
        target = oip_target = None
        if self.serves_predictions and scope["method"] == "POST":
            path = predict_endpoint.route_path(scope)
            openai_route = openai_serving.match(path)
            if openai_route is not None and services is not None:
                # The model is in the body: that lane reads it, then asks the gate itself.
                await openai_serving.serve(services, scope, receive, send, openai_route)
                return
            target = predict_endpoint.match(path)
            if target is None and path == predict_endpoint.INVOCATIONS:
                target = self.default_target  # unset: FastAPI's route says so (404)
            if target is None:
                target = oip_target = oip_rest.match(path)
            if target is not None and (request := context.current()) is not None and request.span is not None:
                request.route = _template(path, *target)  # the span's name; only a traced request needs it
        if services is None or not services.gate.active:
            # no keys and no model limits: nothing to check (or no lifespan: no services, and
            # every route but the health probes answers 500 without them)
            permit = NO_PERMIT
        else:
            # The one check, before either lane: a route that skips it cannot exist (access.py).
            model: str | None
            if target is not None:
                access, model = Access.PREDICT, target[0]
            else:
                requirement = self.access.classify(scope)
                access, model = requirement.access, requirement.model
            try:
                key, limits = await services.gate.check(access, model, scope["headers"])
                permit = await services.gate.acquire(key, limits) if limits else NO_PERMIT
            except GatewayError as exc:
                answer = http_errors.answer_for(exc, scope["method"], scope["path"], oip=http_errors.speaks_oip(scope))
                await http_errors.send_error(send, answer)
                return
        try:
            if oip_target is not None and services is not None:
                await oip_rest.serve(services, scope, receive, send, *oip_target)
            elif target is not None and services is not None:
                await predict_endpoint.serve(services, scope, receive, send, *target)
            else:
                await super().__call__(scope, receive, send)
        finally:
            permit.release()


def _template(path: str, name: str, version: str | None) -> str:
    """A predict path as its route's template (``/models/{name}/versions/{version}/predict``):
    what a span is named after, whatever the model."""
    parts = path.split("/")
    for index, part in enumerate(parts):
        if part == name:
            parts[index] = "{name}"
            break
    if version is not None:
        for index in range(1, len(parts)):
            if parts[index - 1] == "versions" and parts[index] == version:
                parts[index] = "{version}"
                break
    return "/".join(parts)


def _header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None


def app_factory() -> GatewayApp:
    """Settings from the environment; for ``uvicorn --factory gateway.app:app_factory``."""
    return create_app(GatewaySettings(), start_in_background=True)
