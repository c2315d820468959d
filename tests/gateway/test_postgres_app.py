"""The whole gateway on a PostgreSQL state database (the setting for many replicas)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from gateway.settings import GatewaySettings
from registry_sync.database import SchemaOutdated, make_engine, upgrade
from tests.conftest import Registry, running_gateway
from tests.support.models import Doubler, log_pyfunc
from tests.support.postgres import postgres_database
from tests.support.versions import loaded

pytestmark = pytest.mark.anyio

X = {"dataframe_records": [{"x": 2.0}]}
ADMIN = {"Authorization": "Bearer t0ken"}


async def test_sync_swap_and_restart_on_postgresql(
    sqlite_registry: Registry, make_settings: Callable[..., GatewaySettings]
) -> None:
    name = "on-postgres"
    first, second = (sqlite_registry.log(log_pyfunc, name, Doubler()) for _ in range(2))
    sqlite_registry.client.set_registered_model_alias(name, "champion", str(first))
    with postgres_database() as url:
        settings = make_settings(database_url=url, warm_aliases=["champion"], admin_token="t0ken")
        with pytest.raises(SchemaOutdated, match="registry-gateway db upgrade"):
            async with running_gateway(settings, sqlite_registry.tracking_uri):
                pass  # not upgraded: refuses to start
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        async with running_gateway(settings, sqlite_registry.tracking_uri) as gateway:
            answer = await gateway.client.post(f"/models/{name}/predict", json=X)
            assert (answer.status_code, answer.headers["x-model-version"]) == (200, str(first))
            sqlite_registry.client.set_registered_model_alias(name, "champion", str(second))
            assert (await gateway.client.post("/admin/sync", params={"model": name}, headers=ADMIN)).status_code == 200
            answer = await gateway.client.post(f"/models/{name}/predict", json=X)
            assert answer.headers["x-model-version"] == str(second)
            kinds = [e["kind"] for e in (await gateway.client.get("/events", params={"model": name})).json()["events"]]
            assert kinds[0] == "swapped" and "alias_set" in kinds and "verified" in kinds
            metrics = gateway.services.metrics.registry
            assert (metrics.get_sample_value("gateway_sync_runs_total", {"outcome": "success"}) or 0) >= 2
            assert (metrics.get_sample_value("gateway_sync_last_success_age_seconds") or 1e9) < 600
        async with running_gateway(settings, sqlite_registry.tracking_uri) as restarted:
            assert loaded(restarted.services.cache, name, second) is not None  # warm before ready
            answer = await restarted.client.post(f"/models/{name}/predict", json=X)
            assert (answer.status_code, answer.headers["x-model-version"]) == (200, str(second))
