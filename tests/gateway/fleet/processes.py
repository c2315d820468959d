"""A fleet in this test process: a sync and ``--role gateway`` replicas, each a whole app with
its lifespan, sharing one sqlite state database and artifact cache under a test's folder."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from gateway.app import create_app
from gateway.settings import GatewaySettings
from registry_sync.registry import RegistryReader
from tests.conftest import Gateway, Registry, settings_under

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


@asynccontextmanager
async def process(settings: GatewaySettings, registry: Registry) -> AsyncIterator[Gateway]:
    app = create_app(settings, reader=RegistryReader(tracking_uri=registry.tracking_uri))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://replica", timeout=60) as client:
            yield Gateway(client, app.state.services)
