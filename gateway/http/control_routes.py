"""HTTP for the control plane: MLflow's webhooks, a manual sync, the event history."""

from __future__ import annotations

import hmac
from datetime import timedelta
from typing import Annotated

import anyio.to_thread
import orjson
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import Response

from gateway.admission.access import Access, requires
from gateway.fleet.catchup import Behind, wait_for_fleet
from gateway.http.errors import error_response
from gateway.http.request_body import read_body
from gateway.process import Services
from gateway.wire.api_schemas import ErrorBody, EventBody, EventList, SyncBody, utc_iso
from registry_sync.webhooks import TOLERANCE_SECONDS, WebhookMalformed, WebhookRejected, verify

router = APIRouter()

_MAX_WEBHOOK_BYTES = 1024 * 1024


@router.post(
    "/webhooks/mlflow",
    status_code=202,
    tags=["control"],
    summary="MLflow model-registry webhook: sync the named model now",
    responses={
        202: {"description": "Accepted; the model syncs in the background (here, or by the sync leader)"},
        400: {"model": ErrorBody},
        401: {"model": ErrorBody},
        404: {"model": ErrorBody, "description": "GATEWAY_WEBHOOK_SECRET is not set"},
        409: {"model": ErrorBody, "description": "A delivery id seen before (a replay)"},
    },
)
@requires(Access.WEBHOOK)
async def mlflow_webhook(request: Request) -> Response:
    services: Services = request.app.state.services
    secret = services.settings.webhook_secret
    if secret is None:
        return error_response(404, "ENDPOINT_NOT_FOUND", "Webhooks are off: set GATEWAY_WEBHOOK_SECRET to the secret")
    body = await read_body(request.receive, request.headers.get("content-length"), _MAX_WEBHOOK_BYTES)
    try:
        delivery = verify(secret.get_secret_value(), request.headers, body)
    except WebhookRejected as exc:
        return error_response(401, "UNAUTHENTICATED", f"Webhook refused: {exc}")
    except WebhookMalformed as exc:
        return error_response(400, "BAD_REQUEST", f"Webhook payload not understood: {exc}")
    fresh = await anyio.to_thread.run_sync(
        lambda: services.store.take_delivery(delivery.delivery_id, keep=timedelta(seconds=2 * TOLERANCE_SECONDS))
    )
    if not fresh:
        return error_response(409, "RESOURCE_ALREADY_EXISTS", f"Delivery {delivery.delivery_id} was already taken")
    name = delivery.model_name
    if name is not None and delivery.entity in (
        "registered_model",
        "model_version",
        "model_version_tag",
        "model_version_alias",
    ):
        # the leader syncs it: this process if it leads, else through the state database
        await services.poller.hint([name], reason=f"webhook {delivery.entity}.{delivery.action}")
    body_out = {"accepted": True, "delivery_id": delivery.delivery_id, "model": name}
    return Response(orjson.dumps(body_out), status_code=202, media_type="application/json")


@router.post(
    "/admin/sync",
    response_model=SyncBody,
    tags=["control"],
    summary="Sync with the registry now (for CI pipelines); bearer GATEWAY_ADMIN_TOKEN, or a key with the admin scope",
    responses={
        202: {"description": "No sync leader finished the pass in time; it stays queued for the leader"},
        401: {"model": ErrorBody},
        403: {"model": ErrorBody, "description": "GATEWAY_AUTH=keys and the key lacks the admin scope"},
        404: {"model": ErrorBody, "description": "GATEWAY_AUTH=off and GATEWAY_ADMIN_TOKEN not set"},
        503: {"model": ErrorBody, "description": "The registry could not be read"},
    },
)
@requires(Access.ADMIN)
async def admin_sync(
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
    model: Annotated[list[str] | None, Query(description="Only these models (repeatable)")] = None,
    wait: Annotated[
        bool,
        Query(
            description="Also wait for the warm swaps the sync started: here, and on every replica of the "
            "fleet that holds a synced model (their reports in the state database; see fleet_timeout)"
        ),
    ] = True,
    fleet_timeout: Annotated[
        float,
        Query(
            ge=0,
            le=600,
            description="At most this many seconds waiting for the other replicas (those still behind "
            "are named in fleet_behind); 0: only this process's swaps",
        ),
    ] = 30.0,
    verify: Annotated[
        bool,
        Query(
            description="Also check now the bytes of every served version (routed or loaded) against its pin: "
            "one LIST each in direct S3, else a download each"
        ),
    ] = False,
) -> Response:
    services: Services = request.app.state.services
    token = services.settings.admin_token
    if services.settings.auth == "off":  # with keys, the gate let only a key with the admin scope in
        if token is None:
            return error_response(
                404, "ENDPOINT_NOT_FOUND", "Admin endpoints are off: set GATEWAY_ADMIN_TOKEN (or GATEWAY_AUTH=keys)"
            )
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), token.get_secret_value().encode()):
            return error_response(401, "UNAUTHENTICATED", "Send 'Authorization: Bearer <GATEWAY_ADMIN_TOKEN>'")
    # on any replica: the leader runs the pass (here, or through the state database)
    timeout = services.settings.registry_timeout_seconds * 3
    report = await services.poller.run(model, reason="admin", timeout=timeout, verify=verify)
    if report is None:
        body = {
            "accepted": True,
            "detail": f"no sync leader finished the pass within {timeout:g} s; it runs when one does",
        }
        return Response(orjson.dumps(body), status_code=202, media_type="application/json")
    if not report.ok:
        return error_response(503, "TEMPORARILY_UNAVAILABLE", f"Sync failed: {report.error}", retry_after=5)
    synced = SyncBody.model_validate(report, from_attributes=True)
    if wait and services.serves_models:
        await services.catalog.refresh()
        await services.reconciler.reconcile(wait=True, retry_now=True)
        await services.catalog.refresh()  # what the swaps pinned or refused, in the next reads
    if wait and fleet_timeout > 0:
        synced.fleet_behind = [b.text() for b in await _fleet_catch_up(services, model, fleet_timeout)]
    return Response(synced.model_dump_json(), media_type="application/json")


async def _fleet_catch_up(services: Services, models: list[str] | None, timeout: float) -> list[Behind]:
    """Wait for the other replicas to serve the synced models' warm aliases at their targets."""
    catalog = services.catalog
    await catalog.refresh()
    routes = []
    for route in catalog.warm_routes():
        state = catalog.state(route.name, route.version)
        if (models is None or route.name in models) and state is not None and state.ready and not state.refused_reason:
            routes.append(route)
    if not routes:
        return []
    return await wait_for_fleet(
        services.fleet,
        routes,
        quiet_after=services.membership.quiet_after_seconds,
        exclude=services.membership.member,
        timeout=timeout,
    )


@router.get("/events", response_model=EventList, tags=["control"], summary="Recent history, newest first")
@requires(Access.READ)
async def events(
    request: Request,
    model: Annotated[str | None, Query(description="Only this model")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    # an event id: within the database's 64-bit integers (past them sqlite raised, a 500)
    before: Annotated[
        int | None, Query(ge=1, le=2**63 - 1, description="Only events with a smaller id (paging)")
    ] = None,
) -> EventList:
    services: Services = request.app.state.services
    rows = await anyio.to_thread.run_sync(lambda: services.store.events(name=model, limit=limit, before=before))
    return EventList(
        events=[
            EventBody(
                id=e.id,
                at=utc_iso(e.at),
                model=e.name,
                version=e.version,
                alias=e.alias,
                kind=e.kind,
                reason=e.reason,
                actor=e.actor,
            )
            for e in rows
        ]
    )
