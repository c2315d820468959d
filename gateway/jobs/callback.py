"""Tell a job's callback URL that the job ended: a POST of the job's state, signed as MLflow
signs its webhooks (registry_sync.webhooks.sign: HMAC-SHA256 over ``<id>.<timestamp>.<body>``
with GATEWAY_JOBS_CALLBACK_SECRET), so the receiver checks it with the code that checks
MLflow's. Headers: ``X-Gateway-Delivery-Id`` (``<job id>-<state>``: the same on every
delivery of one job's end), ``X-Gateway-Delivery-Attempt`` (1, 2, ...), ``X-Gateway-Timestamp``,
``X-Gateway-Signature``.

Delivered at least once, by the fleet (:class:`CallbackDeliveries`): the process that ended
the job delivers at once; while the receiver is down or answers other than 2xx, each process's
sweep re-sends the deliveries that are due, with backoff (GATEWAY_JOBS_CALLBACK_BACKOFF_SECONDS,
doubled each time) up to GATEWAY_JOBS_CALLBACK_ATTEMPTS, then the callback is given up and
logged. Each delivery is claimed first in the state database (registry_sync/jobs/store.py:
one conditional UPDATE), so two replicas never send the same one; a process that dies mid-POST
holds its claim for the POST's timeout, then another re-sends. A receiver may see one job's end
twice (a 2xx lost on the way back, a sender killed after the POST): it de-duplicates on the
delivery id.
"""

from __future__ import annotations

import asyncio
import logging
import time

import anyio.to_thread
import httpx
import orjson
from pydantic import SecretStr

from gateway.jobs.views import job_document
from registry_sync.jobs.store import JobStore
from registry_sync.repository import StateUnavailable
from registry_sync.webhooks import sign

log = logging.getLogger(__name__)

_TIMEOUT_SECONDS = 10.0
_HOLD_SECONDS = _TIMEOUT_SECONDS + 5.0  # a claimed delivery is its sender's for this long
_LONGEST_SWEEP_WAIT = 30.0


class Callbacks:
    """One signed POST of a job's end."""

    def __init__(self, secret: SecretStr | None, *, timeout: float = _TIMEOUT_SECONDS) -> None:
        self._secret = secret
        self._timeout = timeout

    def headers(self, body: bytes, *, delivery: str, attempt: int) -> dict[str, str]:
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "X-Gateway-Delivery-Id": delivery,
            "X-Gateway-Delivery-Attempt": str(attempt),
            "X-Gateway-Timestamp": timestamp,
        }
        if self._secret is not None:
            headers["X-Gateway-Signature"] = sign(self._secret.get_secret_value(), delivery, timestamp, body)
        return headers

    async def post(self, url: str, body: bytes, *, delivery: str, attempt: int) -> str | None:
        """None once the receiver answered 2xx; otherwise what went wrong."""
        try:
            async with httpx.AsyncClient(timeout=self._timeout) as client:
                answer = await client.post(
                    url, content=body, headers=self.headers(body, delivery=delivery, attempt=attempt)
                )
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"
        return None if answer.is_success else f"answered {answer.status_code}"


class CallbackDeliveries:
    """Ended jobs' callbacks, delivered at least once by whichever process claims each delivery."""

    def __init__(self, store: JobStore, callbacks: Callbacks, *, attempts: int, backoff: float) -> None:
        self._store = store
        self._callbacks = callbacks
        self._attempts = attempts
        self._backoff = backoff
        # Often enough that a re-send is late by at most half its backoff (and 30 s).
        self.sweep_seconds = min(backoff / 2, _LONGEST_SWEEP_WAIT)

    async def deliver(self, job_id: str) -> bool:
        """Send the job's callback if a delivery is due and this process claims it; whether
        the receiver took it."""
        number = await anyio.to_thread.run_sync(
            lambda: self._store.claim_callback(job_id, attempts=self._attempts, hold=_HOLD_SECONDS)
        )
        if number is None:
            return False
        job = await anyio.to_thread.run_sync(self._store.job, job_id)
        url = job.spec.get("callback") if job is not None else None
        if job is None or not isinstance(url, str):
            return False
        body = orjson.dumps(job_document(job))
        problem = await self._callbacks.post(url, body, delivery=f"{job.id}-{job.state}", attempt=number)
        if problem is None:
            await anyio.to_thread.run_sync(self._store.mark_notified, job_id)
            return True
        again = await anyio.to_thread.run_sync(
            lambda: self._store.callback_failed(job_id, number, attempts=self._attempts, backoff=self._backoff)
        )
        if again:
            log.info("job %s callback to %s: delivery %d failed (%s); sent again later", job_id, url, number, problem)
        else:
            log.warning("job %s callback to %s failed %d times (last: %s); given up", job_id, url, number, problem)
        return False

    async def sweep(self) -> int:
        """Deliver every callback due now (re-sends, and first ones whose sender died); how many
        were taken."""
        taken = 0
        for job_id in await anyio.to_thread.run_sync(self._store.due_callbacks):
            taken += await self.deliver(job_id)
        return taken

    async def run(self) -> None:
        while True:
            try:
                await self.sweep()
            except StateUnavailable as exc:
                log.warning("job callbacks not swept now: %s", exc)
            await asyncio.sleep(self.sweep_seconds)
