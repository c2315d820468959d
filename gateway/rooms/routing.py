"""The routing room: which version answers a request, and the service that has it answer.

The traffic split over the catalog, the reconciler that follows the state database and swaps
warm aliases (reporting what it holds to the fleet's membership), the inference service (the
data plane's door: resolve, lease, queue), what ``/models`` shows, and the primer that imports
the registry's flavors' libraries once the process is ready. Stopped after the sync (nothing
pokes the reconciler then) and before the traffic room settles the canaries.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.dataplane.prediction_cache import make_cache
from gateway.dataplane.predictor import BatchPolicy, InferenceService
from gateway.dataplane.priming import Primer
from gateway.rooms.fleet import FleetRoom
from gateway.rooms.models import ModelsRoom
from gateway.rooms.observability import ObservabilityRoom
from gateway.rooms.runtimes import RuntimesRoom
from gateway.rooms.state import StateRoom
from gateway.routing.catalog import Catalog
from gateway.routing.inventory import Inventory
from gateway.routing.reconciler import Reconciler
from gateway.routing.traffic import TrafficSplit
from gateway.settings import GatewaySettings


@dataclass(eq=False)
class RoutingRoom:
    split: TrafficSplit
    reconciler: Reconciler
    inference: InferenceService
    inventory: Inventory
    primer: Primer  # the registry's libraries, imported once ready (serving processes)

    @classmethod
    def build(
        cls,
        settings: GatewaySettings,
        *,
        state: StateRoom,
        runtimes: RuntimesRoom,
        models: ModelsRoom,
        fleet: FleetRoom,
        seen: ObservabilityRoom,
        actor: str,
    ) -> RoutingRoom:
        catalog, cache = state.catalog, models.cache
        split = TrafficSplit(catalog, cache)
        reconciler = Reconciler(
            catalog,
            cache,
            state.store,
            split=split,
            executor=models.executor,
            metrics=seen.metrics,
            follow_interval_seconds=settings.follow_interval_seconds,
            actor=f"gateway@{actor}",
            tracing=seen.tracing,
            membership=fleet.membership,
            load_budget=models.load_budget,
        )
        inference = InferenceService(
            catalog,
            cache,
            default_alias=settings.default_alias,
            predict_timeout_seconds=settings.predict_timeout_seconds,
            executor=models.executor,
            metrics=seen.metrics,
            batching=BatchPolicy(
                max_batch=settings.batch_max_size,
                max_wait=settings.batch_max_wait_ms / 1000,
                max_queue=settings.max_queue,
                workers=settings.inference_threads,
                inline_cpu=settings.inline_predict_ms / 1000,
            ),
            answers=make_cache(
                settings.prediction_cache,
                max_bytes=int(settings.prediction_cache_max_mb * 2**20),
                ttl_seconds=settings.prediction_cache_ttl_seconds,
                metrics=seen.metrics,
            ),
            load_budget=models.load_budget,
            split=split,
            tracing=seen.tracing,
        )
        inventory = Inventory(
            catalog,
            cache,
            state.artifacts,
            inference,
            source=state.source,
            sync_status=state.store.sync_status,
            placements=runtimes.placer.placement,
            alias_failure=reconciler.failing,
            refused_here=models.loader.refused_here,
        )
        primer = Primer(lambda: priming_versions(catalog, settings.default_alias), inventory.mlmodel)
        return cls(split=split, reconciler=reconciler, inference=inference, inventory=inventory, primer=primer)

    async def stop(self) -> None:
        await self.reconciler.stop()

    async def close(self) -> None:
        await self.inference.close()  # after the traffic room: shadows run through it


def priming_versions(catalog: Catalog, default_alias: str) -> list[tuple[str, int]]:
    """What the primer reads the flavors of: each model's default version (the default alias,
    else latest) and each warm alias's target."""
    chosen: list[tuple[str, int]] = []
    for name in catalog.model_names():
        model = catalog.model(name)
        version = model.registry_aliases.get(default_alias, model.latest_ready)
        wanted = [version] + [
            model.registry_aliases[a] for a in sorted(catalog.warm_aliases & set(model.registry_aliases))
        ]
        chosen += [(name, v) for v in dict.fromkeys(wanted) if v is not None and v in model.versions]
    return chosen
