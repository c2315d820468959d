"""The fleet as ``GET /fleet``, ``/status`` and ``registry-gateway status`` show it: every
process that reports to the state database, grouped by replica, and which replica holds which
model. Read on request, from the processes' last reports (gateway.fleet.membership)."""

from __future__ import annotations

from sqlalchemy.exc import SQLAlchemyError

from gateway.fleet.membership import Membership
from gateway.wire.api_schemas import FleetHolding, FleetModel, FleetProcess, FleetReplica, FleetView, utc_iso
from registry_sync.fleet import DRAINING, READY, STARTING, STOPPED, FleetStore, Member
from registry_sync.lease import Lease

_STATE_ORDER = (READY, DRAINING, STARTING, STOPPED)  # a replica shows the most serving of its processes


def read_fleet(store: FleetStore, lease: Lease, membership: Membership) -> FleetView:
    """The fleet now, from the state database (blocking: call it in a thread). StateUnavailable
    when the members cannot be read; the leader unknown when only the lease cannot."""
    members = store.members()
    try:
        holder = lease.current()
    except SQLAlchemyError:
        holder = None
    return fleet_view(members, leader=holder[0] if holder is not None else None, membership=membership)


def fleet_view(members: list[Member], *, leader: str | None, membership: Membership) -> FleetView:
    quiet_after = membership.quiet_after_seconds
    by_replica: dict[str, list[Member]] = {}
    for member in members:
        by_replica.setdefault(member.replica, []).append(member)
    held: dict[str, dict[str, set[int]]] = {}
    replicas = []
    for replica, processes in sorted(by_replica.items()):
        live = [m for m in processes if m.state != STOPPED and m.age_seconds <= quiet_after]
        for member in live:
            for holding in member.holdings:
                held.setdefault(holding.name, {}).setdefault(replica, set()).add(holding.version)
        if live:
            state = min((m.state for m in live), key=lambda s: _STATE_ORDER.index(s) if s in _STATE_ORDER else 9)
        elif any(m.state != STOPPED for m in processes):
            state = "quiet"
        else:
            state = STOPPED
        replicas.append(
            FleetReplica(
                replica=replica,
                state=state,
                loaded_bytes=sum(m.loaded_bytes for m in live),
                budget_bytes=sum(m.budget_bytes for m in live),
                models=sorted({h.name for m in live for h in m.holdings}),
                processes=[_process(m, leader=leader, quiet_after=quiet_after) for m in processes],
            )
        )
    models = [
        FleetModel(name=name, replicas={replica: sorted(versions) for replica, versions in sorted(where.items())})
        for name, where in sorted(held.items())
    ]
    return FleetView(
        this_replica=membership.replica,
        this_member=membership.member,
        quiet_after_seconds=quiet_after,
        replicas=replicas,
        models=models,
    )


def _process(member: Member, *, leader: str | None, quiet_after: float) -> FleetProcess:
    return FleetProcess(
        member=member.member,
        role=member.role,
        state=member.state,
        leader=member.member == leader,
        quiet=member.state != STOPPED and member.age_seconds > quiet_after,
        seen_seconds_ago=round(member.age_seconds, 1),
        started_at=utc_iso(member.started_at),
        warm_rule=member.warm_rule,
        loaded_bytes=member.loaded_bytes,
        budget_bytes=member.budget_bytes,
        max_models=member.max_models,
        holdings=[
            FleetHolding(
                name=h.name,
                version=h.version,
                size_bytes=h.size_bytes,
                last_served=utc_iso(h.last_served) if h.last_served is not None else None,
                in_use=h.in_use,
            )
            for h in sorted(member.holdings, key=lambda h: (h.name, h.version))
        ],
    )
