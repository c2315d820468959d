"""OpenTelemetry traces of one gateway process (``GATEWAY_TRACING=otlp``).

Off by default, and then free: :meth:`Tracing.off` makes no span anywhere and the request
path checks one attribute. On, a provider of the process's own (not OpenTelemetry's global
one, which MLflow's tracing and other libraries share) exports through the OTLP exporter
that ``OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL`` names (``http/protobuf``, the default, or
``grpc``), configured by the standard variables (``OTEL_EXPORTER_OTLP_ENDPOINT``,
``OTEL_SERVICE_NAME``, ``OTEL_TRACES_SAMPLER`` and ``OTEL_TRACES_SAMPLER_ARG``...), from a
batch span processor: spans leave in a thread of their own, and past its bounded queue
(``OTEL_BSP_MAX_QUEUE_SIZE``) they are dropped, never waited for.

Sampled out costs next to nothing: a request that starts a trace (no ``traceparent``) has its
trace id drawn here and checked against the ratio sampler's bound first, the very test the
SDK's ``TraceIdRatioBased`` makes; only a request that passes gets a span, with that id, so the
SDK's sampler agrees. The SDK's ``start_span`` for a request sampled out cost 11.6 us here,
the check 0.3 us. A request that continues a caller's trace is decided by the provider's
sampler, as the SDK's ``start_span`` would decide it.

Spans: ``<METHOD> <route>`` per request (W3C ``traceparent``/``tracestate`` honoured), its
``queue`` wait, and ``batch`` for the batch that ran it. A batch serves many requests, yet
each request reads as one trace: the batch's own span (with ``decode``, ``predict`` and
``encode`` children) is a child of the first sampled request it served and links to every
sampled request span; each other request gets a ``batch`` span of its own, over the same
interval, linked to that one. Background work has root spans: ``model.load``,
``model.warmup``, ``registry.sync`` and ``environment.build``.

A batch's spans are made after it ran, from the times it took, and nothing can be added to
them: they are built finished (the SDK's ``ReadableSpan``, what span processors are handed at
a span's end) and handed to the batch span processor directly, skipping a live span's
sampler call, locks and attribute checks (about 40 us of the ~55 a span cost through
``start_span`` and ``end`` here: ``bench/tracing_cost.py``). Their trace flags and state are
their parent's, as the parent-based sampler would have decided. A request's own span is kept
the same way (:class:`RequestSpan`): its ids, start and attributes gathered while it runs, and
one ``ReadableSpan`` built when it ends. At 1% sampling, the SDK's live-span code ran so seldom
that it ran cold, at several times its cost in a loop (docs/observability.md); a sampled
request now runs little of the SDK's code beyond the processor's.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    DEFAULT_OFF,
    DEFAULT_ON,
    Decision,
    ParentBasedTraceIdRatio,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    Link,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    Tracer,
    get_current_span,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

PROTOCOLS = ("http/protobuf", "grpc")
_SCOPE = "registry-gateway"
_PROPAGATED = (b"traceparent", b"tracestate")
_COMPRESSION = ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "OTEL_EXPORTER_OTLP_COMPRESSION")


class TracingError(ValueError):
    """The OTEL_* variables ask for something this gateway cannot export with."""


@dataclass(frozen=True, slots=True)
class Member:
    """A request a batch served: its request span, still open (None: not sampled), and when it
    was queued (``time.perf_counter_ns()``)."""

    span: RequestSpan | None
    queued_ns: int


@dataclass(frozen=True, slots=True)
class BatchTiming:
    """A batch's start and end (``perf_counter_ns``) and the seconds of its stages."""

    started_ns: int
    ended_ns: int
    decode: float
    compute: float
    encode: float


@dataclass(frozen=True, slots=True)
class Sampling:
    """``OTEL_TRACES_SAMPLER[_ARG]`` as a sampler for the provider, and what it decides for a
    trace's first span: ``root_bound`` None samples every one; else a trace id is sampled when
    its low 64 bits are below it (``TraceIdRatioBased``'s own test; 0: none)."""

    sampler: Sampler
    root_bound: int | None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Sampling:
        name = environ.get("OTEL_TRACES_SAMPLER", "").strip().lower() or "parentbased_always_on"
        fixed = {
            "always_on": (ALWAYS_ON, None),
            "parentbased_always_on": (DEFAULT_ON, None),
            "always_off": (ALWAYS_OFF, 0),
            "parentbased_always_off": (DEFAULT_OFF, 0),
        }
        if name in fixed:
            return cls(*fixed[name])
        if name not in ("traceidratio", "parentbased_traceidratio"):
            known = ", ".join([*fixed, "traceidratio", "parentbased_traceidratio"])
            raise TracingError(f"OTEL_TRACES_SAMPLER={name!r}: the gateway samples with one of {known}")
        arg = environ.get("OTEL_TRACES_SAMPLER_ARG", "").strip()
        try:
            rate = float(arg) if arg else 1.0  # the specification's default ratio
        except ValueError:
            rate = -1.0
        if not 0.0 <= rate <= 1.0:
            raise TracingError(f"OTEL_TRACES_SAMPLER_ARG={arg!r}: {name} needs a ratio from 0 to 1")
        sampler = TraceIdRatioBased(rate) if name == "traceidratio" else ParentBasedTraceIdRatio(rate)
        return cls(sampler, TraceIdRatioBased.get_bound_for_rate(rate))


class _HashedOnce(Resource):
    """A resource whose hash is taken once. The OTLP encoder groups spans by resource, hashing
    every span's (``Resource.__hash__`` dumps its attributes to JSON each time: a fifth of a
    span's encoding here); a resource never changes, so neither does its hash."""

    _hash: int | None = None

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = super().__hash__()
        return self._hash


@dataclass(frozen=True, slots=True)
class _Finished:
    """Where finished spans go, and what they all carry: the provider's resource and the
    gateway's instrumentation scope."""

    processor: SpanProcessor
    resource: Resource
    scope: InstrumentationScope
    ids: IdGenerator

    def span(
        self,
        name: str,
        parent: SpanContext,
        start_ns: int,
        end_ns: int,
        attributes: dict[str, Any] | None = None,
        links: tuple[Link, ...] = (),
    ) -> SpanContext:
        """A span that began and ended at these (wall clock) times, under ``parent``, exported."""
        context = SpanContext(
            parent.trace_id,
            self.ids.generate_span_id(),
            is_remote=False,
            trace_flags=parent.trace_flags,
            trace_state=parent.trace_state,
        )
        self.export(name, context, parent, start_ns, end_ns, attributes, links)
        return context

    def export(
        self,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        start_ns: int,
        end_ns: int,
        attributes: dict[str, Any] | None,
        links: tuple[Link, ...] = (),
        kind: SpanKind = SpanKind.INTERNAL,
        status: Status | None = None,
    ) -> None:
        """A finished span, handed to the processor as the SDK hands one at its end."""
        self.processor.on_end(
            ReadableSpan(
                name,
                context=context,
                parent=parent,
                resource=self.resource,
                attributes=attributes,
                links=links,
                kind=kind,
                status=status or Status(StatusCode.UNSET),
                instrumentation_scope=self.scope,
                start_time=start_ns,
                end_time=end_ns,
            )
        )


class RequestSpan:
    """A sampled request's server span while the request runs: what the callers of a live span
    use of it (its context, its name, attributes, a status, ``end``), kept in plain fields and
    exported as one finished span at :meth:`end` (once)."""

    __slots__ = ("name", "_context", "_parent", "_start_ns", "attributes", "_status", "_finished")

    def __init__(
        self,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        attributes: dict[str, Any],
        finished: _Finished,
    ) -> None:
        self.name = name
        self._context = context
        self._parent = parent
        self._start_ns = time.time_ns()
        self.attributes = attributes
        self._status: Status | None = None
        self._finished: _Finished | None = finished

    def is_recording(self) -> bool:
        return self._finished is not None

    def get_span_context(self) -> SpanContext:
        return self._context

    def update_name(self, name: str) -> None:
        self.name = name

    def set_attribute(self, key: str, value: Any) -> None:
        self.attributes[key] = value

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        self.attributes.update(attributes)

    def set_status(self, status: Status) -> None:
        self._status = status

    def end(self) -> None:
        finished, self._finished = self._finished, None
        if finished is None:
            return
        attributes = {key: value for key, value in self.attributes.items() if value is not None}
        finished.export(
            self.name,
            self._context,
            self._parent,
            self._start_ns,
            time.time_ns(),
            attributes,
            kind=SpanKind.SERVER,
            status=self._status,
        )


class Tracing:
    def __init__(
        self,
        tracer: Tracer | None = None,
        shutdown: Any = None,
        *,
        sampling: Sampling | None = None,
        finished: _Finished | None = None,
    ) -> None:
        self._tracer = tracer
        self.batch_spans = True  # GATEWAY_TRACING_SPANS=all; False: the split as request attributes
        self._shutdown = shutdown
        self._finished = finished
        self.enabled = tracer is not None
        self._sampling = sampling
        self._propagator = TraceContextTextMapPropagator()
        # perf_counter_ns -> wall clock ns, for spans whose times were taken before they were made
        self._wall_offset = time.time_ns() - time.perf_counter_ns()

    @classmethod
    def off(cls) -> Tracing:
        return cls()

    @classmethod
    def otlp(cls, environ: Mapping[str, str] | None = None) -> Tracing:
        """A tracer exporting over OTLP as the standard variables say."""
        environ = os.environ if environ is None else environ
        protocol = exporter_protocol(environ)
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

            # The grpc exporter refuses OTEL_EXPORTER_OTLP_COMPRESSION=none (1.45), which the
            # specification allows and the http one takes: said explicitly, it is accepted.
            compression = None
            if any(environ.get(v, "").strip().lower() == "none" for v in _COMPRESSION):
                import grpc

                compression = grpc.Compression.NoCompression
            exporter: Any = GrpcExporter(compression=compression)
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

            exporter = HttpExporter()
        return cls.exporting_to(exporter, environ)

    @classmethod
    def exporting_to(cls, exporter: SpanExporter, environ: Mapping[str, str]) -> Tracing:
        """A tracer sampling as ``OTEL_TRACES_SAMPLER[_ARG]`` say, its spans batched to ``exporter``."""
        from opentelemetry.sdk.resources import SERVICE_NAME
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        resource = Resource.create()
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: "registry-gateway"}))
        resource = _HashedOnce(resource.attributes, resource.schema_url)
        sampling, ids = Sampling.from_environ(environ), RandomIdGenerator()
        provider = TracerProvider(resource=resource, sampler=sampling.sampler, id_generator=ids)
        processor = BatchSpanProcessor(exporter)
        provider.add_span_processor(processor)
        scope = InstrumentationScope(_SCOPE, "")  # what get_tracer(_SCOPE) gives its spans
        return cls(
            provider.get_tracer(scope.name),
            provider.shutdown,
            sampling=sampling,
            finished=_Finished(processor, provider.resource, scope, ids),
        )

    def close(self) -> None:
        """Export what is buffered and stop (the processor's own timeout bounds it)."""
        if self._shutdown is not None:
            self._shutdown()
            self._shutdown = None

    # --- requests -------------------------------------------------------------------------

    def start_request(
        self, name: str, headers: Iterable[tuple[bytes, bytes]], attributes: dict[str, Any]
    ) -> RequestSpan | None:
        """A server span for one request, continuing the caller's trace when it sent one; None
        when the request is sampled out before a span is made (see the module)."""
        carrier = {}
        for key, value in headers:
            if key in _PROPAGATED:
                carrier[key.decode("latin-1")] = value.decode("latin-1")
        return self._start(name, carrier, attributes)

    def start_call(
        self, name: str, metadata: Iterable[tuple[str, Any]], attributes: dict[str, Any]
    ) -> RequestSpan | None:
        """The same for a gRPC call: the trace context comes in its metadata."""
        carrier = {key: value for key, value in metadata if key in ("traceparent", "tracestate")}
        return self._start(name, carrier, attributes)

    def _start(self, name: str, carrier: dict[str, str], attributes: dict[str, Any]) -> RequestSpan | None:
        """Sampled as the SDK's ``start_span`` samples a server span (the provider's sampler,
        the caller's context), or None; the span is the gateway's own (see the module)."""
        assert self._sampling is not None and self._finished is not None
        context = self._propagator.extract(carrier) if carrier else None
        parent: SpanContext | None = get_current_span(context).get_span_context() if context else None
        if parent is not None and not parent.is_valid:
            parent = None  # a traceparent that does not parse: a trace of its own
        trace_state = None
        if parent is None:  # this request starts a trace
            trace_id = random.getrandbits(128) or 1
            bound = self._sampling.root_bound
            if bound is not None:  # TraceIdRatioBased's own test, before anything is made
                if trace_id & TraceIdRatioBased.TRACE_ID_LIMIT >= bound:
                    return None
            else:
                decided = self._sampling.sampler.should_sample(None, trace_id, name, SpanKind.SERVER, attributes)
                if decided.decision is not Decision.RECORD_AND_SAMPLE:
                    return None
                trace_state = decided.trace_state
        else:
            trace_id = parent.trace_id
            decided = self._sampling.sampler.should_sample(context, trace_id, name, SpanKind.SERVER, attributes)
            if decided.decision is not Decision.RECORD_AND_SAMPLE:  # a span recorded but not sampled is never exported
                return None
            trace_state = decided.trace_state
        own = SpanContext(
            trace_id,
            self._finished.ids.generate_span_id(),
            is_remote=False,
            trace_flags=TraceFlags(TraceFlags.SAMPLED),
            trace_state=trace_state,
        )
        return RequestSpan(name, own, parent, dict(attributes), self._finished)

    @staticmethod
    def end_request(span: RequestSpan, status: int, *, server_error: bool, attributes: dict[str, Any]) -> None:
        span.set_attributes(attributes)
        span.set_attribute("http.response.status_code", status)
        if server_error:
            span.set_status(Status(StatusCode.ERROR))
        span.end()

    # --- batches --------------------------------------------------------------------------

    def batch_ran(self, *, model: str, version: int, members: list[Member], timing: BatchTiming) -> None:
        """The spans of one batch, made after it ran from the times it took (see the module)."""
        assert self._finished is not None
        if not self.batch_spans:
            self._split_on_requests(members, timing)
            return
        finished = self._finished
        queued = [(m.span.get_span_context(), m.queued_ns) for m in members if m.span is not None]
        if not queued:
            return
        sampled = [span for span, _ in queued]
        start, end = self._wall(timing.started_ns), self._wall(timing.ended_ns)
        for span, queued_ns in queued:
            finished.span("queue", span, self._wall(queued_ns), start)
        attributes: dict[str, Any] = {
            "gateway.model": model,
            "gateway.version": version,
            "gateway.batch.size": len(members),
            "gateway.batch.sampled": len(sampled),
        }
        batch = finished.span("batch", sampled[0], start, end, attributes, links=tuple(Link(span) for span in sampled))
        at = timing.started_ns
        for stage, seconds in (("decode", timing.decode), ("predict", timing.compute), ("encode", timing.encode)):
            began, at = at, min(at + int(seconds * 1e9), timing.ended_ns)
            finished.span(stage, batch, self._wall(began), self._wall(at))
        shared = (Link(batch, {"gateway.batch.role": "ran"}),)
        for span in sampled[1:]:
            finished.span("batch", span, start, end, attributes, links=shared)

    @staticmethod
    def _split_on_requests(members: list[Member], timing: BatchTiming) -> None:
        """GATEWAY_TRACING_SPANS=requests: the batch's times as attributes of each sampled
        request's own span (still open), instead of five spans more for each."""
        shared = {
            "gateway.batch.size": len(members),
            "gateway.batch.decode.seconds": timing.decode,
            "gateway.batch.predict.seconds": timing.compute,
            "gateway.batch.encode.seconds": timing.encode,
        }
        for member in members:
            if member.span is not None:
                member.span.set_attributes(
                    {**shared, "gateway.queue.seconds": max(timing.started_ns - member.queued_ns, 0) / 1e9}
                )

    def _wall(self, perf_ns: int) -> int:
        return perf_ns + self._wall_offset

    # --- background work ------------------------------------------------------------------

    @contextmanager
    def span(self, name: str, attributes: dict[str, Any] | None = None) -> Iterator[Span | None]:
        """A span around background work (a load, a warm-up, a sync pass, a build): an
        exception marks it failed and goes on. Nothing at all when tracing is off."""
        if self._tracer is None:
            yield None
            return
        with self._tracer.start_as_current_span(name, attributes=attributes, record_exception=True) as span:
            yield span


def exporter_protocol(environ: Mapping[str, str]) -> str:
    """``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL``, else ``OTEL_EXPORTER_OTLP_PROTOCOL``, else
    ``http/protobuf`` (the specification's default); anything else is refused by name."""
    for variable in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        value = environ.get(variable, "").strip().lower()
        if value:
            if value not in PROTOCOLS:
                raise TracingError(f"{variable}={value!r}: the gateway exports with {' or '.join(PROTOCOLS)}")
            return value
    return "http/protobuf"


def tracing_for(tracing: str, environ: Mapping[str, str] | None = None, *, spans: str = "all") -> Tracing:
    """GATEWAY_TRACING's tracer: off, or OTLP; GATEWAY_TRACING_SPANS says which spans a batch makes."""
    if tracing != "otlp":
        return Tracing.off()
    traced = Tracing.otlp(environ)
    traced.batch_spans = spans == "all"
    return traced
