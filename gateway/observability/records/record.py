"""What the request path hands to the recorder: the request as received and the answer as sent,
untouched (parsing, redaction and serialisation happen later, in the recorder's thread); and
what every sink raises when a write does not land (:class:`SinkFailed`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class InferenceRecord:
    """One served request. ``route_key`` is the raw route key: only its hash ever leaves the
    process. ``time`` is ``time.time()`` when the request arrived. Never changed once made, but
    not frozen: a frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``,
    which made a sampled request's record take twice as long to make on the request path."""

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
    # For the inference tables (``tables.py``); the CloudEvents sinks ignore them.
    route: str | None = None  # the path asked for (``/models/iris/versions/champion/predict``)
    error_code: str | None = None  # the error answer's code (``BAD_REQUEST``); None when answered
    error: str | None = None  # the condition that failed it, by name (``ModelRaised``)
    key_id: str | None = None  # the API key's name, never its secret; None without keys
    queue_seconds: float | None = None  # its wait in its version's queue, when it queued
    predict_seconds: float | None = None  # its batch's own predict (shared by the batch)
    signature: Any = None  # the version's ModelSignature, for typed columns (None: none logged)


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
    error_code: str | None = None  # a failed request's: the error answer's code (its body is not kept)


@dataclass(frozen=True, slots=True)
class LabelRecord:
    """A label for a request answered earlier (ground truth), for the inference tables'
    ``labels``: handed over by the feedback code through ``Recorder.offer_labels``. ``label``
    is any JSON value (the shape of one output row); ``row`` the index of the answer's row it is
    for (0 for a one-row answer); ``received_at`` is ``time.time()``."""

    request_id: str
    model: str
    version: str
    label: Any
    received_at: float
    row: int = 0


class SinkFailed(Exception):
    """A write that did not (entirely) land; ``written`` of its events did, in order. ``lost``:
    records of earlier writes given up for good (a table sink's file that could not be uploaded)."""

    def __init__(self, message: str, *, written: int = 0, lost: int = 0) -> None:
        super().__init__(message)
        self.written = written
        self.lost = lost
