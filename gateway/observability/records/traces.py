"""Each recorded prediction as an MLflow trace, and a label posted later as an expectation on it
(GATEWAY_RECORDS_TRACES, off by default; docs/observability.md: Predictions as MLflow traces).

The request path pays what the recorder's does: an append under a lock, for a request already
sampled (``offer``). A thread of its own takes what waits every ``FLUSH_SECONDS`` and writes it
to MLflow: a trace each (``start_trace``: its info, linked to the version's LoggedModel by the
``mlflow.modelId`` metadata MLflow's own traces carry, the request id as the tag
``gateway.request_id`` and as the trace's client request id) and the batch's spans in one call
(``log_spans``); a label (``offer_labels``, from ``POST /feedback`` once the label is in the state
database) as an expectation named ``label`` on its request's trace. The queue is bounded in
bytes; what does not fit, and what MLflow refuses or cannot take (down, slow), is dropped and
counted (``gateway_record_traces_total{outcome}``), never waited for by a request.

A trace's id is made from the version and the request id (``trace_id_of``), not kept: a label
names its request (and, once joined, its model and version), so its trace is known without a
column in the state database or a search by tag, which would cost a query per label and find
nothing until MLflow had indexed the trace. The price: a request id sent twice to one version
names one trace (the second answer's trace is refused, counted ``failed``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gateway.observability.records.record import InferenceRecord, LabelRecord

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from gateway.metrics import GatewayMetrics

log = logging.getLogger("gateway.records.traces")

FLUSH_SECONDS = 0.5
OVERHEAD_BYTES = 512  # a queued item's dataclass and strings, beside its bodies
PREVIEW_CHARS = 1000  # of a trace's request and response, as MLflow's own previews are cut
_WARN_EVERY_SECONDS = 30.0
EXPECTATION = "label"


def trace_id_of(model: str, version: str | int, request_id: str) -> str:
    """The MLflow trace id of ``request_id``'s answer by ``model`` version ``version``."""
    digest = hashlib.sha256(f"{model}\0{version}\0{request_id}".encode()).hexdigest()[:32]
    return f"tr-{digest}"


class TraceWriter:
    """Recorded predictions to MLflow traces and labels to expectations, off the request path.
    ``client`` makes the MLflow client (in the writer's thread); ``model_id`` gives a version's
    LoggedModel id or None."""

    def __init__(
        self,
        client: Callable[[], MlflowClient],
        *,
        experiment: str,
        metrics: GatewayMetrics,
        max_bytes: int,
        batch_size: int,
        sample: float,
        model_id: Callable[[MlflowClient, str, int], str | None],
    ) -> None:
        self._make_client = client
        self._experiment = experiment
        self._metrics = metrics
        self._max_bytes = max_bytes
        self._batch_size = batch_size
        self._sample = sample
        self._model_id = model_id
        self._queue: deque[tuple[InferenceRecord | LabelRecord, int]] = deque()
        self._held = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._client: MlflowClient | None = None
        self._experiment_id: str | None = None
        self._model_ids: dict[tuple[str, int], str | None] = {}
        self._last_warning = -math.inf

    def sampled(self, override: float | None = None) -> bool:
        """For a gateway without a records sink: the records' own draw (GATEWAY_RECORDS_SAMPLE,
        or a version's ``gateway.records.sample``)."""
        ratio = self._sample if override is None else override
        return ratio >= 1.0 or (ratio > 0.0 and random.random() < ratio)

    def offer(self, record: InferenceRecord) -> None:
        """A recorded request, for a trace if it was answered. Never blocks, never raises."""
        if record.error is not None or not 200 <= record.status < 300:
            return
        self._offered(record, len(record.request) + len(record.response) + OVERHEAD_BYTES)

    def offer_labels(self, labels: list[LabelRecord]) -> int:
        """Labels accepted by ``POST /feedback``, for expectations; how many were queued."""
        return sum(self._offered(label, len(repr(label.label)) + OVERHEAD_BYTES) for label in labels)

    def _offered(self, item: InferenceRecord | LabelRecord, size: int) -> bool:
        try:
            with self._lock:
                if self._closed:
                    outcome = "shutdown"
                elif self._held + size > self._max_bytes:
                    outcome = "queue_full"
                else:
                    self._queue.append((item, size))
                    self._held += size
                    return True
            self._metrics.record_traces(outcome)
        except Exception:  # a trace must never fail the request it describes
            log.debug("trace not queued", exc_info=True)
        return False

    @property
    def queued_bytes(self) -> int:
        return self._held

    def start(self) -> None:
        with self._lock:
            if self._thread is not None or self._closed:
                return
            self._thread = threading.Thread(target=self._run, name="records-traces", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop taking items; write what waits within ``timeout`` seconds; drop the rest."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
        self._stopping.set()
        if thread is not None:
            thread.join(timeout)
        with self._lock:
            left = len(self._queue)
            self._queue.clear()
            self._held = 0
        if left:
            self._metrics.record_traces("shutdown", left)

    # --- the writer thread ---

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch:
                self._write(batch)
                continue
            if self._stopping.is_set():
                return
            self._stopping.wait(FLUSH_SECONDS)

    def _take(self) -> list[InferenceRecord | LabelRecord]:
        with self._lock:
            batch = [self._queue.popleft() for _ in range(min(self._batch_size, len(self._queue)))]
            self._held -= sum(size for _, size in batch)
        return [item for item, _ in batch]

    def _write(self, batch: list[InferenceRecord | LabelRecord]) -> None:
        records = [item for item in batch if isinstance(item, InferenceRecord)]
        labels = [item for item in batch if isinstance(item, LabelRecord)]
        try:
            client = self._client = self._client or self._make_client()
            if records:
                self._traces(client, records)
            for label in labels:  # after the batch's traces: a label may be for one of them
                self._expectation(client, label)
        except Exception as exc:  # MLflow down or refusing: the batch is dropped, counted
            self._failed(len(records) + len(labels), exc)

    def _traces(self, client: MlflowClient, records: list[InferenceRecord]) -> None:
        from mlflow.tracing.client import TracingClient

        tracing = TracingClient(client.tracking_uri)
        experiment_id = self._experiment_id = self._experiment_id or _experiment(client, self._experiment)
        spans = []
        for record in records:
            info, span = self._trace(client, record, experiment_id)
            try:
                tracing.start_trace(info)
            except Exception as exc:  # this trace refused (a request id sent twice): the rest go on
                self._failed(1, exc)
                continue
            spans.append(span)
        if spans:
            tracing.log_spans(experiment_id, spans)
            self._metrics.record_traces("written", len(spans))

    def _trace(self, client: MlflowClient, record: InferenceRecord, experiment_id: str) -> tuple[Any, Any]:
        from mlflow.entities import Span, TraceInfo, TraceLocation, TraceState
        from mlflow.tracing.constant import SpanAttributeKey, TraceMetadataKey
        from mlflow.tracing.utils import build_otel_context
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import ReadableSpan
        from opentelemetry.trace import Status, StatusCode

        trace_id = trace_id_of(record.model, record.version, record.request_id)
        key = (record.model, record.version)
        if key not in self._model_ids:
            self._model_ids[key] = self._model_id(client, record.model, record.version)
        model_id = self._model_ids[key]
        start_ns = int(record.time * 1e9)
        end_ns = start_ns + int(record.latency_seconds * 1e9)
        inputs, outputs = _json(record.request), _json(record.response)
        metadata = {"gateway.model": record.model, "gateway.version": str(record.version)}
        if model_id:
            metadata[TraceMetadataKey.MODEL_ID] = model_id
        tags = {
            "gateway.request_id": record.request_id,
            "gateway.model": record.model,
            "gateway.version": str(record.version),
            "gateway.arm": record.arm or "",
            "mlflow.traceName": f"{record.model} v{record.version}",
        }
        info = TraceInfo(
            trace_id=trace_id,
            trace_location=TraceLocation.from_experiment_id(experiment_id),
            request_time=start_ns // 1_000_000,
            state=TraceState.OK,
            request_preview=_preview(inputs),
            response_preview=_preview(outputs),
            client_request_id=record.request_id,
            execution_duration=(end_ns - start_ns) // 1_000_000,
            trace_metadata=metadata,
            tags=tags,
        )
        otel_trace_id = int(trace_id.removeprefix("tr-"), 16)
        otel = ReadableSpan(
            name="predict",
            context=build_otel_context(otel_trace_id, otel_trace_id & ((1 << 64) - 1) or 1),
            start_time=start_ns,
            end_time=end_ns,
            attributes={
                SpanAttributeKey.REQUEST_ID: json.dumps(trace_id),
                SpanAttributeKey.SPAN_TYPE: json.dumps("CHAIN"),
                SpanAttributeKey.INPUTS: json.dumps(inputs),
                SpanAttributeKey.OUTPUTS: json.dumps(outputs),
            },
            status=Status(StatusCode.OK),
            resource=Resource.get_empty(),
        )
        return info, Span(otel)

    def _expectation(self, client: MlflowClient, label: LabelRecord) -> None:
        from mlflow.entities import AssessmentSource, AssessmentSourceType, Expectation
        from mlflow.tracing.client import TracingClient

        expectation = Expectation(
            name=EXPECTATION,
            value=label.label,
            source=AssessmentSource(source_type=AssessmentSourceType.HUMAN, source_id="registry-gateway feedback"),
            metadata={"row": str(label.row), "request_id": label.request_id},
        )
        try:
            TracingClient(client.tracking_uri).log_assessment(
                trace_id_of(label.model, label.version, label.request_id), expectation
            )
        except Exception as exc:  # its trace not written (dropped, or not sampled): this label only
            self._failed(1, exc)
            return
        self._metrics.record_traces("expectation")

    def _failed(self, count: int, exc: Exception) -> None:
        self._metrics.record_traces("failed", count)
        now = time.monotonic()
        if now - self._last_warning >= _WARN_EVERY_SECONDS:
            self._last_warning = now
            log.warning("MLflow traces: %d not written (%s)", count, exc)


def _experiment(client: MlflowClient, name: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    try:
        return str(client.create_experiment(name))
    except Exception:  # made meanwhile by another replica
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return str(found.experiment_id)


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return body.decode("utf-8", errors="replace")


def _preview(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text[:PREVIEW_CHARS]
