"""Where tracing's CPU goes, measured in process (issue 26): the account of the wrk figure.

Two parts, on the gateway's own ``Tracing`` (gateway/observability/tracing.py):

- **every request's path**, ``OTEL_TRACES_SAMPLER=traceidratio`` at 1%: the sampling check,
  ``RequestContext.traced`` and, for the 1% sampled, their request span made and ended. The
  microseconds a request over a loop of requests, less the same loop without tracing.
- **one sampled request's spans**, every request sampled: its request span and what a batch of
  16 with it makes (``queue``, ``batch``, ``decode``/``predict``/``encode``), made on the
  calling thread, then encoded to OTLP protobuf by the batch span processor's thread (the
  exporter's own encoder, measured by that thread's CPU clock; nothing is sent).

At a sampling ratio r, tracing costs a request about path + r * (spans made + encoded).
``python bench/tracing_cost.py`` prints the three figures in microseconds.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

BATCH = 16  # requests per batch at 32 connections (as bench/metrics_cost.py)
HEADERS = [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json"), (b"user-agent", b"wrk")]
ATTRIBUTES = {"gateway.model": "iris", "gateway.version": 1, "gateway.arm": "default"}


def path_microseconds(requests: int = 200_000) -> float:
    """A request's tracing calls at 1% sampling, over the same loop without them; best of three."""
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from gateway.observability import context
    from gateway.observability.tracing import Tracing

    tracing = Tracing.exporting_to(
        InMemorySpanExporter(), {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.01"}
    )

    def loop(traced: bool) -> float:
        started = time.perf_counter()
        for _ in range(requests):
            request = context.begin(None)
            if traced:
                request.traced(tracing.start_request("POST", HEADERS, {"url.path": "/models/iris/predict"}))
                if request.span is not None:
                    tracing.end_request(request.span, 200, server_error=False, attributes=ATTRIBUTES)
        return (time.perf_counter() - started) / requests * 1e6

    best = min(loop(True) - loop(False) for _ in range(3))
    tracing.close()
    return best


def sampled_microseconds(requests: int = 2_000) -> tuple[float, float]:
    """One sampled request's spans: (made, on the calling thread; OTLP-encoded, on the export
    thread), in CPU microseconds."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    from gateway.observability import context
    from gateway.observability.tracing import BatchTiming, Member, Tracing

    class Encoding(SpanExporter):
        """Encodes what it is given as the OTLP exporters do, and sends nothing."""

        def __init__(self) -> None:
            self.cpu = 0.0
            self.spans = 0

        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            started = time.thread_time()
            encode_spans(spans).SerializePartialToString()
            self.cpu += time.thread_time() - started
            self.spans += len(spans)
            return SpanExportResult.SUCCESS

    exporter = Encoding()
    # a queue that holds every span: one dropped would go unencoded and flatter the figure
    # (the processor reads the variable when it is made; the caller's value is put back)
    before = os.environ.get("OTEL_BSP_MAX_QUEUE_SIZE")
    os.environ["OTEL_BSP_MAX_QUEUE_SIZE"] = str(max(16 * requests, 2048))  # never below the default
    try:
        tracing = Tracing.exporting_to(exporter, {"OTEL_TRACES_SAMPLER": "always_on"})
    finally:
        if before is None:
            del os.environ["OTEL_BSP_MAX_QUEUE_SIZE"]
        else:
            os.environ["OTEL_BSP_MAX_QUEUE_SIZE"] = before
    made = 0.0
    for _ in range(requests):
        started = time.thread_time()
        request = context.begin(None)
        request.traced(tracing.start_request("POST", HEADERS, {"url.path": "/models/iris/predict"}))
        span: Any = request.span
        now = time.perf_counter_ns()
        members = [Member(span, now)] + [Member(None, now)] * (BATCH - 1)
        timing = BatchTiming(now, now + 200_000, 2e-5, 1e-4, 2e-5)
        tracing.batch_ran(model="iris", version=1, members=members, timing=timing)
        tracing.end_request(span, 200, server_error=False, attributes=ATTRIBUTES)
        made += time.thread_time() - started
    tracing.close()  # exports what is left
    spans = 6 * requests  # the request's, queue, batch, decode, predict, encode
    if exporter.spans != spans:
        raise RuntimeError(f"{exporter.spans} spans encoded of {spans}: the figure would not be a request's")
    return made / requests * 1e6, exporter.cpu / requests * 1e6


if __name__ == "__main__":
    path = path_microseconds()
    made, encoded = sampled_microseconds()
    print(f"path {path:.2f} us a request; a sampled request's spans: made {made:.1f} us, encoded {encoded:.1f} us")
    print(f"at 1%: {path + 0.01 * (made + encoded):.2f} us a request")
