"""The drift room: each served version's reference (the data it was trained on), and what
live traffic is compared with.

The sync leader computes a version's reference once and keeps it in the state database
(``registry_sync/drift/builder.py``, ``references.py``); every replica reads it from there. The
profile of the version's outputs is predicted here, through this process's own inference path:
the version leased from the model cache (loaded if it is not: as a warm-up is, not as a
request) and its runtime's predict run on the version's own executor, so a version served by a
sandboxed worker predicts in that worker. A process that serves no models predicts nothing: its
references say so and hold the inputs alone.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pandas as pd
from mlflow.tracking import MlflowClient

from gateway.rooms.models import ModelsRoom
from gateway.rooms.state import StateRoom
from gateway.rooms.sync import SyncRoom
from gateway.settings import GatewaySettings
from registry_sync.drift.builder import Predict, ReferenceBuilder, ReferenceLimits
from registry_sync.drift.references import ReferenceStore
from registry_sync.identity import VersionId


@dataclass(eq=False)
class DriftRoom:
    references: ReferenceStore  # every version's reference, read by any process
    builder: ReferenceBuilder  # the leader's pass computing them

    @classmethod
    def build(
        cls, settings: GatewaySettings, *, state: StateRoom, models: ModelsRoom, sync: SyncRoom, actor: str
    ) -> DriftRoom:
        references = ReferenceStore(state.engine)
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
        return cls(references, builder)

    def start(self) -> None:
        """Computes references only while this process leads the sync."""
        self.builder.start()

    async def stop(self) -> None:
        await self.builder.stop()
