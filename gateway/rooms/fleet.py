"""The fleet room: this process as one of a fleet (gateway.fleet).

The fleet's tables, this process's membership in them (its heartbeat, holdings and history,
under the member id it campaigns for the sync lease with, so that the fleet view names the
leader), the warm rule it follows, and the drain SIGTERM begins. Started before the sync lease
is taken, so that the process is in the fleet view while it starts; stopped (reported stopped,
its replica's history kept) before the sync and the routing stop.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.dataplane.cache import ModelCache
from gateway.fleet.drain import Drain
from gateway.fleet.membership import Membership
from gateway.fleet.warming import WarmRule
from gateway.rooms.state import StateRoom
from gateway.settings import GatewaySettings
from registry_sync.fleet import DRAINING, FleetStore


@dataclass(eq=False)
class FleetRoom:
    fleet: FleetStore
    membership: Membership
    drain: Drain

    @classmethod
    def build(cls, settings: GatewaySettings, *, state: StateRoom, cache: ModelCache) -> FleetRoom:
        fleet = FleetStore(state.engine)
        membership = Membership(
            fleet,
            cache if settings.serves_models else None,
            member=state.lease.holder,
            replica=settings.replica,
            role=settings.role,
            heartbeat_seconds=settings.heartbeat_seconds,
            recent_seconds=settings.warm_recent_seconds,
            served_aliases=state.catalog.served_aliases,
        )
        # SIGTERM (gateway.fleet.drain): not ready from now on, and said so to the fleet.
        drain = Drain(settings.drain_seconds, on_drain=lambda: membership.set_state(DRAINING))
        return cls(fleet=fleet, membership=membership, drain=drain)

    async def start(self) -> None:
        await self.membership.report()  # in the fleet view while it starts
        self.membership.start()

    async def warm_rule(self, settings: GatewaySettings) -> WarmRule:
        """GATEWAY_WARM_START's rule; ``auto`` asks the fleet whether this process is alone."""
        others: list[str] = []
        if settings.warm_start == "auto" and settings.role == "all":
            others = await self.membership.other_replicas()
        return WarmRule.choose(
            settings.warm_start, role=settings.role, others=others, recent_seconds=settings.warm_recent_seconds
        )

    async def stop(self) -> None:
        await self.membership.stop()  # reported stopped; its replica's history stays
