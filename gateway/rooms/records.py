"""The records room: what this process writes about each request, off the request path.

The access log (GATEWAY_ACCESS_LOG: a line per request) and the inference records
(GATEWAY_RECORDS_*: a request and its answer, sampled), each written by a thread of its own
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
from gateway.routing.catalog import Resolved
from gateway.settings import GatewaySettings


@dataclass(eq=False)
class RecordsRoom:
    access_log: AccessLog | None
    records: Recorder | None  # GATEWAY_RECORDS_SINK's; None when unset

    @classmethod
    def build(cls, settings: GatewaySettings, metrics: GatewayMetrics) -> RecordsRoom:
        return cls(access_log=AccessLog() if settings.access_log else None, records=recorder_for(settings, metrics))

    def start(self) -> None:
        if self.access_log is not None:
            self.access_log.start()
        if self.records is not None:
            self.records.start()

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
        records = self.records
        if records is None or (error is not None and not records.tables):
            return
        if not records.sampled(loaded.records_sample if loaded is not None else None):
            return
        if request is not None:
            request.recorded = True  # its shadows are recorded too
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
        records.offer(record)

    async def close(self) -> None:
        if self.access_log is not None:
            self.access_log.close()
        if self.records is not None:
            await anyio.to_thread.run_sync(self.records.close)  # what it can write within its timeout
