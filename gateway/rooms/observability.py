"""The observability room: this process's metrics and its tracer.

Built first (every other room counts or traces through it) and closed last, so that the spans
of the shutdown itself are still exported. What is written about each request (the access log,
inference records) is the records room's (``gateway.rooms.records``).
"""

from __future__ import annotations

from dataclasses import dataclass

import anyio.to_thread
import mlflow.tracing as mlflow_tracing

from gateway.metrics import GatewayMetrics
from gateway.observability.tracing import Tracing, tracing_for
from gateway.settings import GatewaySettings


@dataclass(eq=False)
class ObservabilityRoom:
    metrics: GatewayMetrics
    tracing: Tracing

    @classmethod
    def build(cls, settings: GatewaySettings) -> ObservabilityRoom:
        if not settings.mlflow_traces:
            mlflow_tracing.disable()  # GATEWAY_MLFLOW_TRACES: no trace per call to the registry's server
        metrics = GatewayMetrics()
        metrics.memory_budget.set(settings.max_memory_bytes)
        tracing = tracing_for(settings.tracing, spans=settings.tracing_spans)
        return cls(metrics=metrics, tracing=tracing)

    async def close(self) -> None:
        await anyio.to_thread.run_sync(self.tracing.close)  # exports the spans still buffered
