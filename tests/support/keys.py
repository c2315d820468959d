"""API keys (and quotas) for tests: made in the state database as ``registry-gateway keys
create`` (``quotas set``) makes them, and a gateway whose reader counts its registry reads."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from gateway.app import create_app
from gateway.settings import GatewaySettings
from registry_sync.database import make_engine, upgrade
from registry_sync.keys import KeyStore, Scopes
from registry_sync.quotas import Quota, QuotaStore
from tests.conftest import Gateway, Registry
from tests.gateway.test_roles import CountingReader


def add_key(settings: GatewaySettings, name: str, scopes: str, **limits: Any) -> str:
    """A key in the settings' state database (upgraded first, as `keys create` does); its secret."""
    engine = make_engine(settings.database_url)
    try:
        upgrade(engine)
        _, secret = KeyStore(engine).create(
            name, Scopes.parse(scopes), rate=limits.get("rate"), concurrency=limits.get("concurrency"), actor="test"
        )
        return secret
    finally:
        engine.dispose()


def revoke_key(settings: GatewaySettings, name: str) -> None:
    engine = make_engine(settings.database_url)
    try:
        KeyStore(engine).revoke(name, actor="test")
    finally:
        engine.dispose()


def add_quota(settings: GatewaySettings, quota: Quota) -> None:
    """A quota in the settings' state database, as ``registry-gateway quotas set`` makes it."""
    engine = make_engine(settings.database_url)
    try:
        QuotaStore(engine).put(quota, actor="test")
    finally:
        engine.dispose()


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@asynccontextmanager
async def keyed_gateway(settings: GatewaySettings, registry: Registry) -> AsyncIterator[tuple[Gateway, CountingReader]]:
    reader = CountingReader(registry.tracking_uri)
    app = create_app(settings, reader=reader)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway", timeout=60) as client:
            yield Gateway(client, app.state.services), reader
