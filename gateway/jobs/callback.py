"""Tell a job's callback URL that the job ended: one POST of the job's state, signed as MLflow
signs its webhooks (registry_sync.webhooks.sign: HMAC-SHA256 over ``<id>.<timestamp>.<body>``
with GATEWAY_JOBS_CALLBACK_SECRET), so the receiver checks it with the code that checks
MLflow's. Headers: ``X-Gateway-Delivery-Id``, ``X-Gateway-Timestamp``, ``X-Gateway-Signature``.

Sent by the process that ended the job (its last chunk, a cancel), a few times with backoff
while the receiver fails; then given up and logged. A process that dies between the end and
the POST sends none (at most once): the job's state stays readable at ``GET /jobs/<id>``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time

import httpx
import orjson
from pydantic import SecretStr

from registry_sync.webhooks import sign

log = logging.getLogger(__name__)

_TRIES = 3
_TIMEOUT_SECONDS = 10.0


class Callbacks:
    def __init__(self, secret: SecretStr | None, *, first_backoff: float = 1.0) -> None:
        self._secret = secret
        self._backoff = first_backoff

    def headers(self, body: bytes) -> dict[str, str]:
        delivery, timestamp = secrets.token_hex(16), str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "X-Gateway-Delivery-Id": delivery,
            "X-Gateway-Timestamp": timestamp,
        }
        if self._secret is not None:
            headers["X-Gateway-Signature"] = sign(self._secret.get_secret_value(), delivery, timestamp, body)
        return headers

    async def send(self, url: str, document: dict[str, object]) -> bool:
        """True once the receiver answered 2xx."""
        body = orjson.dumps(document)
        delay = self._backoff
        async with httpx.AsyncClient(timeout=_TIMEOUT_SECONDS) as client:
            for attempt in range(_TRIES):
                try:
                    answer = await client.post(url, content=body, headers=self.headers(body))
                    if answer.is_success:
                        return True
                    problem = f"answered {answer.status_code}"
                except httpx.HTTPError as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                if attempt + 1 < _TRIES:
                    await asyncio.sleep(delay)
                    delay *= 2
        log.warning("job callback to %s failed %d times (last: %s); not sent", url, _TRIES, problem)
        return False
