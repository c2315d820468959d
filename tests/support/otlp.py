"""A real OTLP trace receiver on loopback, for tests that read the spans the gateway exports.

Started by the test itself (there is no collector binary here), on 127.0.0.1 and a port the
kernel picks, speaking either protocol of the standard exporters: ``http/protobuf`` (POST
``/v1/traces``, gzip or deflate bodies as ``OTEL_EXPORTER_OTLP_COMPRESSION`` makes them) or
``grpc`` (``TraceService/Export``). Every span received is decoded into a
:class:`ReceivedSpan` of plain Python values, with its resource's attributes and scope::

    with OtlpReceiver("grpc") as receiver:
        ...  # run something with receiver.env() in its environment
        spans = receiver.wait_for(lambda spans: any(s.name == "predict" for s in spans))
"""

from __future__ import annotations

import gzip
import threading
import zlib
from collections.abc import Callable, Iterable
from concurrent import futures
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal

import grpc
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from tests.support.waiting import wait_until

OtlpProtocol = Literal["http/protobuf", "grpc"]
TRACES_PATH = "/v1/traces"
PROTOBUF = "application/x-protobuf"


@dataclass(frozen=True)
class ReceivedSpan:
    name: str
    trace_id: str  # 32 lower-case hex digits
    span_id: str  # 16
    parent_span_id: str | None
    kind: str  # "SERVER", "INTERNAL", "CLIENT", ...
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    links: list[tuple[str, str, dict[str, Any]]]  # (trace_id, span_id, attributes)
    status: str  # "UNSET", "OK", "ERROR"
    status_message: str
    events: list[tuple[str, dict[str, Any]]]  # (name, attributes)
    resource: dict[str, Any]  # the resource's attributes: service.name, ...
    scope: str  # the instrumentation scope's name


def _value(value: AnyValue) -> Any:
    """An AnyValue as Python: str, bool, int, float, bytes, list, dict, or None when unset."""
    match value.WhichOneof("value"):
        case None:
            return None
        case "array_value":
            return [_value(item) for item in value.array_value.values]
        case "kvlist_value":
            return _attributes(value.kvlist_value.values)
        case field:
            return getattr(value, field)


def _attributes(pairs: Iterable[KeyValue]) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


def _decode(request: ExportTraceServiceRequest) -> list[ReceivedSpan]:
    decoded = []
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                decoded.append(
                    ReceivedSpan(
                        name=span.name,
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex() or None,
                        kind=Span.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_"),
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        attributes=_attributes(span.attributes),
                        links=[
                            (link.trace_id.hex(), link.span_id.hex(), _attributes(link.attributes))
                            for link in span.links
                        ],
                        status=Status.StatusCode.Name(span.status.code).removeprefix("STATUS_CODE_"),
                        status_message=span.status.message,
                        events=[(event.name, _attributes(event.attributes)) for event in span.events],
                        resource=resource,
                        scope=scope_spans.scope.name,
                    )
                )
    return decoded


_DECOMPRESS: dict[str, Callable[[bytes], bytes]] = {
    "identity": lambda body: body,
    "gzip": gzip.decompress,
    "deflate": zlib.decompress,
}


class OtlpReceiver:
    """An OTLP trace receiver, started on entering (``with``) and stopped on leaving."""

    def __init__(self, protocol: OtlpProtocol = "http/protobuf") -> None:
        self.protocol = protocol
        self.endpoint = ""  # known once started: http://127.0.0.1:PORT, for either protocol
        self._lock = threading.Lock()
        self._spans: list[ReceivedSpan] = []
        self._refused: list[str] = []  # requests answered with an error, for a timeout's message
        self._stop: Callable[[], None] | None = None

    def env(self) -> dict[str, str]:
        """The standard variables that point an exporter here. The http/protobuf exporter
        posts to the endpoint + ``/v1/traces``; the grpc one dials its host:port, insecure
        because the scheme is ``http``. Neither exporter reads the protocol variable: the
        code that picks the exporter does (the SDK's auto-configuration, or the gateway)."""
        assert self.endpoint, "the receiver is not started: use it as `with OtlpReceiver() as receiver:`"
        return {"OTEL_EXPORTER_OTLP_ENDPOINT": self.endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": self.protocol}

    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self._spans)

    def clear(self) -> None:
        with self._lock:
            self._spans.clear()
            self._refused.clear()

    def wait_for(self, predicate: Callable[[list[ReceivedSpan]], bool], timeout: float = 10.0) -> list[ReceivedSpan]:
        """All spans received, once ``predicate`` holds for them; AssertionError after ``timeout``."""
        try:
            wait_until(lambda: predicate(self.spans()), timeout=timeout, what="spans", interval=0.01)
        except TimeoutError:
            with self._lock:
                names, refused = [span.name for span in self._spans], list(self._refused)
            raise AssertionError(
                f"timed out after {timeout:g} s waiting for spans at {self.endpoint}; received {names}"
                + (f"; refused requests: {refused}" if refused else "")
            ) from None
        return self.spans()

    def _receive(self, request: ExportTraceServiceRequest) -> None:
        spans = _decode(request)
        with self._lock:
            self._spans.extend(spans)

    def _refuse(self, why: str) -> None:
        with self._lock:
            self._refused.append(why)

    def __enter__(self) -> OtlpReceiver:
        port, self._stop = self._serve_grpc() if self.protocol == "grpc" else self._serve_http()
        self.endpoint = f"http://127.0.0.1:{port}"
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._stop is not None:
            self._stop()
            self._stop = None

    def _serve_http(self) -> tuple[int, Callable[[], None]]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # a connection per request: no keep-alive handler outlives a test

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path != TRACES_PATH:
                    return self._answer(404, f"POST {self.path}: only {TRACES_PATH} is served")
                if self.headers.get_content_type() != PROTOBUF:
                    return self._answer(415, f"Content-Type {self.headers['Content-Type']}, not {PROTOBUF}")
                decompress = _DECOMPRESS.get(self.headers.get("Content-Encoding", "identity").lower())
                if decompress is None:
                    return self._answer(415, f"Content-Encoding {self.headers['Content-Encoding']}")
                try:
                    request = ExportTraceServiceRequest.FromString(decompress(body))
                except (OSError, EOFError, zlib.error, DecodeError) as exc:
                    return self._answer(400, f"undecodable body: {exc}")
                receiver._receive(request)
                self._answer(200)

            def _answer(self, code: int, refused: str = "") -> None:
                if refused:
                    receiver._refuse(refused)
                body = ExportTraceServiceResponse().SerializeToString() if code == 200 else refused.encode()
                self.send_response(code)
                self.send_header("Content-Type", PROTOBUF if code == 200 else "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # no access log on the tests' stderr

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # Polled every 10 ms for shutdown() (the default, 0.5 s, would be each test's teardown).
        thread = threading.Thread(target=server.serve_forever, args=(0.01,), name="otlp-http", daemon=True)
        thread.start()

        def stop() -> None:
            server.shutdown()  # ends serve_forever
            server.server_close()  # closes the socket, joins the handlers' threads
            thread.join()

        return int(server.server_address[1]), stop

    def _serve_grpc(self) -> tuple[int, Callable[[], None]]:
        receiver = self

        class TraceService(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
            def Export(
                self, request: ExportTraceServiceRequest, context: grpc.ServicerContext
            ) -> ExportTraceServiceResponse:
                receiver._receive(request)
                return ExportTraceServiceResponse()

        pool = futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="otlp-grpc")
        server = grpc.server(pool)
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceService(), server)  # type: ignore[no-untyped-call]
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()

        def stop() -> None:
            server.stop(grace=None).wait()
            pool.shutdown(wait=True)

        return int(port), stop
