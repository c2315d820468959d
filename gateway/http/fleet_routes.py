"""``GET /fleet``: every replica on this state database, what each holds and whether it is alive."""

from __future__ import annotations

import anyio.to_thread
from fastapi import APIRouter, Request

from gateway.admission.access import Access, requires
from gateway.fleet.view import read_fleet
from gateway.process import Services
from gateway.wire.api_schemas import ErrorBody, FleetView

router = APIRouter()


@router.get(
    "/fleet",
    response_model=FleetView,
    responses={503: {"model": ErrorBody, "description": "The state database cannot be read"}},
    tags=["control"],
    summary="The fleet: each replica's processes, state, memory and models, from their last heartbeats",
)
@requires(Access.READ)
async def fleet(request: Request) -> FleetView:
    services: Services = request.app.state.services
    return await anyio.to_thread.run_sync(lambda: read_fleet(services.fleet, services.lease, services.membership))
