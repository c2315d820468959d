"""The write-back room: how each version does in production, written back to MLflow.

Every serving process publishes its per-version figures (requests, 5xx answers, latency
buckets: summable over the fleet) to the state database at the follow interval; the sync
leader sums them, adds each version's live quality (the labels' window), and logs them to
MLflow at ``GATEWAY_MLFLOW_WRITEBACK_SECONDS``, with each version's drift figures (``gateway.drift``:
metrics, and the per-feature detail as the run's JSON artifact ``gateway/drift.json``): metrics
on the version's LoggedModel (a run of its own for a version without one) and a
``gateway.production`` version tag. Never on the
request path; MLflow down costs a warning and the next pass writes what was missed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from mlflow.tracking import MlflowClient

from gateway.fleet.figures import FiguresPublisher
from gateway.rooms.drift import DriftRoom
from gateway.rooms.observability import ObservabilityRoom
from gateway.rooms.state import StateRoom
from gateway.rooms.sync import SyncRoom
from gateway.settings import GatewaySettings
from registry_sync.feedback import live_quality
from registry_sync.figures import FiguresStore
from registry_sync.writeback import OperationalFigures, Writeback
from registry_sync.writeback_marks import WritebackMarks

DRIFT_ARTIFACT = "gateway/drift.json"  # the per-feature detail, on the version's write-back run


@dataclass(eq=False)
class WritebackRoom:
    figures: FiguresPublisher  # this process's per-version figures, for the fleet's sum
    writeback: Writeback  # the leader's production figures to MLflow

    @classmethod
    def build(
        cls,
        settings: GatewaySettings,
        *,
        state: StateRoom,
        sync: SyncRoom,
        seen: ObservabilityRoom,
        drift: DriftRoom,
    ) -> WritebackRoom:
        store = FiguresStore(state.engine)
        engine, window = state.engine, settings.quality_window

        def quality(model: str, version: str) -> Mapping[str, float]:
            figures = live_quality(engine, model, version, window=window)
            return {**figures.metrics, "labels": float(figures.labels)} if figures.labels else {}

        poller = sync.poller
        writeback = Writeback(
            MlflowClient(tracking_uri=state.reader.tracking_uri, registry_uri=state.reader.registry_uri),
            state.store,
            OperationalFigures(store),
            marks=WritebackMarks(state.engine),
            providers=[quality, drift.metrics],
            documents=[(DRIFT_ARTIFACT, drift.document)],
            experiment=settings.mlflow_writeback_experiment,
            interval_seconds=settings.mlflow_writeback_seconds,
            leading=lambda: poller.leading,
            on_pass=seen.metrics.writeback_finished,
        )
        publisher = FiguresPublisher(
            seen.metrics, store, replica=state.lease.holder, interval_seconds=settings.follow_interval_seconds
        )
        return cls(publisher, writeback)

    def start_publishing(self) -> None:
        """A serving process's figures, from when it takes traffic."""
        self.figures.start()

    def start_writing(self) -> None:
        """Writes only while this process leads the sync."""
        self.writeback.start()

    async def stop(self) -> None:
        await self.writeback.stop()
        await self.figures.stop()
