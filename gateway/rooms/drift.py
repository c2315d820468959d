"""The drift room: each served version's reference (the data it was trained on), and live
traffic compared with it (gateway.drift).

The reference: the sync leader computes a version's reference once and keeps it in the state
database (``registry_sync/drift/builder.py``, ``references.py``); every replica reads it from
there. The profile of the version's outputs is predicted here, through this process's own
inference path: the version leased from the model cache (loaded if it is not: as a warm-up is,
not as a request) and its runtime's predict run on the version's own executor, so a version
served by a sandboxed worker predicts in that worker. A process that serves no models predicts
nothing: its references say so and hold the inputs alone.

Live traffic: a serving process samples answered requests (GATEWAY_DRIFT_SAMPLE: a draw and an
append on the request path), bins them on the version's reference each second in a thread,
keeps a sliding window per version, and publishes it to the state database; every process (a
sync-only one too: the leader writes the events and the write-back) reads the fleet's windows
and the references at GATEWAY_DRIFT_INTERVAL_SECONDS and judges them. Stopped before the state
database closes (what was sampled is binned, the last windows published).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd
from mlflow.tracking import MlflowClient
from mlflow.types.schema import ColSpec

from gateway.drift.baseline import Baselines
from gateway.drift.book import ReferenceBook
from gateway.drift.monitor import DriftMonitor
from gateway.drift.sampler import DriftSampler, Sampled
from gateway.drift.window import Windows
from gateway.observability.records.record import Exchange
from gateway.rooms.models import ModelsRoom
from gateway.rooms.observability import ObservabilityRoom
from gateway.rooms.state import StateRoom
from gateway.rooms.sync import SyncRoom
from gateway.routing.catalog import Resolved
from gateway.settings import GatewaySettings
from registry_sync.drift.builder import Predict, ReferenceBuilder, ReferenceLimits
from registry_sync.drift.references import ReferenceStore
from registry_sync.drift.verdict import Thresholds, VersionDrift, document_of, metrics_of
from registry_sync.drift.windows import WindowStore
from registry_sync.identity import VersionId

PROTOCOLS = ("mlflow", "oip")  # the bodies gateway.wire.drift_rows reads


def tabular_columns(metadata: object) -> list[str] | None:
    """A loaded version's signature's input column names, or None when it has no tabular one."""
    signature = getattr(metadata, "signature", None)
    inputs = signature.inputs if signature is not None else None
    specs = inputs.inputs if inputs is not None else []
    if not specs or not all(isinstance(spec, ColSpec) and spec.name for spec in specs):
        return None
    return [str(spec.name) for spec in specs]


@dataclass(eq=False)
class DriftRoom:
    references: ReferenceStore  # every version's reference, read by any process
    builder: ReferenceBuilder  # the leader's pass computing them
    monitor: DriftMonitor  # the fleet's figures, read and judged at an interval
    sampler: DriftSampler | None  # None: a process that serves no models, or GATEWAY_DRIFT_SAMPLE=0

    @classmethod
    def build(
        cls,
        settings: GatewaySettings,
        *,
        state: StateRoom,
        models: ModelsRoom,
        sync: SyncRoom,
        seen: ObservabilityRoom,
        actor: str,
    ) -> DriftRoom:
        references = ReferenceStore(state.engine)
        builder = _builder(settings, references, state=state, models=models, sync=sync, actor=actor)
        book = ReferenceBook(references)
        cache = models.cache

        def columns(version: VersionId) -> list[str] | None:
            loaded = cache.peek(version)
            return tabular_columns(loaded.metadata) if loaded is not None else None

        sampler: DriftSampler | None = None
        windows: Windows | None = None
        baselines: Baselines | None = None
        if settings.serves_models and settings.drift_sample > 0:
            windows = Windows(seconds=settings.drift_window_seconds, max_rows=settings.drift_window_rows)
            baselines = Baselines(rows=settings.drift_baseline_rows, columns=columns)
            sampler = DriftSampler(
                seen.metrics,
                book,
                windows,
                baselines,
                sample=settings.drift_sample,
                max_bytes=int(settings.drift_buffer_mb * 2**20),
            )
        thresholds = Thresholds(
            psi=settings.drift_psi_threshold,
            p_value=settings.drift_p_value,
            outlier_share=settings.drift_outlier_threshold,
            min_rows=settings.drift_min_rows,
        )
        poller = sync.poller
        states = state.catalog.state if settings.serves_models else state.store.version
        monitor = DriftMonitor(
            WindowStore(state.engine),
            book,
            state.store,
            seen.metrics,
            states=states,
            windows=windows,
            baselines=baselines,
            replica=state.lease.holder,
            interval_seconds=settings.drift_interval_seconds,
            thresholds=thresholds,
            leading=lambda: poller.leading,
            actor=actor,
        )
        return cls(references, builder, monitor, sampler)

    def offer(self, served: Resolved, exchange: Exchange, status: int) -> None:
        """An answered request, for the sampler: the draw first (most requests stop there), then
        an append; never raises."""
        sampler = self.sampler
        if sampler is None or not sampler.drawn() or status >= 400 or exchange.protocol not in PROTOCOLS:
            return
        sampler.append(
            Sampled(
                served.id,
                exchange.protocol,
                exchange.media_type,
                exchange.request,
                exchange.response,
                time.time(),
                exchange.answer_json,  # OIP's answer: made JSON off the path, once sampled
            )
        )

    def metrics(self, model: str, version: str) -> Mapping[str, float]:
        """The write-back's provider: a version's drift figures now (empty without a window)."""
        drift = self._latest(model, version)
        return metrics_of(drift) if drift is not None else {}

    def document(self, model: str, version: str) -> Mapping[str, object] | None:
        """The write-back's JSON artifact: a version's per-feature detail now."""
        drift = self._latest(model, version)
        if drift is None:
            return None
        reference = self.monitor.book.get(drift.id)
        return document_of(drift) | {
            "reference": {
                "source_kind": reference.source_kind if reference is not None else None,
                "source_uri": reference.source_uri if reference is not None else None,
                "weaker": reference.weaker if reference is not None else False,
            }
        }

    def _latest(self, model: str, version: str) -> VersionDrift | None:
        for identity, drift in self.monitor.latest.items():
            if identity.name == model and str(identity.version) == version:
                return drift
        return None

    def start(self) -> None:
        self.builder.start()  # computes references only while this process leads the sync
        self.monitor.start()
        if self.sampler is not None:
            self.sampler.start()

    async def stop(self) -> None:
        await self.builder.stop()
        if self.sampler is not None:
            await self.sampler.stop()
            await self.sampler.flush()
        await self.monitor.stop()


def _builder(
    settings: GatewaySettings,
    references: ReferenceStore,
    *,
    state: StateRoom,
    models: ModelsRoom,
    sync: SyncRoom,
    actor: str,
) -> ReferenceBuilder:
    predict: Predict | None = None
    if settings.serves_models:
        cache, executor = models.cache, models.executor

        async def predict_here(version: VersionId, frame: pd.DataFrame) -> object:
            lease = await cache.acquire(version, serving=False)
            try:
                model = lease.model
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(model.calls_on(executor), model.pyfunc.predict, frame)
            finally:
                lease.release()

        predict = predict_here
    poller = sync.poller
    builder = ReferenceBuilder(
        state.store,
        references,
        state.artifacts,
        MlflowClient(tracking_uri=state.reader.tracking_uri, registry_uri=state.reader.registry_uri),
        limits=ReferenceLimits(
            rows=settings.drift_reference_rows,
            max_bytes=int(settings.drift_reference_max_mb * 2**20),
            output_rows=settings.drift_output_rows,
            bins=settings.drift_bins,
            max_categories=settings.drift_max_categories,
            retry_seconds=settings.drift_retry_seconds,
        ),
        scratch=settings.artifact_cache_dir / "drift",
        interval_seconds=settings.drift_reference_interval_seconds,
        predict=predict,
        leading=lambda: poller.leading,
        loaded=models.cache.keys,
        actor=f"drift@{actor}",
    )
    return builder
