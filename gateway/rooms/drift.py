"""The drift room: live traffic against each version's reference (gateway.drift).

A serving process samples answered requests (GATEWAY_DRIFT_SAMPLE: a draw and an append on the
request path), bins them on the version's reference each second in a thread, keeps a sliding
window per version, and publishes it to the state database; every process (a sync-only one
too: the leader writes the events and the write-back) reads the fleet's windows and the
references at GATEWAY_DRIFT_INTERVAL_SECONDS and judges them. Started with the traffic room;
stopped before the state database closes (the last windows are published).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from mlflow.types.schema import ColSpec

from gateway.drift.baseline import Baselines
from gateway.drift.book import ReferenceBook
from gateway.drift.monitor import DriftMonitor
from gateway.drift.sampler import DriftSampler
from gateway.drift.window import Windows
from gateway.observability.records.record import Exchange
from gateway.rooms.models import ModelsRoom
from gateway.rooms.observability import ObservabilityRoom
from gateway.rooms.state import StateRoom
from gateway.rooms.sync import SyncRoom
from gateway.routing.catalog import Resolved
from gateway.settings import GatewaySettings
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
    monitor: DriftMonitor
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
        book = ReferenceBook(ReferenceStore(state.engine))
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
        return cls(monitor, sampler)

    def offer(self, served: Resolved, exchange: Exchange, status: int) -> None:
        """An answered request, for the sampler (a draw, then an append; never raises)."""
        if self.sampler is None or status >= 400 or exchange.protocol not in PROTOCOLS:
            return
        if exchange.answer_json is not None:
            return  # the OIP binary extension: not read for drift (a JSON answer would cost a conversion here)
        self.sampler.offer(
            served.id,
            protocol=exchange.protocol,
            media_type=exchange.media_type,
            request=exchange.request,
            response=exchange.response,
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
        self.monitor.start()
        if self.sampler is not None:
            self.sampler.start()

    async def stop(self) -> None:
        if self.sampler is not None:
            await self.sampler.stop()
            await self.sampler.flush()
        await self.monitor.stop()
