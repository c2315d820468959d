"""A record as a CloudEvent (CloudEvents 1.0, through the SDK's maintained ``cloudevents.core``
API; ``cloudevents.v1`` is its deprecated compatibility layer for SDK 1.x code)."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any

from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from gateway.observability.ids import random_bits
from gateway.observability.records.record import InferenceRecord
from gateway.observability.records.redaction import base_media_type, recorded_inputs, recorded_outputs

EVENT_TYPE = "io.registry-gateway.inference.v1"
BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"

# Stateless: the SDK's JSON event format (structured mode, and the data of binary mode).
EVENT_FORMAT = JSONFormat()


def event_for(record: InferenceRecord, *, source: str, redact: Collection[str]) -> CloudEvent:
    """The event of one record; raises only if the record cannot be made into one at all."""
    inputs = recorded_inputs(record.request, media_type=record.media_type, protocol=record.protocol, redact=redact)
    outputs = recorded_outputs(record.response, redact=redact)
    data: dict[str, Any] = {
        "model": record.model,
        "version": record.version,
        "alias": record.alias,
        "arm": record.arm,
        "request_id": record.request_id,
        "route_key_hash": route_key_hash(record.route_key),
        "protocol": record.protocol,
        "media_type": base_media_type(record.media_type),
        "status": record.status,
        "latency_ms": round(record.latency_seconds * 1000, 3),
        "trace_id": record.trace_id,
        "inputs": inputs.value,
    }
    if inputs.omitted is not None:
        data["inputs_omitted"] = inputs.omitted
    data["outputs"] = outputs.value
    if outputs.omitted is not None:
        data["outputs_omitted"] = outputs.omitted
    attributes: dict[str, Any] = {
        "specversion": "1.0",
        "id": event_id(),
        "source": source,
        "type": EVENT_TYPE,
        "subject": f"{record.model}/versions/{record.version}",
        "time": datetime.fromtimestamp(record.time, UTC),
        "datacontenttype": "application/json",
        # Extension attributes (lower-case alphanumerics, as CloudEvents requires): what brokers
        # filter and route on without reading the data. No ``traceparent``: a record knows its
        # trace but not a span of it, and a made-up span id would point at nothing.
        "model": record.model,
        "modelversion": record.version,
        "requestid": record.request_id,
    }
    if record.arm is not None:
        attributes["arm"] = record.arm
    return CloudEvent(attributes, data)


def event_id() -> str:
    """A version-4 UUID from :mod:`gateway.observability.ids`, not ``uuid.uuid4()``, which reads
    ``os.urandom`` (a system call a record in the writer thread). An event's id must be unique
    for its source, not unpredictable."""
    return str(uuid.UUID(int=random_bits(128), version=4))


def route_key_hash(route_key: str | None) -> str | None:
    """The first 16 hex digits of the key's sha256: enough to group a caller's requests, and the
    raw key (often a user id) never leaves the process."""
    if route_key is None:
        return None
    return hashlib.sha256(route_key.encode("utf-8", errors="surrogatepass")).hexdigest()[:16]


def serialized(event: CloudEvent) -> bytes:
    """One event in the JSON structured format: a JSON object on one line."""
    return EVENT_FORMAT.write(event)


def serialized_batch(events: list[CloudEvent]) -> bytes:
    """Events in the JSON batch format: a JSON array of structured events."""
    return b"[" + b",".join(serialized(event) for event in events) + b"]"
