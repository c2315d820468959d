"""``GET /fleet``: every replica on this state database, what each holds and whether it is alive."""

from __future__ import annotations

import anyio.to_thread
from fastapi import APIRouter, Request
from sqlalchemy.exc import SQLAlchemyError

from gateway.admission.access import Access, requires
from gateway.fleet.view import fleet_view
from gateway.process import Services
from gateway.wire.api_schemas import ErrorBody, FleetView
from registry_sync.fleet import Member

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

    def read() -> tuple[list[Member], str | None]:
        members = services.fleet.members()  # StateUnavailable: 503
        try:
            holder = services.lease.current()
        except SQLAlchemyError:  # the members were just read: show them, leader unknown
            holder = None
        return members, holder[0] if holder is not None else None

    members, leader = await anyio.to_thread.run_sync(read)
    return fleet_view(members, leader=leader, membership=services.membership)
