"""``POST /admin/sync`` answers once the fleet serves the new version: asked of the sync
process (as through a balancer), it waits until each gateway replica that holds the model
reports its warm alias at the new target in the state database (gateway.fleet.catchup), so
the very next predict on either replica answers the new version."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Registry, empty_registry
from tests.gateway.fleet.processes import ADMIN, fleet_settings, process
from tests.support.models import Doubler, Scaler, log_pyfunc

pytestmark = pytest.mark.anyio

X = {"dataframe_records": [{"x": 1.5}]}


async def test_an_admin_sync_answers_once_every_replica_holding_the_model_serves_the_new_version(
    tmp_path: Path,
) -> None:
    registry: Registry = empty_registry(tmp_path / "registry")
    first = registry.log(log_pyfunc, "moved", Doubler())
    registry.client.set_registered_model_alias("moved", "champion", str(first))
    # Replicas that look at the database once a second: a sync that answered at once would be
    # answered before they moved (the 0.9 s).
    timing = {"heartbeat_seconds": 1.0}
    replica = {"follow_interval_seconds": 1.0, **timing}
    async with (
        process(fleet_settings(tmp_path, "sync:8001", "sync", **timing), registry) as sync,
        process(fleet_settings(tmp_path, "g1:8000", "gateway", **replica), registry) as g1,
        process(fleet_settings(tmp_path, "g2:8000", "gateway", **replica), registry) as g2,
    ):
        assert (await sync.client.post("/admin/sync", headers=ADMIN)).json()["fleet_behind"] == []
        for gateway in (g1, g2):
            await gateway.services.catalog.refresh()
            response = await gateway.client.post("/models/moved/predict", json=X)
            assert response.status_code == 200 and response.headers["x-model-version"] == str(first)
        second = registry.log(log_pyfunc, "moved", Scaler(3.0))
        registry.client.set_registered_model_alias("moved", "champion", str(second))
        answer = await sync.client.post("/admin/sync?model=moved", headers=ADMIN)
        assert answer.status_code == 200, answer.text
        assert answer.json()["alias_moves"] == 1 and answer.json()["fleet_behind"] == []
        for gateway in (g1, g2):
            response = await gateway.client.post("/models/moved/predict", json=X)
            assert response.status_code == 200, response.text
            assert response.headers["x-model-version"] == str(second)
            assert response.json() == {"predictions": [4.5]}


async def test_a_replica_that_does_not_move_in_time_is_named_not_waited_for_past_the_bound(tmp_path: Path) -> None:
    registry: Registry = empty_registry(tmp_path / "registry")
    first = registry.log(log_pyfunc, "stuck", Doubler())
    registry.client.set_registered_model_alias("stuck", "champion", str(first))
    timing = {"heartbeat_seconds": 1.0}
    async with (
        process(fleet_settings(tmp_path, "sync:8001", "sync", **timing), registry) as sync,
        # it follows the database once an hour: it will not move within the sync's bound
        process(
            fleet_settings(tmp_path, "slow:8000", "gateway", follow_interval_seconds=3600, **timing), registry
        ) as slow,
    ):
        assert (await sync.client.post("/admin/sync", headers=ADMIN)).status_code == 200
        await slow.services.catalog.refresh()
        assert (await slow.client.post("/models/stuck/predict", json=X)).status_code == 200
        await slow.services.membership.report()
        second = registry.log(log_pyfunc, "stuck", Scaler(3.0))
        registry.client.set_registered_model_alias("stuck", "champion", str(second))
        answer = await sync.client.post("/admin/sync?model=stuck&fleet_timeout=0.5", headers=ADMIN)
        assert answer.status_code == 200, answer.text
        assert answer.json()["fleet_behind"] == [
            f"slow:8000: stuck@champion not at version {second} yet (serving {first})"
        ]
