"""A job's callback whose receiver is down when the job ends: re-sent with backoff by the
gateway's sweep until the receiver, a real HTTP server started later, takes it; signed, with
the delivery id that is the same on every delivery of one job's end."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import HTTPServer

import orjson
import pytest
from sqlalchemy import select

from gateway.demo import IRIS
from gateway.settings import GatewaySettings
from registry_sync.state import JobRow
from registry_sync.webhooks import sign
from tests.conftest import Registry, iris_split, running_gateway
from tests.gateway.jobs.test_jobs import JOB_SETTINGS, ended
from tests.support.callback_receiver import callback_receiver
from tests.support.servers import free_port
from tests.support.waiting import until

pytestmark = pytest.mark.anyio


async def test_a_callback_whose_receiver_was_down_is_re_sent_until_it_is_taken(
    sqlite_registry: Registry, make_settings: Callable[..., GatewaySettings]
) -> None:
    receiver = callback_receiver()
    port = free_port()
    url = f"http://127.0.0.1:{port}/hooks"  # nothing listens there yet
    settings = make_settings(
        jobs_callback_secret="s3cret", jobs_callback_backoff_seconds=0.2, jobs_callback_attempts=1000, **JOB_SETTINGS
    )
    server: HTTPServer | None = None
    try:
        async with running_gateway(settings, sqlite_registry.tracking_uri) as gateway:
            engine = gateway.services.jobs.store.engine

            def deliveries() -> int:
                with engine.connect() as connection:
                    return int(connection.scalar(select(JobRow.callback_attempts).where(JobRow.id == job_id)) or 0)

            body = {"request": iris_split([[5.1, 3.5, 1.4, 0.2]]), "callback": url}
            submitted = await gateway.client.post(f"/models/{IRIS}/jobs", json=body)
            assert submitted.status_code == 202, submitted.text
            job_id = submitted.json()["id"]
            assert (await ended(gateway, job_id))["state"] == "succeeded"
            await until(lambda: deliveries() >= 3, "the first delivery and two re-sends to fail", timeout=60)
            server = HTTPServer(("127.0.0.1", port), receiver)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            await until(receiver.arrived.is_set, "the callback, once the receiver is up", timeout=60)

            def notified() -> bool:
                with engine.connect() as connection:
                    return bool(connection.scalar(select(JobRow.notified).where(JobRow.id == job_id)))

            await until(notified, "the delivery recorded as taken", timeout=30)
    finally:
        if server is not None:
            server.shutdown()
    headers, sent = receiver.received[0]
    assert headers["x-gateway-delivery-id"] == f"{job_id}-succeeded"  # what the receiver de-duplicates on
    assert int(headers["x-gateway-delivery-attempt"]) >= 3  # claims 1 and 2 failed, or 3 was never due
    assert headers["x-gateway-signature"] == sign("s3cret", f"{job_id}-succeeded", headers["x-gateway-timestamp"], sent)
    assert (orjson.loads(sent)["id"], orjson.loads(sent)["state"]) == (job_id, "succeeded")
