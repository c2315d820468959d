"""MLflow model-registry webhooks: verify the signature, read the payload.

MLflow (>= 3.3) signs ``"<delivery id>.<timestamp>.<raw body>"`` with HMAC-SHA256 and
the webhook's secret, base64-encodes it and sends ``X-MLflow-Signature: v1,<base64>``.
A webhook is only a hint to sync a model now; the poller stays the source of truth.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from registry_sync.errors import RegistryError

TOLERANCE_SECONDS = 300


class WebhookRejected(RegistryError):
    """The delivery is not provably MLflow's (401)."""


class WebhookMalformed(RegistryError):
    """Signed, but not a model-registry payload we can read (400)."""


@dataclass(frozen=True, slots=True)
class Delivery:
    delivery_id: str
    timestamp: int
    entity: str
    action: str
    data: dict[str, Any]

    @property
    def model_name(self) -> str | None:
        name = self.data.get("name")
        return name if isinstance(name, str) and name else None


def sign(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    payload = f"{delivery_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), payload, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(secret: str, headers: Mapping[str, str], body: bytes, *, now: float | None = None) -> Delivery:
    """The delivery, if its signature and timestamp hold; raises otherwise."""
    delivery_id = headers.get("x-mlflow-delivery-id")
    timestamp = headers.get("x-mlflow-timestamp")
    signature = headers.get("x-mlflow-signature")
    if not delivery_id or not timestamp or not signature:
        missing = [
            h
            for h, v in (
                ("X-MLflow-Delivery-Id", delivery_id),
                ("X-MLflow-Timestamp", timestamp),
                ("X-MLflow-Signature", signature),
            )
            if not v
        ]
        raise WebhookRejected(f"missing {', '.join(missing)}")
    if len(delivery_id) > 64:
        raise WebhookRejected("X-MLflow-Delivery-Id is longer than 64 characters")
    expected = sign(secret, delivery_id, timestamp, body)
    if not hmac.compare_digest(expected.encode(), signature.strip().encode()):
        raise WebhookRejected("X-MLflow-Signature does not match the body (wrong secret, or altered in transit)")
    try:
        sent_at = int(timestamp)
    except ValueError:
        raise WebhookRejected(f"X-MLflow-Timestamp '{timestamp}' is not unix seconds") from None
    skew = (time.time() if now is None else now) - sent_at
    if abs(skew) > TOLERANCE_SECONDS:
        raise WebhookRejected(f"X-MLflow-Timestamp is {abs(skew):.0f} s off (more than {TOLERANCE_SECONDS} s)")
    return _parse(delivery_id, sent_at, body)


def _parse(delivery_id: str, timestamp: int, body: bytes) -> Delivery:
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise WebhookMalformed(f"body is not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise WebhookMalformed("body must be a JSON object")
    entity, action, data = document.get("entity"), document.get("action"), document.get("data")
    if not isinstance(entity, str) or not isinstance(action, str) or not isinstance(data, dict):
        raise WebhookMalformed("body needs 'entity' and 'action' strings and a 'data' object")
    return Delivery(delivery_id, timestamp, entity, action, data)
