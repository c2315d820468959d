"""The jobs room: the job queue on the state database, the runner that claims and scores chunks
in this process, and the service the job routes call (gateway.jobs).

Every process accepts jobs and keeps the queue tidy (retention, the ``gateway_jobs`` gauges);
only a process that loads models runs chunks (a ``--role sync`` process loads none), and only
while GATEWAY_JOBS_ENABLED. A serving process leaves them to ``--role jobs`` processes while one
reports to the state database (GATEWAY_JOBS_ON_SERVING). Started once the process is serving;
stopped before the inference service's queues close, giving the chunks it held back to the
queue.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.fleet.membership import QUIET_BEATS
from gateway.jobs.role import JOBS
from gateway.jobs.runner import JobRunner
from gateway.jobs.service import JobService
from gateway.rooms.models import ModelsRoom
from gateway.rooms.observability import ObservabilityRoom
from gateway.rooms.routing import RoutingRoom
from gateway.rooms.state import StateRoom
from gateway.settings import GatewaySettings
from registry_sync.fleet import FleetStore
from registry_sync.jobs.store import JobStore


@dataclass(eq=False)
class JobsRoom:
    store: JobStore
    runner: JobRunner
    service: JobService
    enabled: bool

    @classmethod
    def build(
        cls,
        settings: GatewaySettings,
        *,
        state: StateRoom,
        models: ModelsRoom,
        routing: RoutingRoom,
        seen: ObservabilityRoom,
        actor: str,
    ) -> JobsRoom:
        store = JobStore(
            state.engine,
            lease_seconds=settings.jobs_lease_seconds,
            retention_seconds=settings.jobs_retention_hours * 3600,
            max_attempts=settings.jobs_max_attempts,
        )
        jobs_role = settings.role == JOBS
        leave_to_jobs = None
        if not jobs_role and settings.jobs_on_serving == "auto":
            fleet, within = FleetStore(state.engine), QUIET_BEATS * settings.heartbeat_seconds
            leave_to_jobs = lambda: fleet.jobs_processes(within=within) > 0  # noqa: E731
        runner = JobRunner(
            store,
            routing.inference,
            state.catalog,
            seen.metrics,
            settings,
            held=models.cache.keys,
            runs_chunks=settings.serves_models
            and settings.jobs_enabled
            and (jobs_role or settings.jobs_on_serving != "never"),
            whole_chunks=jobs_role,
            leave_to_jobs=leave_to_jobs,
        )
        return cls(store, runner, JobService(store, routing.inference, runner, settings), settings.jobs_enabled)

    def start(self) -> None:
        if self.enabled:
            self.runner.start()

    async def stop(self) -> None:
        await self.runner.stop()
