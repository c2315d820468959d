"""What ``GET /models/{name}/traffic`` says: a model's split as configured and as served here."""

from __future__ import annotations

from gateway.dataplane.predictor import InferenceService
from gateway.errors import GatewayError, ModelNotFound
from gateway.http.schemas import ArmDetail, ArmStats, TrafficDetail
from gateway.metrics import GatewayMetrics
from gateway.routing.catalog import Catalog
from gateway.routing.guard import Guard
from gateway.routing.traffic import TrafficSplit


class TrafficReport:
    def __init__(
        self,
        catalog: Catalog,
        split: TrafficSplit,
        guard: Guard,
        inference: InferenceService,
        metrics: GatewayMetrics,
    ) -> None:
        self._catalog = catalog
        self._split = split
        self._guard = guard
        self._inference = inference
        self._metrics = metrics

    async def describe(self, name: str) -> TrafficDetail:
        if not self._catalog.knows(name):
            raise ModelNotFound(name)
        try:
            default: int | None = (await self._inference.default_version(name)).version
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
                    window=len(window.answers),
                    error_rate=window.error_rate,
                    p50_ms=p50 * 1000 if p50 is not None else None,
                    p99_ms=p99 * 1000 if p99 is not None else None,
                )
            )
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
        )
