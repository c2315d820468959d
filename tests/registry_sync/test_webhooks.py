"""Webhook signatures and payloads, as MLflow sends them; no server, no clock."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import httpx
import pytest

from registry_sync.webhooks import TOLERANCE_SECONDS, Delivery, WebhookMalformed, WebhookRejected, sign, verify

SECRET = "s3cret"
DELIVERY_ID = "0b9c4a5e-1f2d-4c3b-9a8e-7d6f5e4c3b2a"
NOW = 1_760_000_000
BODY = json.dumps(
    {
        "entity": "model_version_alias",
        "action": "created",
        "timestamp": "2025-10-09T08:53:20+00:00",
        "data": {"name": "iris", "alias": "champion", "version": "2"},
    }
).encode()


def mlflow_signature(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """Computed here the way MLflow's webhook delivery does, not with the code under test."""
    content = f"{delivery_id}.{timestamp}.{body.decode('utf-8')}"
    digest = hmac.new(secret.encode("utf-8"), content.encode("utf-8"), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("utf-8")


def headers(
    body: bytes = BODY,
    *,
    secret: str = SECRET,
    delivery_id: str = DELIVERY_ID,
    timestamp: str = str(NOW),
    drop: str | None = None,
) -> httpx.Headers:
    """The three headers with MLflow's spelling; case-insensitive, like a request's."""
    values = {
        "X-MLflow-Delivery-Id": delivery_id,
        "X-MLflow-Timestamp": timestamp,
        "X-MLflow-Signature": mlflow_signature(secret, delivery_id, timestamp, body),
    }
    if drop is not None:
        del values[drop]
    return httpx.Headers(values)


def test_accepts_a_body_signed_as_mlflow_signs_it() -> None:
    delivery = verify(SECRET, headers(), BODY, now=NOW)
    assert delivery == Delivery(
        delivery_id=DELIVERY_ID,
        timestamp=NOW,
        entity="model_version_alias",
        action="created",
        data={"name": "iris", "alias": "champion", "version": "2"},
    )
    assert delivery.model_name == "iris"


def test_sign_agrees_with_mlflow_signing() -> None:
    assert sign(SECRET, DELIVERY_ID, str(NOW), BODY) == mlflow_signature(SECRET, DELIVERY_ID, str(NOW), BODY)


def test_accepts_non_ascii_bodies_signed_over_utf8() -> None:
    body = json.dumps(
        {"entity": "registered_model", "action": "created", "data": {"name": "modèle-🚀"}}, ensure_ascii=False
    ).encode("utf-8")
    assert verify(SECRET, headers(body), body, now=NOW).model_name == "modèle-🚀"


def test_accepts_lowercase_header_names_as_a_proxy_may_send_them() -> None:
    lowered = {key.lower(): value for key, value in headers().items()}
    assert verify(SECRET, lowered, BODY, now=NOW).delivery_id == DELIVERY_ID


def test_rejects_a_wrong_secret() -> None:
    with pytest.raises(WebhookRejected, match="does not match"):
        verify(SECRET, headers(secret="not-the-secret"), BODY, now=NOW)


@pytest.mark.parametrize("position", [0, len(BODY) // 2, len(BODY) - 1])
def test_rejects_a_body_altered_by_one_byte(position: int) -> None:
    altered = bytearray(BODY)
    altered[position] ^= 0x01
    with pytest.raises(WebhookRejected, match="does not match"):
        verify(SECRET, headers(), bytes(altered), now=NOW)


def test_rejects_a_signature_over_another_delivery_id_or_timestamp() -> None:
    signed = headers()
    replayed = httpx.Headers({**signed, "X-MLflow-Delivery-Id": "another-id"})
    with pytest.raises(WebhookRejected, match="does not match"):
        verify(SECRET, replayed, BODY, now=NOW)
    shifted = httpx.Headers({**signed, "X-MLflow-Timestamp": str(NOW + 1)})
    with pytest.raises(WebhookRejected, match="does not match"):
        verify(SECRET, shifted, BODY, now=NOW)


@pytest.mark.parametrize("header", ["X-MLflow-Delivery-Id", "X-MLflow-Timestamp", "X-MLflow-Signature"])
def test_rejects_a_missing_header_and_names_it(header: str) -> None:
    with pytest.raises(WebhookRejected, match=f"missing {header}"):
        verify(SECRET, headers(drop=header), BODY, now=NOW)


def test_rejects_empty_headers() -> None:
    with pytest.raises(WebhookRejected, match="missing X-MLflow-Delivery-Id, X-MLflow-Timestamp, X-MLflow-Signature"):
        verify(SECRET, {}, BODY, now=NOW)


@pytest.mark.parametrize("timestamp", ["yesterday", "1760000000.5", "0x68e77a00"])
def test_rejects_a_timestamp_that_is_not_integer_unix_seconds(timestamp: str) -> None:
    # Correctly signed over that timestamp: only the timestamp itself is wrong.
    with pytest.raises(WebhookRejected, match="is not unix seconds"):
        verify(SECRET, headers(timestamp=timestamp), BODY, now=NOW)


@pytest.mark.parametrize("offset", [-(TOLERANCE_SECONDS + 1), TOLERANCE_SECONDS + 1, -86_400, 86_400])
def test_rejects_a_timestamp_too_far_from_now(offset: int) -> None:
    sent = str(NOW + offset)
    with pytest.raises(WebhookRejected, match="off"):
        verify(SECRET, headers(timestamp=sent), BODY, now=NOW)


@pytest.mark.parametrize("offset", [-(TOLERANCE_SECONDS - 1), TOLERANCE_SECONDS - 1, -TOLERANCE_SECONDS, 0])
def test_accepts_a_timestamp_within_the_tolerance(offset: int) -> None:
    sent = str(NOW + offset)
    assert verify(SECRET, headers(timestamp=sent), BODY, now=NOW).timestamp == NOW + offset


def test_tolerance_is_five_minutes() -> None:
    assert TOLERANCE_SECONDS == 300


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"\xff\xfe\x00",
        b"",
        b'[{"entity": "model_version", "action": "created", "data": {}}]',
        b'"a string"',
        b"null",
        b'{"action": "created", "data": {"name": "iris"}}',
        b'{"entity": "model_version", "data": {"name": "iris"}}',
        b'{"entity": "model_version", "action": "created"}',
        b'{"entity": "model_version", "action": "created", "data": ["iris"]}',
        b'{"entity": 1, "action": "created", "data": {"name": "iris"}}',
        b'{"entity": "model_version", "action": null, "data": {"name": "iris"}}',
    ],
    ids=[
        "not-json",
        "not-utf8",
        "empty",
        "json-list",
        "json-string",
        "json-null",
        "no-entity",
        "no-action",
        "no-data",
        "data-not-object",
        "entity-not-string",
        "action-null",
    ],
)
def test_a_signed_but_malformed_payload_is_malformed_not_rejected(body: bytes) -> None:
    signed = headers(body) if body.isascii() else _raw_headers(body)
    with pytest.raises(WebhookMalformed):
        verify(SECRET, signed, body, now=NOW)


def _raw_headers(body: bytes) -> dict[str, str]:
    """Headers for a body that is not UTF-8 (signed over the raw bytes, as verify() reads them)."""
    return {
        "x-mlflow-delivery-id": DELIVERY_ID,
        "x-mlflow-timestamp": str(NOW),
        "x-mlflow-signature": sign(SECRET, DELIVERY_ID, str(NOW), body),
    }


def test_a_malformed_payload_with_a_bad_signature_is_rejected_first() -> None:
    with pytest.raises(WebhookRejected):
        verify(SECRET, headers(b"not json", secret="wrong"), b"not json", now=NOW)


@pytest.mark.parametrize(
    ("data", "name"),
    [
        ({"name": "iris", "alias": "champion", "version": "2"}, "iris"),
        ({"name": "iris", "alias": "champion"}, "iris"),  # alias.deleted carries no version
        ({"name": ""}, None),
        ({"name": 7}, None),
        ({"name": None}, None),
        ({}, None),
    ],
)
def test_delivery_model_name(data: dict[str, object], name: str | None) -> None:
    assert Delivery(DELIVERY_ID, NOW, "model_version_alias", "deleted", data).model_name == name
