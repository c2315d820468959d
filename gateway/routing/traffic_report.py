"""What ``GET /models/{name}/traffic`` says: a model's split as configured, as served here,
and as every replica last published its counts (gateway.routing.counts)."""

from __future__ import annotations

import logging
import time

import anyio.to_thread

from gateway.dataplane.predictor import InferenceService
from gateway.errors import GatewayError, ModelNotFound
from gateway.metrics import GatewayMetrics
from gateway.routing.catalog import Catalog
from gateway.routing.counts import TrafficCounts
from gateway.routing.guard import Guard
from gateway.routing.shadow import ShadowQueue
from gateway.routing.traffic import TrafficSplit
from gateway.wire.api_schemas import ArmCounts, ArmDetail, ArmStats, ArmTotal, ReplicaTraffic, TrafficDetail, utc_iso
from registry_sync.errors import RegistryError
from registry_sync.repository import ArmCount, StateStore

log = logging.getLogger(__name__)


class TrafficReport:
    def __init__(
        self,
        catalog: Catalog,
        split: TrafficSplit,
        guard: Guard,
        inference: InferenceService,
        metrics: GatewayMetrics,
        counts: TrafficCounts,
        store: StateStore,
        shadows: ShadowQueue,
    ) -> None:
        self._catalog = catalog
        self._split = split
        self._guard = guard
        self._inference = inference
        self._metrics = metrics
        self._counts = counts
        self._store = store
        self._shadows = shadows

    async def describe(self, name: str) -> TrafficDetail:
        if not self._catalog.knows(name):
            raise ModelNotFound(name)
        try:
            default: int | None = (await self._inference.default_version(name, take_over=False)).version
        except GatewayError:
            default = None
        traffic = self._catalog.split(name)
        arms = []
        for arm in sorted(traffic.arms.values(), key=lambda a: a.version) if traffic is not None else []:
            state = self._catalog.state(name, arm.version)
            warm = state is not None and self._split.ready(state.id)
            rolled_back = arm.rolled_back or ("by the guard here" if self._split.weight(name, arm) == 0 else None)
            arms.append(
                ArmDetail(
                    version=arm.version,
                    weight=arm.weight,
                    shadow=arm.shadow,
                    served_weight=self._split.weight(name, arm) if warm else 0.0,
                    warm=warm,
                    rolled_back=rolled_back if arm.weight > 0 else None,
                    shadow_paused_s=self._shadows.paused_for(state.id) if state is not None and arm.shadow else None,
                )
            )
        stats = []
        for (arm_name, version), window in sorted(self._guard.windows(name).items()):
            p50, p99 = window.quantile(0.5), window.quantile(0.99)
            stats.append(
                ArmStats(
                    arm=arm_name,
                    version=version,
                    requests=window.requests,
                    errors=window.errors,
                    client_errors=window.client_errors,
                    window=len(window.answers),
                    error_rate=window.error_rate,
                    p50_ms=p50 * 1000 if p50 is not None else None,
                    p99_ms=p99 * 1000 if p99 is not None else None,
                )
            )
        replicas, note = await self._replicas(name)
        sample = self._metrics.registry.get_sample_value
        limits = self._guard.limits
        return TrafficDetail(
            name=name,
            default_version=default,
            arms=arms,
            stats=stats,
            shadow_agreement={
                result: sample("gateway_shadow_agreement_total", {"model": name, "result": result}) or 0.0
                for result in ("agree", "differ")
            },
            shadow_dropped=int(sample("gateway_shadow_dropped_total", {"model": name}) or 0),
            guard={
                "max_error_rate": limits.max_error_rate,
                "max_latency_ratio": limits.max_latency_ratio,
                "min_requests": limits.min_requests,
            },
            replica=self._counts.replica,
            replicas=replicas,
            total=_total(replicas),
            replicas_note=note,
        )

    async def _replicas(self, name: str) -> tuple[list[ReplicaTraffic], str | None]:
        """This replica's counts now, then the others' as they last published them."""
        mine = self._counts.counts(name)
        replicas = []
        if mine:
            replicas.append(
                ReplicaTraffic(
                    replica=self._counts.replica,
                    this_replica=True,
                    seen_at=utc_iso(time.time()),
                    age_seconds=0.0,
                    stale=False,
                    counts=[_counts(c) for c in mine],
                )
            )
        try:
            published = await anyio.to_thread.run_sync(lambda: self._store.replica_counts(name))
        except RegistryError as exc:
            log.warning("/traffic of %s shows this replica only: %s", name, exc)
            return replicas, "the state database is unavailable: this replica's counts only"
        stale_after = self._counts.stale_after_seconds
        for other in published:
            if other.replica == self._counts.replica:
                continue  # live above
            replicas.append(
                ReplicaTraffic(
                    replica=other.replica,
                    this_replica=False,
                    seen_at=utc_iso(other.seen_at),
                    age_seconds=round(other.age_seconds, 3),
                    stale=other.age_seconds > stale_after,
                    counts=[_counts(c) for c in other.counts],
                )
            )
        return replicas, None


def _counts(count: ArmCount) -> ArmCounts:
    return ArmCounts(
        arm=count.arm,
        version=count.version,
        requests=count.requests,
        errors=count.errors,
        agreed=count.agreed,
        differed=count.differed,
        dropped=count.dropped,
    )


def _total(replicas: list[ReplicaTraffic]) -> list[ArmTotal]:
    sums: dict[tuple[str, int], dict[str, int]] = {}
    for replica in replicas:
        if replica.stale:
            continue
        for count in replica.counts:
            into = sums.setdefault((count.arm, count.version), dict.fromkeys(_SUMMED, 0))
            for key in _SUMMED:
                into[key] += getattr(count, key)
    return [
        ArmTotal(arm=arm, version=version, error_rate=n["errors"] / n["requests"] if n["requests"] else None, **n)
        for (arm, version), n in sorted(sums.items())
    ]


_SUMMED = ("requests", "errors", "agreed", "differed", "dropped")
