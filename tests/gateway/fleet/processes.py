"""A fleet in this test process: a sync and ``--role gateway`` replicas, each a whole app with
its lifespan, sharing one sqlite state database and artifact cache under a test's folder."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

from gateway.settings import GatewaySettings
from tests.conftest import Gateway, Registry, running_gateway, settings_under

ADMIN = {"Authorization": "Bearer t0ken"}


def fleet_settings(root: Path, replica: str, role: str, **overrides: Any) -> GatewaySettings:
    values: dict[str, Any] = {
        "replica_id": replica,
        "role": role,
        "warm_aliases": ["champion"],
        "follow_interval_seconds": 0.1,
        "heartbeat_seconds": 0.2,
        "admin_token": "t0ken",
    }
    return settings_under(root, **(values | overrides))


def process(settings: GatewaySettings, registry: Registry) -> AbstractAsyncContextManager[Gateway]:
    """One process of the fleet: the app with its lifespan, and an in-process client."""
    return running_gateway(settings, registry.tracking_uri)
