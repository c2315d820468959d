"""The records room: what this process writes about each request, off the request path.

The access log (GATEWAY_ACCESS_LOG: a line per request), the inference records
(GATEWAY_RECORDS_*: a request and its answer, sampled) and their MLflow traces
(GATEWAY_RECORDS_TRACES: the same sampled requests), each written by a thread of its own
behind a bounded queue. ``record`` is what a finished predict hands over; the recorder keeps it
or not by the version's own sample rate if it has one. Started before anything else, closed
after the state database: the access log first, then the records still queued, within the
recorder's timeout.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import anyio.to_thread

from gateway.dataplane.loader import LoadedModel
from gateway.metrics import GatewayMetrics
from gateway.observability.context import RequestContext, new_request_id
from gateway.observability.logs import AccessLog
from gateway.observability.records.record import Exchange, InferenceRecord
from gateway.observability.records.recorder import Recorder, recorder_for
from gateway.observability.records.traces import TraceWriter
from gateway.routing.catalog import Resolved
from gateway.settings import GatewaySettings
from registry_sync.registry import RegistryReader


@dataclass(eq=False)
class RecordsRoom:
    access_log: AccessLog | None
    records: Recorder | None  # GATEWAY_RECORDS_SINK's; None when unset
    traces: TraceWriter | None = None  # GATEWAY_RECORDS_TRACES's; None when off

    @classmethod
    def build(
        cls, settings: GatewaySettings, metrics: GatewayMetrics, *, reader: RegistryReader | None = None
    ) -> RecordsRoom:
        return cls(
            access_log=AccessLog() if settings.access_log else None,
            records=recorder_for(settings, metrics),
            traces=_traces(settings, metrics, reader) if settings.records_traces else None,
        )

    def start(self) -> None:
        if self.access_log is not None:
            self.access_log.start()
        if self.records is not None:
            self.records.start()
        if self.traces is not None:
            self.traces.start()

    def record(
        self,
        served: Resolved,
        exchange: Exchange,
        *,
        status: int,
        seconds: float,
        request: RequestContext | None,
        loaded: LoadedModel | None,
        error: BaseException | None,
    ) -> None:
        """One finished request, if sampled (by the version's own rate if ``loaded`` has one, else
        the setting's). A failed one (``error``) is a row of the inference tables only: the
        other sinks' events are of answers."""
        records, traces = self.records, self.traces
        if error is not None and (records is None or not records.tables):
            return
        override = loaded.records_sample if loaded is not None else None
        if records is not None:
            if not records.sampled(override):
                return
        elif traces is None or not traces.sampled(override):  # traces without a sink: the same draw
            return
        if request is not None and records is not None:
            request.recorded = True  # its shadows are recorded too (to the sink: they make no trace)
        answer = exchange.response
        if exchange.answer_json is not None and error is None:
            answer = exchange.answer_json(answer)
        record = InferenceRecord(
            model=served.name,
            version=served.version,
            alias=served.alias,
            arm=served.route,
            request_id=request.request_id if request is not None else new_request_id(),
            route_key=exchange.route_key,
            protocol=exchange.protocol,
            media_type=exchange.media_type,
            request=exchange.request,
            response=answer,
            status=status,
            latency_seconds=seconds,
            time=request.time if request is not None else time.time() - seconds,
            trace_id=request.trace_id if request is not None else None,
            route=request.path if request is not None else None,
            error_code=exchange.error_code,
            error=type(error).__name__ if error is not None else None,
            key_id=request.key_id if request is not None else None,
            queue_seconds=request.queue_seconds if request is not None else None,
            predict_seconds=request.predict_seconds if request is not None else None,
            signature=loaded.metadata.signature if loaded is not None else None,
        )
        if records is not None:
            records.offer(record)
        if traces is not None:
            traces.offer(record)  # an append: MLflow is written to by the traces' thread

    async def close(self) -> None:
        if self.access_log is not None:
            self.access_log.close()
        if self.records is not None:
            await anyio.to_thread.run_sync(self.records.close)  # what it can write within its timeout
        if self.traces is not None:
            await anyio.to_thread.run_sync(self.traces.close)


def _traces(settings: GatewaySettings, metrics: GatewayMetrics, reader: RegistryReader | None) -> TraceWriter:
    """The traces' writer, to the registry's MLflow (the tracking server the gateway follows)."""
    from mlflow.tracking import MlflowClient

    from registry_sync.writeback import logged_model_id

    tracking_uri = reader.tracking_uri if reader is not None else None
    registry_uri = reader.registry_uri if reader is not None else None

    def model_id(client: MlflowClient, name: str, version: int) -> str | None:
        found = client.get_model_version(name, str(version))
        return found.model_id or logged_model_id(found.source or "")

    return TraceWriter(
        lambda: MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri),
        experiment=settings.records_traces_experiment,
        metrics=metrics,
        max_bytes=int(settings.records_queue_mb * 1024 * 1024),
        batch_size=settings.records_batch_size,
        sample=settings.records_sample,
        model_id=model_id,
    )
