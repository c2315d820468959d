"""The traffic room: canaries and shadows of the default route (gateway.routing).

The guard that compares each canary with its default version and takes its weight away, the
shadow queue that runs copies of default-route requests on shadow versions, this process's
counts published for ``/traffic``'s sum over replicas (under the member id it campaigns for
the sync lease with), and the report ``/traffic`` answers with. Started once the warm set is
warm; stopped after the reconciler and before the inference service closes (the shadows still
queued are not run, the guard's last rollbacks are written).
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.rooms.observability import ObservabilityRoom
from gateway.rooms.records import RecordsRoom
from gateway.rooms.routing import RoutingRoom
from gateway.rooms.state import StateRoom
from gateway.routing.counts import TrafficCounts
from gateway.routing.guard import Guard, GuardLimits
from gateway.routing.shadow import ShadowQueue
from gateway.routing.traffic_report import TrafficReport
from gateway.settings import GatewaySettings


@dataclass(eq=False)
class TrafficRoom:
    guard: Guard
    shadows: ShadowQueue
    counts: TrafficCounts
    report: TrafficReport

    @classmethod
    def build(
        cls,
        settings: GatewaySettings,
        *,
        state: StateRoom,
        routing: RoutingRoom,
        seen: ObservabilityRoom,
        records: RecordsRoom,
        actor: str,
    ) -> TrafficRoom:
        split, metrics = routing.split, seen.metrics
        limits = GuardLimits(
            max_error_rate=settings.canary_max_error_rate,
            max_latency_ratio=settings.canary_max_latency_ratio,
            min_latency_delta=settings.canary_min_latency_delta_ms / 1000,
            min_requests=settings.canary_min_requests,
            count_client_errors=settings.canary_count_client_errors,
        )
        guard = Guard(split, state.store, metrics, limits=limits, actor=f"gateway@{actor}")
        shadows = ShadowQueue(
            routing.inference,
            split,
            metrics,
            size=settings.shadow_queue_size,
            concurrency=settings.shadow_concurrency,
            tolerance=settings.shadow_tolerance,
            pause_after_failures=settings.shadow_pause_after_failures,
            records=records.records,
        )
        counts = TrafficCounts(
            state.catalog,
            guard,
            shadows,
            state.store,
            replica=state.lease.holder,
            interval_seconds=settings.follow_interval_seconds,
        )
        report = TrafficReport(state.catalog, split, guard, routing.inference, metrics, counts, state.store, shadows)
        return cls(guard=guard, shadows=shadows, counts=counts, report=report)

    def start(self) -> None:
        self.shadows.start()
        self.counts.start()

    async def stop(self) -> None:
        await self.counts.stop()
        await self.shadows.stop()
        await self.guard.settle()
