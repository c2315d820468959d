"""GATEWAY_RECORDS_TRACES's queue, on the request path's side: bounded in bytes, what does not
fit dropped and counted, nothing raised, nothing but answered requests taken. The writing to a
real `mlflow server`, and MLflow down, are in tests/test_writeback.py."""

from __future__ import annotations

import time

from gateway.metrics import GatewayMetrics
from gateway.observability.records.record import InferenceRecord, LabelRecord
from gateway.observability.records.traces import OVERHEAD_BYTES, TraceWriter, trace_id_of


def _record(request_id: str, status: int = 200, error: str | None = None) -> InferenceRecord:
    return InferenceRecord(
        "iris", 1, None, "default", request_id, None, "mlflow", "application/json",
        b'{"inputs": [[1, 2, 3, 4]]}', b'{"predictions": [0]}', status, 0.001, time.time(), error=error,
    )  # fmt: skip


def _never() -> object:
    raise AssertionError("no MLflow client is made before the writer starts")


def _count(metrics: GatewayMetrics, outcome: str) -> float:
    return metrics.registry.get_sample_value("gateway_record_traces_total", {"outcome": outcome}) or 0.0


def test_the_queue_holds_its_bound_in_bytes_and_counts_what_it_drops() -> None:
    metrics = GatewayMetrics()
    one = len(_record("r").request) + len(_record("r").response) + OVERHEAD_BYTES
    writer = TraceWriter(
        _never,  # type: ignore[arg-type]
        experiment="e",
        metrics=metrics,
        max_bytes=2 * one,
        batch_size=100,
        sample=1.0,
        model_id=lambda *_: None,
    )
    for n in range(5):
        writer.offer(_record(f"r{n}"))
    assert writer.queued_bytes == 2 * one and _count(metrics, "queue_full") == 3
    # a failed request has no prediction: not taken, not counted
    writer.offer(_record("bad", status=400, error="BadRequest"))
    writer.offer(_record("down", status=503))
    assert writer.queued_bytes == 2 * one and _count(metrics, "queue_full") == 3
    assert writer.offer_labels([LabelRecord("r0", "iris", "1", 2, time.time())]) == 0  # full: dropped
    writer.close(timeout=0)
    assert _count(metrics, "shutdown") == 2 and writer.queued_bytes == 0
    writer.offer(_record("late"))  # after close: counted, never raised
    assert _count(metrics, "shutdown") == 3


def test_a_trace_id_is_the_versions_and_the_request_ids_alone() -> None:
    assert trace_id_of("iris", 1, "a") == trace_id_of("iris", "1", "a")  # a label names its version as text
    ids = {trace_id_of("iris", 1, "a"), trace_id_of("iris", 2, "a"), trace_id_of("iris", 1, "b")}
    assert len(ids) == 3 and all(i.startswith("tr-") and len(i) == 35 for i in ids)
