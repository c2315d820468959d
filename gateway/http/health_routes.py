"""Health and metrics: what every role answers, a sync-only process included.

Mounted before the model routes, so these are the handlers that answer ``/health/*`` and
``/metrics`` whatever the role.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from mlflow.version import VERSION as MLFLOW_VERSION

from gateway.admission.access import Access, requires
from gateway.errors import NotReady
from gateway.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from gateway.process import Services
from gateway.wire.api_schemas import Health, ReadyHealth

router = APIRouter()


@router.get("/health/live", response_model=Health, tags=["health"], summary="The process is up")
@requires(Access.PROBE)
async def liveness() -> Health:
    return Health(status="ok")


@router.get(
    "/health/ready",
    response_model=ReadyHealth,
    responses={503: {"model": ReadyHealth, "description": "Starting (the reason says what it waits for) or stopping"}},
    tags=["health"],
    summary="Ready to serve: started, and every warm alias loaded and warmed here",
)
@requires(Access.PROBE)
async def readiness(request: Request) -> Response:
    services: Services | None = getattr(request.app.state, "services", None)
    if services is None:
        return Response(Health(status="starting").model_dump_json(), status_code=503, media_type="application/json")
    state = await services.readiness()
    stopping = services.drain.draining or state.reason == "shutting down"
    health = ReadyHealth(
        status="ok" if state.ready else "stopping" if stopping else "starting",
        reason=state.reason,
        role=state.role,
        leader=state.leader,
        registry=services.inventory.source.uri,
        replica=services.settings.replica,
    )
    if services.serves_models:
        health.loaded_models = len(services.cache.keys())
        health.loaded_bytes = services.cache.loaded_bytes
        health.worker_processes, health.worker_bytes = services.worker_memory()
        health.sandbox = services.sandbox_summary()
        health.registered_models = services.inventory.known_models()
        if state.ready:  # an empty registry is still ready (it may be new), but says so
            health.note = await services.inventory.empty_note()
    return Response(health.model_dump_json(), status_code=200 if state.ready else 503, media_type="application/json")


@router.get("/metrics", tags=["health"], response_class=Response, summary="Prometheus metrics")
@requires(Access.PROBE)
async def prometheus(request: Request) -> Response:
    services: Services = request.app.state.services
    return Response(services.metrics.render(), media_type=METRICS_CONTENT_TYPE)


# mlflow models serve's own probes, for its clients and SageMaker-style callers: the same paths
# and bodies ("\n" on 200), answered from the gateway's readiness.


@router.get(
    "/ping", tags=["health"], response_class=Response, summary="The probe of mlflow models serve: 200 when ready"
)
@router.get("/health", tags=["health"], response_class=Response, summary="The same as /ping, as in MLflow")
@requires(Access.PROBE)
async def ping(request: Request) -> Response:
    services: Services | None = getattr(request.app.state, "services", None)
    state = await services.readiness() if services is not None else None
    if state is None or not state.ready:
        reason = state.reason if state is not None else "starting"
        raise NotReady(reason or "starting")
    return Response("\n", media_type="application/json")


@router.get(
    "/version", tags=["health"], response_class=Response, summary="MLflow's version, as mlflow models serve answers it"
)
@requires(Access.PROBE)
async def mlflow_version() -> Response:
    return Response(MLFLOW_VERSION, media_type="application/json")
