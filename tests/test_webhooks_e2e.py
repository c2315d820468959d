"""MLflow's own webhooks drive the gateway: a real `mlflow server` signs and sends them.

The gateway polls hourly here, so when an alias moved in MLflow reaches the gateway within
seconds, only the webhook can have brought it.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from mlflow.entities.webhook import WebhookAction, WebhookEntity, WebhookEvent
from mlflow.tracking import MlflowClient

from gateway.demo import using_registry
from tests.support.models import Doubler, log_pyfunc
from tests.support.servers import Process, gateway_server, mlflow_server
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

NAME = "webhooked"
X = {"dataframe_records": [{"x": 2.0}]}
CACHE_TTL_SECONDS = 1  # how long the server caches its list of webhooks per event
REPO = Path(__file__).resolve().parents[1]


def webhook_env() -> dict[str, str]:
    """What a local `mlflow server` needs to send webhooks to a loopback http URL."""
    return {
        "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
        "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
        "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "MLFLOW_WEBHOOK_CACHE_TTL": str(CACHE_TTL_SECONDS),
    }


def test_an_alias_moved_in_mlflow_reaches_the_gateway_by_webhook(tmp_path: Path) -> None:
    secret = f"whsec-{uuid.uuid4().hex}"
    mlflow = mlflow_server(tmp_path / "mlflow", extra_env=webhook_env())
    mlflow.start()
    tracking_uri = mlflow.health_url.removesuffix("/health")
    gateway: Process | None = None
    try:
        with using_registry(tracking_uri) as registry:
            first, second = log_pyfunc(NAME, Doubler()), log_pyfunc(NAME, Doubler())
            registry.set_registered_model_alias(NAME, "champion", str(first))
        last_alias_event = time.monotonic()

        # The Doubler is pickled by reference to tests.support.models: the gateway must import it.
        pythonpath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
        gateway, base = gateway_server(
            tracking_uri=tracking_uri,
            workdir=tmp_path / "gateway",
            env={
                "GATEWAY_POLL_INTERVAL_SECONDS": "3600",
                "GATEWAY_WEBHOOK_SECRET": secret,
                "PYTHONPATH": pythonpath,
            },
        )
        gateway.start()  # warms champion (version 1) before it is ready

        client = MlflowClient(tracking_uri=tracking_uri)
        hook = client.create_webhook(
            name="registry-gateway",
            url=f"{base}/webhooks/mlflow",
            events=[
                WebhookEvent(WebhookEntity.MODEL_VERSION_ALIAS, WebhookAction.CREATED),
                WebhookEvent(WebhookEntity.MODEL_VERSION_ALIAS, WebhookAction.DELETED),
            ],
            secret=secret,
        )
        # MLflow's test delivery: signed by the server with the stored secret; the gateway takes it.
        probe = client.test_webhook(hook.webhook_id)
        assert probe.success and probe.response_status == 202, (probe.response_status, probe.response_body)

        with httpx.Client(base_url=base, timeout=30) as http:

            def served_version() -> str:
                response = http.post(f"/models/{NAME}/predict", json=X)
                assert response.status_code == 200, response.text  # the old version serves during the swap
                assert response.json() == {"predictions": [4.0]}
                return response.headers["x-model-version"]

            assert served_version() == str(first)
            # The server cached "no webhooks" for alias events when champion was first set.
            wait_until(
                lambda: time.monotonic() - last_alias_event > CACHE_TTL_SECONDS + 0.5,
                timeout=CACHE_TTL_SECONDS + 5,
                what="the server's webhook cache to expire",
            )

            client.set_registered_model_alias(NAME, "champion", str(second))
            wait_until(
                lambda: served_version() == str(second),
                timeout=30,
                interval=0.2,
                what=f"{NAME}@champion to serve version {second}",
            )

            def swap_events() -> list[dict[str, Any]]:
                events: list[dict[str, Any]] = http.get("/events", params={"model": NAME}).json()["events"]
                return [e for e in events if e["kind"] == "swapped" and e["alias"] == "champion"]

            # The swap serves the new version first and records its event just after (a write
            # to the state database in a thread): wait for the record, not only the answer.
            wait_until(
                lambda: [e["version"] for e in swap_events()][:1] == [second],
                timeout=10,
                interval=0.1,
                what=f"the swap to version {second} in the event history",
            )
            events: list[dict[str, Any]] = http.get("/events", params={"model": NAME}).json()["events"]
            swapped = swap_events()
            assert swapped[0]["version"] == second
            assert swapped[0]["reason"] == f"champion {first} -> {second}"
            moved = [e for e in events if e["kind"] == "alias_set" and e["version"] == second]
            assert len(moved) == 1
            assert moved[0]["actor"].endswith(":webhook model_version_alias.created")
            assert moved[0]["reason"] == f"champion {first} -> {second}"
            detail = http.get(f"/models/{NAME}").json()
            assert detail["aliases"] == detail["registry_aliases"] == {"champion": second}
    finally:
        if gateway is not None:
            gateway.stop()
        mlflow.stop()
