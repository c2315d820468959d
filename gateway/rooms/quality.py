"""The quality room: ground truth and live quality (gateway.quality).

The answers kept for labels (a sampled share of one-row MLflow answers, written to the state
database off the request path), ``POST /feedback``'s service (labels joined to those answers,
in the state database before the answer, and on to the inference tables when they are on),
and the monitor that reads each version's and arm's quality at an interval, for the metrics,
``/status`` and the guard. Started with the traffic room; stopped before the state database
closes (the answers still queued are written).
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.observability.records.record import LabelRecord
from gateway.quality.capture import Answered, PredictionKeeper, keeper_for
from gateway.quality.feedback import FeedbackService, LabelSink
from gateway.quality.monitor import QualityMonitor
from gateway.rooms.models import ModelsRoom
from gateway.rooms.observability import ObservabilityRoom
from gateway.rooms.records import RecordsRoom
from gateway.rooms.routing import RoutingRoom
from gateway.rooms.state import StateRoom
from gateway.rooms.traffic import TrafficRoom
from gateway.settings import GatewaySettings
from registry_sync.feedback import FeedbackStore


@dataclass(eq=False)
class QualityRoom:
    feedback: FeedbackService  # POST /feedback
    monitor: QualityMonitor  # live quality per version and arm, read at an interval
    keeper: PredictionKeeper | None  # answers kept for labels; None: GATEWAY_FEEDBACK_SAMPLE=0

    @classmethod
    def build(
        cls,
        settings: GatewaySettings,
        *,
        state: StateRoom,
        models: ModelsRoom,
        routing: RoutingRoom,
        traffic: TrafficRoom,
        records: RecordsRoom,
        seen: ObservabilityRoom,
    ) -> QualityRoom:
        store, metrics = FeedbackStore(state.engine), seen.metrics
        monitor = QualityMonitor.of(
            settings, store, state.catalog, routing.inference, routing.split, traffic.guard, metrics
        )
        sinks: list[LabelSink] = [sink for sink in (records.records, records.traces) if sink is not None]
        keeper = keeper_for(settings, store, metrics, models.cache.peek)
        feedback = FeedbackService(
            store,
            metrics,
            max_items=settings.feedback_max_items,
            tables=_LabelSinks(sinks),
            written=keeper.flush if keeper is not None else None,
        )
        return cls(feedback, monitor, keeper)

    def keep(self, answered: Answered) -> None:
        if self.keeper is not None:
            self.keeper.offer(answered)

    def start(self) -> None:
        self.monitor.start()
        if self.keeper is not None:
            self.keeper.start()

    async def stop(self) -> None:
        await self.monitor.stop()
        if self.keeper is not None:
            await self.keeper.stop()  # what waits is written before the engine goes


@dataclass(frozen=True, slots=True)
class _LabelSinks:
    """Accepted labels to the inference tables and to the traces' expectations, each that is on."""

    sinks: list[LabelSink]

    def offer_labels(self, labels: list[LabelRecord]) -> int:
        return max((sink.offer_labels(labels) for sink in self.sinks), default=0)
