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
them; a request's span (:class:`RequestSpan`) is the gateway's own while the request runs: its
ids, start and attributes in plain fields. Neither is an SDK span on the event loop. What the
loop hands the batch span processor at their end are these facts (a request's span, one
:class:`_BatchRan` for all of a batch's spans), and :class:`_Building`, the exporter behind the
processor, makes the finished spans (the SDK's ``ReadableSpan``, what processors are handed at a
span's end) in the processor's thread, a batch at a time, just before they are encoded. That
skips a live span's sampler call, locks and attribute checks (about 40 us of the ~55 a span
cost through ``start_span`` and ``end``) and keeps the rest off the loop: a sampled request's
spans cost the loop 11-15 us, not 36-37 (``bench/tracing_cost.py``). The trace flags and state of a
batch's spans are their parent's, as the parent-based sampler would have decided. The
processor's queue (``OTEL_BSP_MAX_QUEUE_SIZE``, ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE``) counts
these hand-overs: one a sampled request, one a batch with sampled requests in it (2k + 3 spans
for k of them); an export call still carries at most ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE`` spans.
An ended request span takes no more changes, as the SDK's: the export thread reads it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
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

from gateway.observability.ids import random_bits

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
class _Builder:
    """Makes finished spans (the SDK's ``ReadableSpan``, what span processors are handed at a
    span's end) with what they all carry: the provider's resource, the gateway's
    instrumentation scope, and span ids from the provider's generator."""

    resource: Resource
    scope: InstrumentationScope
    ids: IdGenerator

    def child(
        self,
        name: str,
        parent: SpanContext,
        start_ns: int,
        end_ns: int,
        attributes: dict[str, Any] | None = None,
        links: tuple[Link, ...] = (),
    ) -> ReadableSpan:
        """A span that began and ended at these (wall clock) times, under ``parent``: its trace,
        flags and state are the parent's, as the parent-based sampler would have decided."""
        context = SpanContext(
            parent.trace_id,
            self.ids.generate_span_id(),
            is_remote=False,
            trace_flags=parent.trace_flags,
            trace_state=parent.trace_state,
        )
        return self.span(name, context, parent, start_ns, end_ns, attributes, links)

    def span(
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
    ) -> ReadableSpan:
        return ReadableSpan(
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


class _Building(SpanExporter):
    """The exporter behind the gateway's batch span processor: the event loop hands the
    processor facts (a request's :class:`RequestSpan`, a batch's :class:`_BatchRan`), and their
    spans are made here, in the processor's thread, a few hundred at a time, just before they
    are encoded. Spans the SDK made (background work) pass through as they are."""

    def __init__(self, exporter: SpanExporter, builder: _Builder, most: int) -> None:
        self._exporter = exporter
        self._builder = builder
        self._most = most  # spans an export call carries at most (a batch's facts make many)

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        made: list[ReadableSpan] = []
        for item in spans:
            if isinstance(item, ReadableSpan):
                made.append(item)
            else:
                made.extend(item.readable(self._builder))
        result = SpanExportResult.SUCCESS
        for start in range(0, len(made), self._most):
            if self._exporter.export(made[start : start + self._most]) is not SpanExportResult.SUCCESS:
                result = SpanExportResult.FAILURE
        return result

    def shutdown(self) -> None:
        self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._exporter.force_flush(timeout_millis)


@dataclass(frozen=True, slots=True)
class _BatchRan:
    """One batch's spans before they are made (see :meth:`Tracing.batch_ran`): the sampled
    requests it served (their span contexts, and when each was queued), its size and timing
    (``perf_counter_ns``), and what turns those times into the wall clock's."""

    model: str
    version: int
    size: int
    queued: tuple[tuple[SpanContext, int], ...]
    timing: BatchTiming
    wall_offset: int

    @property
    def context(self) -> SpanContext:
        """What the batch span processor checks of what it is handed (sampled: a request's)."""
        return self.queued[0][0]

    def readable(self, build: _Builder) -> list[ReadableSpan]:
        timing, offset = self.timing, self.wall_offset
        start, end = timing.started_ns + offset, timing.ended_ns + offset
        made = [build.child("queue", span, queued_ns + offset, start) for span, queued_ns in self.queued]
        sampled = [span for span, _ in self.queued]
        attributes: dict[str, Any] = {
            "gateway.model": self.model,
            "gateway.version": self.version,
            "gateway.batch.size": self.size,
            "gateway.batch.sampled": len(sampled),
        }
        batch = build.child("batch", sampled[0], start, end, attributes, links=tuple(Link(span) for span in sampled))
        made.append(batch)
        assert batch.context is not None  # a finished span's, made just above
        at = timing.started_ns
        for stage, seconds in (("decode", timing.decode), ("predict", timing.compute), ("encode", timing.encode)):
            began, at = at, min(at + int(seconds * 1e9), timing.ended_ns)
            made.append(build.child(stage, batch.context, began + offset, at + offset))
        shared = (Link(batch.context, {"gateway.batch.role": "ran"}),)
        made.extend(build.child("batch", span, start, end, attributes, links=shared) for span in sampled[1:])
        return made


class RequestSpan:
    """A sampled request's server span while the request runs: what the callers of a live span
    use of it (its context, its name, attributes, a status, ``end``), kept in plain fields; at
    :meth:`end` (once) it is handed to the batch span processor as it is, and made a finished
    span in the processor's thread (:class:`_Building`)."""

    __slots__ = ("name", "_context", "_parent", "_start_ns", "_end_ns", "attributes", "_status", "_processor")
    KIND = SpanKind.SERVER

    def __init__(
        self,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        attributes: dict[str, Any],
        processor: SpanProcessor,
    ) -> None:
        self.name = name
        self._context = context
        self._parent = parent
        self._start_ns = time.time_ns()
        self._end_ns = 0
        self.attributes = attributes
        self._status: Status | None = None
        self._processor: SpanProcessor | None = processor

    @property
    def context(self) -> SpanContext:
        """What the batch span processor checks of what it is handed (sampled)."""
        return self._context

    def is_recording(self) -> bool:
        return self._processor is not None

    def get_span_context(self) -> SpanContext:
        return self._context

    # Once ended, the span is the export thread's to read: like the SDK's, it takes no more
    # changes (a batch that ran past its request's timeout ends after the request did).

    def update_name(self, name: str) -> None:
        if self._processor is not None:
            self.name = name

    def set_attribute(self, key: str, value: Any) -> None:
        if self._processor is not None:
            self.attributes[key] = value

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        if self._processor is not None:
            self.attributes.update(attributes)

    def set_status(self, status: Status) -> None:
        if self._processor is not None:
            self._status = status

    def end(self) -> None:
        processor, self._processor = self._processor, None
        if processor is None:
            return
        self._end_ns = time.time_ns()
        processor.on_end(cast(ReadableSpan, self))  # made one in the processor's thread (_Building)

    def readable(self, build: _Builder) -> list[ReadableSpan]:
        attributes = {key: value for key, value in self.attributes.items() if value is not None}
        return [
            build.span(
                self.name,
                self._context,
                self._parent,
                self._start_ns,
                self._end_ns,
                attributes,
                kind=self.KIND,
                status=self._status,
            )
        ]


class StreamSpan(RequestSpan):
    """A stream's span under its request's: open from the stream's start to its end (events
    sent, time to the first, how it ended as attributes); internal, not a server span."""

    __slots__ = ()
    KIND = SpanKind.INTERNAL


class Tracing:
    def __init__(
        self,
        tracer: Tracer | None = None,
        shutdown: Any = None,
        *,
        sampling: Sampling | None = None,
        processor: SpanProcessor | None = None,
        ids: IdGenerator | None = None,
    ) -> None:
        self._tracer = tracer
        self.batch_spans = True  # GATEWAY_TRACING_SPANS=all; False: the split as request attributes
        self._shutdown = shutdown
        self._processor = processor  # takes a request's and a batch's spans as facts (_Building)
        self._ids = ids
        self.enabled = tracer is not None
        self._sampling = sampling
        self._root_bound = sampling.root_bound if sampling is not None else None
        self._propagator = TraceContextTextMapPropagator()

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
        scope = InstrumentationScope(_SCOPE, "")  # what get_tracer(_SCOPE) gives its spans
        builder = _Builder(provider.resource, scope, ids)
        # an export carries at most as many spans as the processor's batches hold facts: one
        # size, read once, for both
        most = _export_batch_size(os.environ)
        processor = BatchSpanProcessor(_Building(exporter, builder, most or 512), max_export_batch_size=most)
        provider.add_span_processor(processor)
        return cls(provider.get_tracer(scope.name), provider.shutdown, sampling=sampling, processor=processor, ids=ids)

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
        if not carrier and self._root_bound is not None:  # most requests: decided here, in one call
            trace_id = self._root_id()
            return None if trace_id is None else self._start(name, carrier, attributes, trace_id)
        return self._start(name, carrier, attributes)

    def start_call(
        self, name: str, metadata: Iterable[tuple[str, Any]], attributes: dict[str, Any]
    ) -> RequestSpan | None:
        """The same for a gRPC call: the trace context comes in its metadata."""
        carrier = {key: value for key, value in metadata if key in ("traceparent", "tracestate")}
        return self._start(name, carrier, attributes)

    def _start(
        self, name: str, carrier: dict[str, str], attributes: dict[str, Any], drawn: int | None = None
    ) -> RequestSpan | None:
        """Sampled as the SDK's ``start_span`` samples a server span (the provider's sampler,
        the caller's context), or None; the span is the gateway's own (see the module).
        ``drawn``: a new trace's id that :meth:`_root_id` gave already."""
        assert self._sampling is not None and self._processor is not None and self._ids is not None
        context = self._propagator.extract(carrier) if carrier else None
        parent: SpanContext | None = get_current_span(context).get_span_context() if context else None
        if parent is not None and not parent.is_valid:
            parent = None  # a traceparent that does not parse: a trace of its own
        trace_state = None
        if parent is None:  # this request starts a trace
            root_id = drawn if drawn is not None else self._root_id()
            if root_id is None:
                return None
            trace_id = root_id
            if self._root_bound is None:
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
            self._ids.generate_span_id(),
            is_remote=False,
            trace_flags=TraceFlags(TraceFlags.SAMPLED),
            trace_state=trace_state,
        )
        return RequestSpan(name, own, parent, dict(attributes), self._processor)

    def _root_id(self) -> int | None:
        """A new trace's id, or None where the ratio's bound samples it out: the test
        ``TraceIdRatioBased`` makes, before anything is made."""
        trace_id = random_bits(128) or 1
        if self._root_bound is not None and trace_id & TraceIdRatioBased.TRACE_ID_LIMIT >= self._root_bound:
            return None
        return trace_id

    def start_stream(self, request: RequestSpan, attributes: dict[str, Any]) -> StreamSpan | None:
        """A stream's span, a child of its (sampled) request's; the caller ends it."""
        if self._processor is None or self._ids is None:
            return None
        parent = request.get_span_context()
        own = SpanContext(
            parent.trace_id,
            self._ids.generate_span_id(),
            is_remote=False,
            trace_flags=parent.trace_flags,
            trace_state=parent.trace_state,
        )
        return StreamSpan("stream", own, parent, dict(attributes), self._processor)

    @staticmethod
    def end_request(span: RequestSpan, status: int, *, server_error: bool, attributes: dict[str, Any]) -> None:
        span.set_attributes(attributes)
        span.set_attribute("http.response.status_code", status)
        if server_error:
            span.set_status(Status(StatusCode.ERROR))
        span.end()

    # --- batches --------------------------------------------------------------------------

    def batch_ran(self, *, model: str, version: int, members: list[Member], timing: BatchTiming) -> None:
        """The spans of one batch, from the times it took: handed to the processor as one
        :class:`_BatchRan`, and made in its thread (see the module)."""
        assert self._processor is not None
        if not self.batch_spans:
            self._split_on_requests(members, timing)
            return
        queued = tuple((m.span.get_span_context(), m.queued_ns) for m in members if m.span is not None)
        if queued:
            # perf_counter_ns -> the wall clock's ns, taken now: a clock stepped since start
            # would put the batch's spans apart from its requests' (time_ns at their start)
            wall_offset = time.time_ns() - time.perf_counter_ns()
            ran = _BatchRan(model, version, len(members), queued, timing, wall_offset)
            self._processor.on_end(cast(ReadableSpan, ran))  # made spans in the processor's thread (_Building)

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


def _export_batch_size(environ: Mapping[str, str]) -> int | None:
    """``OTEL_BSP_MAX_EXPORT_BATCH_SIZE`` (512 unset), for the batch span processor to check;
    None when it is not a whole number (the processor then logs that and takes 512)."""
    try:
        return int(environ.get("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "512"))
    except ValueError:
        return None


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
