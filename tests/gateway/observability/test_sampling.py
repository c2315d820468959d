"""Sampling decided before a span is made: a request that starts a trace and is sampled out
gets no span at all (not a no-op one), and the requests that are sampled are exactly the
ones OpenTelemetry's own ratio sampler would keep (the same test on the same trace id)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision, TraceIdRatioBased

from gateway.observability.tracing import RequestSpan, Sampling, Tracing, TracingError

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def ratio(rate: float, name: str = "parentbased_traceidratio") -> dict[str, str]:
    return {"OTEL_TRACES_SAMPLER": name, "OTEL_TRACES_SAMPLER_ARG": str(rate)}


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    yield InMemorySpanExporter()


def start(tracing: Tracing, *headers: tuple[bytes, bytes]) -> RequestSpan | None:
    return tracing.start_request("POST", headers, {"url.path": "/models/m/predict"})


def test_a_ratio_keeps_about_its_share_and_makes_no_span_for_the_rest(exporter: InMemorySpanExporter) -> None:
    tracing = Tracing.exporting_to(exporter, ratio(0.25))
    n = 4000
    spans = [start(tracing) for _ in range(n)]
    kept = [span for span in spans if span is not None]
    spread = 5 * math.sqrt(n * 0.25 * 0.75)  # outside with probability below 1e-6
    assert n * 0.25 - spread <= len(kept) <= n * 0.25 + spread
    bound = TraceIdRatioBased.get_bound_for_rate(0.25)
    sampler = TraceIdRatioBased(0.25)
    for span in kept:
        assert span.is_recording()
        trace_id = span.get_span_context().trace_id
        # the id the decision was made on is the span's, and the SDK's sampler agrees with it
        assert trace_id & TraceIdRatioBased.TRACE_ID_LIMIT < bound
        assert sampler.should_sample(None, trace_id, "POST").decision is Decision.RECORD_AND_SAMPLE
        span.end()
    tracing.close()
    assert len(exporter.get_finished_spans()) == len(kept)
    assert len({s.context.trace_id for s in exporter.get_finished_spans()}) == len(kept)


def test_a_callers_trace_is_followed_as_the_parent_says(exporter: InMemorySpanExporter) -> None:
    tracing = Tracing.exporting_to(exporter, ratio(0.0))  # parent-based: the caller decides
    sampled = start(tracing, (b"traceparent", f"00-{CALLER_TRACE}-00f067aa0ba902b7-01".encode()))
    assert sampled is not None and sampled.is_recording()
    assert format(sampled.get_span_context().trace_id, "032x") == CALLER_TRACE
    not_sampled = start(tracing, (b"traceparent", f"00-{CALLER_TRACE}-00f067aa0ba902b7-00".encode()))
    assert not_sampled is None or not not_sampled.is_recording()
    assert start(tracing) is None  # a trace of its own, at ratio 0
    # garbage in traceparent: a trace of its own, as if none was sent
    assert start(tracing, (b"traceparent", b"00-nothex-zz-01")) is None


def test_always_on_and_off(exporter: InMemorySpanExporter) -> None:
    on = Tracing.exporting_to(exporter, {"OTEL_TRACES_SAMPLER": "always_on"})
    assert all(span is not None and span.is_recording() for span in (start(on) for _ in range(50)))
    off = Tracing.exporting_to(exporter, {"OTEL_TRACES_SAMPLER": "always_off"})
    assert [start(off) for _ in range(50)] == [None] * 50
    default = Tracing.exporting_to(exporter, {})  # parentbased_always_on, the specification's default
    assert start(default) is not None


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"OTEL_TRACES_SAMPLER": "sometimes"}, "OTEL_TRACES_SAMPLER='sometimes'"),
        (ratio(1.5), "OTEL_TRACES_SAMPLER_ARG='1.5'"),
        (ratio(-0.1, "traceidratio"), "OTEL_TRACES_SAMPLER_ARG='-0.1'"),
        ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "ten percent"}, "'ten percent'"),
    ],
)
def test_a_sampler_it_cannot_honour_is_refused_by_name(environ: dict[str, str], named: str) -> None:
    with pytest.raises(TracingError, match=named):
        Sampling.from_environ(environ)


def test_a_ratio_without_its_argument_is_the_specifications_default_of_one() -> None:
    sampling = Sampling.from_environ({"OTEL_TRACES_SAMPLER": "traceidratio"})
    assert sampling.root_bound == TraceIdRatioBased.get_bound_for_rate(1.0)


def test_a_requests_span_is_exported_once_when_it_ends_as_the_sdk_would_export_it(
    exporter: InMemorySpanExporter,
) -> None:
    """The request span is the gateway's own until it ends (gateway.observability.tracing.
    RequestSpan); what reaches the exporter is a finished server span like the SDK's: its
    caller's trace and parent, the sampler's trace state, the name it was given last, its
    attributes without the unset ones, its status, and nothing more for a second end."""
    from opentelemetry.trace import SpanKind, StatusCode

    tracing = Tracing.exporting_to(exporter, ratio(0.0))
    parent = f"00-{CALLER_TRACE}-00f067aa0ba902b7-01"
    span = start(tracing, (b"traceparent", parent.encode()), (b"tracestate", b"vendor=value"))
    assert span is not None and span.is_recording()
    span.update_name("POST /models/{name}/predict")
    Tracing.end_request(span, 503, server_error=True, attributes={"gateway.model": "m", "gateway.arm": None})
    assert not span.is_recording()
    span.end()  # a second end exports nothing
    tracing.close()
    (exported,) = exporter.get_finished_spans()
    assert exported.name == "POST /models/{name}/predict" and exported.kind is SpanKind.SERVER
    assert format(exported.context.trace_id, "032x") == CALLER_TRACE and exported.context.trace_flags.sampled
    assert exported.parent is not None and format(exported.parent.span_id, "016x") == "00f067aa0ba902b7"
    assert exported.parent.is_remote and exported.context.trace_state.get("vendor") == "value"
    assert dict(exported.attributes or {}) == {
        "url.path": "/models/m/predict",
        "gateway.model": "m",
        "http.response.status_code": 503,
    }
    assert exported.status.status_code is StatusCode.ERROR
    assert exported.start_time is not None and exported.end_time is not None
    assert exported.start_time <= exported.end_time


def test_a_batch_with_two_sampled_requests_reads_as_one_trace_each(exporter: InMemorySpanExporter) -> None:
    """A batch's spans are handed over as facts and made in the processor's thread
    (gateway.observability.tracing._Building): what the exporter gets is each sampled request's
    queue span, the batch span that ran (under the first, linked to both, with its stages under
    it) and a batch span for the second linked to that one; the request sampled out gets none."""
    from gateway.observability.tracing import BatchTiming, Member

    tracing = Tracing.exporting_to(exporter, {"OTEL_TRACES_SAMPLER": "always_on"})
    first, second = start(tracing), start(tracing)
    assert first is not None and second is not None
    t0 = 1_000_000_000
    members = [Member(first, t0), Member(None, t0 + 10), Member(second, t0 + 20)]
    timing = BatchTiming(t0 + 1_000, t0 + 101_000, 2e-5, 6e-5, 2e-5)
    tracing.batch_ran(model="m", version=3, members=members, timing=timing)
    tracing.close()
    spans = exporter.get_finished_spans()
    by_name: dict[str, list[ReadableSpan]] = {}
    for span in spans:
        by_name.setdefault(span.name, []).append(span)
    assert sorted(by_name) == ["batch", "decode", "encode", "predict", "queue"]
    first_id, second_id = first.get_span_context(), second.get_span_context()
    queues = {span.parent.span_id: span for span in by_name["queue"]}
    assert set(queues) == {first_id.span_id, second_id.span_id}
    (ran,) = [span for span in by_name["batch"] if span.parent.span_id == first_id.span_id]
    (other,) = [span for span in by_name["batch"] if span.parent.span_id == second_id.span_id]
    assert ran.context.trace_id == first_id.trace_id and other.context.trace_id == second_id.trace_id
    assert {link.context.span_id for link in ran.links} == {first_id.span_id, second_id.span_id}
    assert [link.context.span_id for link in other.links] == [ran.context.span_id]
    assert ran.attributes["gateway.batch.size"] == 3 and ran.attributes["gateway.batch.sampled"] == 2
    stages = [by_name[stage][0] for stage in ("decode", "predict", "encode")]
    assert all(stage.parent.span_id == ran.context.span_id for stage in stages)
    # the stages follow one another inside the batch, on the same clock as the queue spans
    assert ran.start_time == stages[0].start_time <= stages[0].end_time == stages[1].start_time
    assert stages[1].end_time == stages[2].start_time <= stages[2].end_time <= ran.end_time
    assert queues[first_id.span_id].end_time == ran.start_time
    assert ran.start_time - queues[first_id.span_id].start_time == 1_000
    assert ran.end_time - ran.start_time == 100_000


def test_an_ended_request_span_takes_no_more_changes(exporter: InMemorySpanExporter) -> None:
    """Once ended, a request span belongs to the export thread, which makes it a finished span
    there: a batch that ran past its request's timeout (and sets the latency split on the span
    in GATEWAY_TRACING_SPANS=requests) changes nothing, as with the SDK's own spans."""
    from gateway.observability.tracing import BatchTiming, Member

    tracing = Tracing.exporting_to(exporter, {"OTEL_TRACES_SAMPLER": "always_on"})
    tracing.batch_spans = False
    span = start(tracing)
    assert span is not None
    Tracing.end_request(span, 504, server_error=False, attributes={"gateway.model": "m"})
    now = 1_000_000_000
    tracing.batch_ran(model="m", version=1, members=[Member(span, now)], timing=BatchTiming(now, now + 10, 0, 0, 0))
    span.set_attribute("late", True)
    span.update_name("renamed")
    tracing.close()
    (exported,) = exporter.get_finished_spans()
    assert exported.name == "POST" and dict(exported.attributes or {}) == {
        "url.path": "/models/m/predict",
        "gateway.model": "m",
        "http.response.status_code": 504,
    }


def test_an_export_carries_no_more_spans_than_the_processors_batch_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch's facts become 2k + 3 spans for k sampled requests: the exporter still gets at
    most OTEL_BSP_MAX_EXPORT_BATCH_SIZE spans a call (a collector's message limit), and all."""
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    from gateway.observability.tracing import BatchTiming, Member

    calls: list[int] = []

    class Counting(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            calls.append(len(spans))
            return SpanExportResult.SUCCESS

    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "4")
    tracing = Tracing.exporting_to(Counting(), {"OTEL_TRACES_SAMPLER": "always_on"})
    spans = [start(tracing) for _ in range(3)]
    now = 1_000_000_000
    members = [Member(span, now) for span in spans]
    tracing.batch_ran(model="m", version=1, members=members, timing=BatchTiming(now, now + 10, 0, 0, 0))
    for span in spans:
        assert span is not None
        span.end()
    tracing.close()
    assert sum(calls) == 3 + 1 + 3 + 2 + 3  # queue spans, the batch that ran, its stages, the others' batch, requests
    assert max(calls) <= 4
