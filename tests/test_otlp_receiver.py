"""tests/support/otlp.py: the OTLP receiver that the tracing tests read spans from, fed by the
real OpenTelemetry SDK and its standard exporters over both protocols."""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterator

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

# The gateway's own generated gRPC stubs (their own descriptor pool) beside OpenTelemetry's
# (the default pool), in one process: every test here runs with both loaded.
from gateway.protocols import oip_grpc
from gateway.protocols.proto import grpc_service_pb2
from tests.support.otlp import OtlpProtocol, OtlpReceiver, ReceivedSpan

PROTOCOLS: list[OtlpProtocol] = ["http/protobuf", "grpc"]
# What the code that configures tracing does with OTEL_EXPORTER_OTLP_PROTOCOL: the exporters
# themselves never read it.
EXPORTERS: dict[str, type[SpanExporter]] = {"http/protobuf": HttpExporter, "grpc": GrpcExporter}


@pytest.fixture(autouse=True)
def no_otlp_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """None of the machine's OTEL_EXPORTER_OTLP_* variables: each test sets its own."""
    for name in list(os.environ):
        if name.startswith("OTEL_EXPORTER_OTLP_"):
            monkeypatch.delenv(name)


@pytest.fixture(params=PROTOCOLS)
def receiver(request: pytest.FixtureRequest) -> Iterator[OtlpReceiver]:
    with OtlpReceiver(request.param) as receiver:
        yield receiver


def tracing(exporter: SpanExporter) -> TracerProvider:
    """A provider of the test's own (never the global one) that exports through ``exporter``."""
    provider = TracerProvider(resource=Resource.create({"service.name": "t"}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def explicit_exporter(receiver: OtlpReceiver) -> SpanExporter:
    """The exporters' own endpoint rules: http wants the full URL with the signal's path, grpc
    a host:port (with ``insecure``: without a scheme it would dial TLS)."""
    if receiver.protocol == "grpc":
        return GrpcExporter(endpoint=receiver.endpoint.removeprefix("http://"), insecure=True)
    return HttpExporter(endpoint=f"{receiver.endpoint}/v1/traces")


def by_name(spans: list[ReceivedSpan]) -> dict[str, ReceivedSpan]:
    return {span.name: span for span in spans}


def test_every_field_is_decoded(receiver: OtlpReceiver) -> None:
    provider = tracing(explicit_exporter(receiver))
    tracer = provider.get_tracer("tests.otlp")
    attributes: dict[str, AttributeValue] = {
        "s": "iris",
        "i": 3,
        "f": 0.25,
        "b": True,
        "strings": ["a", "b"],
        "ints": [1, 2],
        "floats": [0.5, 1.5],
        "bools": [True, False],
    }
    try:
        with tracer.start_as_current_span("request", kind=SpanKind.SERVER) as parent:
            with tracer.start_as_current_span("compute") as child:
                child.add_event("loaded", {"version": 3, "cached": False})
        batch = tracer.start_span(
            "batch",
            kind=SpanKind.CLIENT,
            links=[Link(parent.get_span_context(), {"why": "batched"})],
            attributes=attributes,
        )
        batch.set_status(Status(StatusCode.ERROR, "boom"))
        batch.end()
        assert provider.force_flush()
    finally:
        provider.shutdown()

    spans = by_name(receiver.wait_for(lambda spans: len(spans) == 3))
    request_context, child_context = parent.get_span_context(), child.get_span_context()
    trace_id, request_id = format(request_context.trace_id, "032x"), format(request_context.span_id, "016x")

    request = spans["request"]
    assert (request.trace_id, request.span_id, request.parent_span_id) == (trace_id, request_id, None)
    assert request.kind == "SERVER"
    assert isinstance(parent, ReadableSpan)  # the SDK's span, which knows its times
    assert (request.start_ns, request.end_ns) == (parent.start_time, parent.end_time)
    assert (request.status, request.status_message) == ("UNSET", "")
    assert request.attributes == {} and request.links == [] and request.events == []

    compute = spans["compute"]
    assert compute.trace_id == trace_id
    assert compute.span_id == format(child_context.span_id, "016x")
    assert compute.parent_span_id == request_id
    assert compute.kind == "INTERNAL"
    assert compute.events == [("loaded", {"version": 3, "cached": False})]

    linked = spans["batch"]
    batch_context = batch.get_span_context()
    assert linked.trace_id == format(batch_context.trace_id, "032x") != trace_id  # a trace of its own
    assert linked.parent_span_id is None
    assert linked.kind == "CLIENT"
    assert linked.links == [(trace_id, request_id, {"why": "batched"})]
    assert linked.attributes == attributes
    assert (linked.status, linked.status_message) == ("ERROR", "boom")

    for span in spans.values():
        assert span.resource["service.name"] == "t"
        assert span.resource["telemetry.sdk.language"] == "python"
        assert span.scope == "tests.otlp"
        assert 0 < span.start_ns <= span.end_ns


# Unset or gzip: the grpc exporter refuses "none" (InvalidCompressionValueException), where
# the http one takes none, gzip or deflate.
@pytest.mark.parametrize("compression", [None, "gzip"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_the_standard_variables_point_an_exporter_here(
    protocol: OtlpProtocol, compression: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with OtlpReceiver(protocol) as receiver:
        for name, value in receiver.env().items():
            monkeypatch.setenv(name, value)
        if compression:
            monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", compression)
        provider = tracing(EXPORTERS[os.environ["OTEL_EXPORTER_OTLP_PROTOCOL"]]())
        try:
            with provider.get_tracer("tests.otlp").start_as_current_span("from-env") as span:
                pass
            assert provider.force_flush()
        finally:
            provider.shutdown()
        [received] = receiver.wait_for(lambda spans: len(spans) == 1)
        assert received.name == "from-env"
        assert received.trace_id == format(span.get_span_context().trace_id, "032x")


def export_request(name: str) -> bytes:
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.name, span.trace_id, span.span_id = name, bytes(range(16)), bytes(range(8))
    serialized: bytes = request.SerializeToString()
    return serialized


PROTOBUF = {"Content-Type": "application/x-protobuf"}


def test_http_serves_only_protobuf_posts_to_v1_traces() -> None:
    with OtlpReceiver("http/protobuf") as receiver, httpx.Client(base_url=receiver.endpoint) as client:
        assert client.post("/v1/logs", content=export_request("x"), headers=PROTOBUF).status_code == 404
        assert client.post("/", content=export_request("x"), headers=PROTOBUF).status_code == 404
        json = {"Content-Type": "application/json"}
        assert client.post("/v1/traces", content=b"{}", headers=json).status_code == 415
        gzipped = {**PROTOBUF, "Content-Encoding": "gzip"}
        assert client.post("/v1/traces", content=b"not gzip", headers=gzipped).status_code == 400
        assert receiver.spans() == []

        answer = client.post("/v1/traces", content=gzip.compress(export_request("zipped")), headers=gzipped)
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "application/x-protobuf"
        [span] = receiver.spans()
        assert (span.name, span.trace_id, span.span_id) == ("zipped", bytes(range(16)).hex(), bytes(range(8)).hex())
        receiver.clear()
        assert receiver.spans() == []


def test_a_timeout_names_what_was_received_and_refused() -> None:
    with OtlpReceiver("http/protobuf") as receiver, httpx.Client(base_url=receiver.endpoint) as client:
        client.post("/v1/traces", content=export_request("first"), headers=PROTOBUF)
        client.post("/v1/metrics", content=export_request("elsewhere"), headers=PROTOBUF)
        with pytest.raises(AssertionError) as timeout:
            receiver.wait_for(lambda spans: len(spans) == 2, timeout=0.05)
    message = str(timeout.value)
    assert "received ['first']" in message
    assert "POST /v1/metrics" in message


def test_the_gateway_stubs_and_otlp_stubs_load_together(receiver: OtlpReceiver) -> None:
    assert oip_grpc.SERVICE == "inference.GRPCInferenceService"
    infer = grpc_service_pb2.ModelInferRequest(model_name="iris", model_version="2")
    assert grpc_service_pb2.ModelInferRequest.FromString(infer.SerializeToString()) == infer
    provider = tracing(explicit_exporter(receiver))
    try:
        provider.get_tracer("tests.otlp").start_span("beside the gateway's stubs").end()
        assert provider.force_flush()
    finally:
        provider.shutdown()
    assert [span.name for span in receiver.wait_for(bool)] == ["beside the gateway's stubs"]
