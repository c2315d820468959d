"""The request being served, for whatever runs in its task: its id, its start, its span, and
what served it once that is known (for the access log, the span and the inference record).

Set by the protocol edge (gateway.app for HTTP, gateway.protocols.oip_grpc for gRPC) around
everything the request's task does; read by the data plane's seams
(:meth:`gateway.process.Services.predict_finished`, the version queues) and by log filters.
Work in other tasks or threads (a batch, a load) does not see it: a batch serves many
requests, and carries their contexts itself.
"""

from __future__ import annotations

import time
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any

from gateway.observability.ids import random_bits

# Request ids a client sends are echoed and logged: printable ASCII only, and not too long
# (a log line is no place for a kilobyte of header).
MAX_REQUEST_ID = 128
REQUEST_ID_HEADER = b"x-request-id"


@dataclass(slots=True, eq=False)
class RequestContext:
    request_id: str
    started: float  # time.perf_counter() when the request arrived
    time: float  # time.time() then
    span: Any = None  # the request's OpenTelemetry span, when tracing is on
    route: str | None = None  # the predict route's template, for the span's name
    model: str | None = None
    version: int | None = None
    arm: str | None = None  # the route that chose the version: default, canary, named, ...
    status: int | None = None  # the HTTP status of an error answered outside HTTP (a gRPC abort)
    path: str | None = None  # the path asked for, for the inference tables' ``route``
    key_id: str | None = None  # the API key's name, once the gate identified one
    # The latency split, set by the version queue once its batch ran (the inference tables'):
    queue_seconds: float | None = None  # its wait in the queue
    predict_seconds: float | None = None  # the batch's own predict
    recorded: bool = False  # its inference record was sampled (its shadows are recorded too)
    rows: int = 0  # its input rows, where it decoded to a frame or an array (usage)
    tokens: int = 0  # the tokens its OpenAI answer reported (usage.total_tokens)
    quotas: Any = None  # the quotas the gate checked it against (gateway.admission.quotas), counted once answered

    trace_id: str | None = None  # 32 hex digits, while a sampled span records the request

    def traced(self, span: Any) -> None:
        """The request's span and trace id, when the span is sampled (a trace that can be
        looked up). None (sampled out before any span was made) or one sampled out by the
        SDK leaves the request untraced: nothing names, fills or ends a span for it."""
        if span is not None and span.is_recording():
            self.span = span
            self.trace_id = format(span.get_span_context().trace_id, "032x")


_current: ContextVar[RequestContext | None] = ContextVar("gateway_request", default=None)


def current() -> RequestContext | None:
    return _current.get()


def enter(context: RequestContext) -> Token[RequestContext | None]:
    return _current.set(context)


def leave(token: Token[RequestContext | None]) -> None:
    _current.reset(token)


def new_request_id() -> str:
    """16 random hex digits: unique enough across replicas, cheaper than a uuid
    (:mod:`gateway.observability.ids` says where the bits come from, and why)."""
    return random_bits(64).to_bytes(8).hex()


def request_id_from(value: bytes | None) -> str:
    """The client's ``X-Request-ID`` when it is a sensible one (printable ASCII, at most
    :data:`MAX_REQUEST_ID` characters), else a new id."""
    if value and len(value) <= MAX_REQUEST_ID and value.isascii():
        text = value.decode("ascii")
        if text.isprintable() and text.strip() == text:
            return text
    return new_request_id()


def begin(request_id: bytes | None) -> RequestContext:
    return RequestContext(request_id_from(request_id), time.perf_counter(), time.time())
