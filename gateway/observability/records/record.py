"""What the request path hands to the recorder: the request as received and the answer as sent,
untouched (parsing, redaction and serialisation happen later, in the recorder's thread)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class InferenceRecord:
    """One served request. ``route_key`` is the raw route key: only its hash ever leaves the
    process. ``time`` is ``time.time()`` when the request arrived."""

    model: str
    version: int
    alias: str | None
    arm: str | None  # the route: "default", "canary", "shadow", "named" or None
    request_id: str
    route_key: str | None
    protocol: str  # "mlflow" (MLflow scoring), "oip" (Open Inference Protocol REST JSON) or "openai"
    media_type: str  # the request body's media type (application/json, text/csv, ...)
    request: bytes
    response: bytes
    status: int
    latency_seconds: float
    time: float
    trace_id: str | None = None  # 32 hex digits when tracing is on


@dataclass(frozen=True, slots=True)
class Exchange:
    """What a protocol adapter hands the data plane's seam (``Services.predict_finished``)
    about an answered request, for a record if it is sampled: the body and the answer as they
    crossed the wire, and the route key. ``answer_json`` turns an answer that is not JSON as
    sent into JSON, only for a sampled request (the OIP REST binary extension's answer)."""

    protocol: str
    media_type: str
    request: bytes
    response: bytes
    route_key: str | None = None
    answer_json: Callable[[bytes], bytes] | None = None
