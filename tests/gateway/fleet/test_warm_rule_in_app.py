"""Warm what you serve, on whole gateways in this process (gateway.fleet.warming): what each
loads before it is ready, which alias moves it follows, what a first request takes over, and
what a restart warms again. Several "replicas" share one sqlite state database and a real
registry of these tests' own models."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from gateway.process import Services
from gateway.settings import GatewaySettings
from registry_sync.registry import RegistryReader
from tests.conftest import Registry, empty_registry, settings_under
from tests.support import models as fault_models
from tests.support.models import Doubler, FlakyLoad, Scaler, log_pyfunc
from tests.support.versions import loaded_keys
from tests.support.waiting import eventually, until

pytestmark = pytest.mark.anyio

X = {"dataframe_records": [{"x": 1.5}]}
_names = itertools.count()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """Only these tests' models: they count loads and what is warm."""
    return empty_registry(tmp_path_factory.mktemp("warm-rule-registry"))


@pytest.fixture
def state(tmp_path: Path) -> Callable[..., GatewaySettings]:
    """Settings of replicas sharing one state database and artifact cache (one host's)."""

    def settings(replica: str, **overrides: Any) -> GatewaySettings:
        values: dict[str, Any] = {
            "replica_id": replica,
            "warm_aliases": ["champion"],
            "follow_interval_seconds": 0.1,
            "heartbeat_seconds": 0.2,
        }
        values.update(overrides)
        return settings_under(tmp_path, **values)

    return settings


@asynccontextmanager
async def gateway(settings: GatewaySettings, registry: Registry) -> AsyncIterator[Replica]:
    app = create_app(settings, reader=RegistryReader(tracking_uri=registry.tracking_uri))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://replica", timeout=60) as client:
            yield Replica(client, app.state.services)


class Replica:
    def __init__(self, client: httpx.AsyncClient, services: Services) -> None:
        self.client = client
        self.services = services

    async def predict(self, name: str, path: str = "") -> httpx.Response:
        return await self.client.post(f"/models/{name}{path}/predict", json=X)

    async def served(self, name: str) -> int:
        response = await self.predict(name)
        assert response.status_code == 200, response.text
        return int(response.headers["x-model-version"])

    def held(self) -> set[tuple[str, int]]:
        return set(loaded_keys(self.services.cache))

    def loads(self, name: str) -> int:
        """Successful loads of any version of ``name`` in this process (warm-ups and requests)."""
        return int(
            sum(
                sample.value
                for metric in self.services.metrics.loads.collect()
                for sample in metric.samples
                if sample.name.endswith("_total")
                and sample.labels["model"] == name
                and sample.labels["outcome"] == "success"
            )
        )

    async def sync(self) -> None:
        response = await self.client.post("/admin/sync", headers={"Authorization": "Bearer t0ken"})
        assert response.status_code == 200, response.text


def champions(registry: Registry, count: int) -> list[str]:
    names = []
    for _ in range(count):
        name = f"warm-{next(_names):02d}"
        version = registry.log(log_pyfunc, name, Doubler())
        registry.client.set_registered_model_alias(name, "champion", str(version))
        names.append(name)
    return names


async def test_a_lone_serve_warms_the_champions_that_fit_and_after_a_restart_the_ones_it_served_first(
    registry: Registry, state: Callable[..., GatewaySettings]
) -> None:
    names = champions(registry, 4)
    lone = state("lone:8000", max_loaded_models=2, admin_token="t0ken")  # room for 2 of them
    async with gateway(lone, registry) as first:
        assert first.services.reconciler.rule.mode == "aliases"  # auto: no other replica
        # of this registry's champions, the two first by name (none was served before)
        warmed = {(name, 1) for name in sorted(names)[:2]}
        assert first.held() & {(n, 1) for n in names} == warmed
        assert sum(first.loads(name) for name in names) == 2  # the others were not loaded to be evicted
        assert first.services.reconciler.plan is not None
        assert "what fits the cache" in first.services.reconciler.plan.summary
        last = sorted(names)[-1]
        assert await first.served(last) == 1  # not warm: its first request took it over
        assert (last, 1) in first.held()
    async with gateway(lone, registry) as again:  # the same replica, started again
        # what it served comes first; then what fits, by name
        assert (last, 1) in again.held() and len(again.held()) == 2
        assert again.loads(last) == 1


async def test_a_replica_with_no_history_is_ready_at_once_and_many_first_requests_load_once(
    registry: Registry, state: Callable[..., GatewaySettings]
) -> None:
    [name] = champions(registry, 1)
    async with gateway(state("r1:8000", warm_start="served", admin_token="t0ken"), registry) as replica:
        assert replica.held() == set()  # nothing warmed: nobody asked this replica for anything
        answers = await asyncio.gather(*(replica.predict(name) for _ in range(8)))
        assert [a.status_code for a in answers] == [200] * 8
        assert {(a.headers["x-model-version"], a.headers["x-model-alias"]) for a in answers} == {("1", "champion")}
        assert replica.loads(name) == 1  # a cold warm alias loads once however many ask
        assert replica.services.catalog.held(name, "champion") is not None  # taken over: followed from now on


async def test_an_alias_move_is_swapped_only_where_its_model_is_served(
    registry: Registry, state: Callable[..., GatewaySettings]
) -> None:
    [name] = champions(registry, 1)
    v2 = registry.log(log_pyfunc, name, Scaler(3.0))
    async with (
        gateway(state("a:8000", warm_start="served", admin_token="t0ken"), registry) as serving,
        gateway(state("b:8000", warm_start="served", admin_token="t0ken"), registry) as idle,
    ):
        assert await serving.served(name) == 1
        registry.client.set_registered_model_alias(name, "champion", str(v2))
        await serving.sync()
        # the replica that serves the model swapped blue-green; the other loaded nothing
        await until(lambda: _held(serving, name) == v2, "the swap", timeout=30)
        assert await serving.served(name) == v2
        await idle.services.catalog.refresh()
        await idle.services.reconciler.settle()
        assert idle.held() == set() and idle.loads(name) == 0
        # its first request takes the alias over at its target: one load, never the version before
        assert await idle.served(name) == v2
        assert idle.held() == {(name, v2)} and idle.loads(name) == 1


async def test_a_failed_take_over_serves_what_the_fleet_served_last(
    registry: Registry, state: Callable[..., GatewaySettings]
) -> None:
    [name] = champions(registry, 1)
    broken = registry.log(log_pyfunc, name, FlakyLoad())
    async with gateway(state("a:8000", warm_start="served", admin_token="t0ken"), registry) as serving:
        assert await serving.served(name) == 1  # the fleet serves version 1 (active_version)
    fault_models.FAIL_LOADS.set()
    registry.client.set_registered_model_alias(name, "champion", str(broken))
    async with gateway(state("b:8000", warm_start="served", admin_token="t0ken"), registry) as fresh:
        await fresh.sync()
        response = await fresh.predict(name)
        assert response.status_code == 200, response.text
        assert response.headers["x-model-version"] == "1"  # the broken target failed: the last good one
        events = fresh.services.store.events(name=name, limit=20)
        assert any(e.kind == "failed" and e.version == broken and e.alias == "champion" for e in events)


async def test_a_restarted_replica_warms_the_versions_it_served_and_the_fleet_shows_who_holds_what(
    registry: Registry, state: Callable[..., GatewaySettings]
) -> None:
    by_alias, by_number = champions(registry, 2)
    settings = state("r2:8000", warm_start="served", admin_token="t0ken")
    async with gateway(settings, registry) as replica:
        assert await replica.served(by_alias) == 1
        assert (await replica.predict(by_number, "/versions/1")).status_code == 200
    async with (
        gateway(settings, registry) as again,
        gateway(state("r3:8000", warm_start="served", admin_token="t0ken"), registry) as other,
    ):
        # before it was ready, the restarted replica warmed both; the new one nothing
        assert {(by_alias, 1), (by_number, 1)} <= again.held() and other.held() == set()
        assert again.services.catalog.held(by_alias, "champion") is not None

        async def view() -> dict[str, Any]:
            response = await other.client.get("/fleet")
            assert response.status_code == 200, response.text
            return response.json()  # type: ignore[no-any-return]

        async def shown() -> dict[str, Any] | None:
            found = await view()
            models = {m["name"]: m["replicas"] for m in found["models"]}
            held = models.get(by_alias) == {"r2:8000": [1]} and models.get(by_number) == {"r2:8000": [1]}
            states = {r["replica"]: r["state"] for r in found["replicas"]}
            return found if held and states == {"r2:8000": "ready", "r3:8000": "ready"} else None

        found = await eventually(shown, "the fleet view to show what r2 holds", timeout=20)
        replicas = {r["replica"]: r for r in found["replicas"]}
        assert found["this_replica"] == "r3:8000"
        [stopped] = [p for p in replicas["r2:8000"]["processes"] if p["state"] == "stopped"]  # its first run
        assert not stopped["quiet"]
        live = [p for p in replicas["r2:8000"]["processes"] if p["state"] == "ready"]
        assert len(live) == 1 and "served" in live[0]["warm_rule"] and live[0]["holdings"]


async def test_a_process_that_stops_reporting_is_shown_gone_quiet(
    registry: Registry, state: Callable[..., GatewaySettings]
) -> None:
    """Gone quiet is judged on the database's clock: the ghost's last report is moved ten
    minutes back there (ten minutes it said nothing; forgotten only after an hour), while the
    watcher beats every minute, so it cannot go quiet during the test however busy the host
    (quiet after three beats missed)."""
    from sqlalchemy import update

    from registry_sync.database import make_engine
    from registry_sync.fleet import READY, MemberReport
    from registry_sync.state import FleetMemberRow

    settings = state("watcher:8000", warm_start="served", heartbeat_seconds=60)
    async with gateway(settings, registry) as watcher:
        # a replica that reported once and then nothing (killed, hung, cut off from the database)
        watcher.services.fleet.report(
            MemberReport(member="ghost:1:x", replica="ghost:8000", role="gateway", state=READY),
            replica_now=0.0,
            forget_after=3600,
            history_seconds=3600,
        )
        engine = make_engine(settings.database_url)
        try:
            with engine.begin() as connection:
                aged = connection.execute(
                    update(FleetMemberRow)
                    .where(FleetMemberRow.member == "ghost:1:x")
                    .values(seen_at=FleetMemberRow.seen_at - 600)
                )
                assert aged.rowcount == 1
        finally:
            engine.dispose()

        async def watcher_ready() -> dict[str, Any] | None:  # its state change is reported at once
            found = (await watcher.client.get("/fleet")).json()
            row = next((r for r in found["replicas"] if r["replica"] == "watcher:8000"), None)
            return found if row is not None and row["state"] == "ready" else None

        found = await eventually(watcher_ready, "the watcher to report itself ready", timeout=20)
        ghost = next(r for r in found["replicas"] if r["replica"] == "ghost:8000")
        assert ghost["state"] == "quiet" and ghost["processes"][0]["quiet"] is True and ghost["models"] == []
        watcher_row = next(r for r in found["replicas"] if r["replica"] == "watcher:8000")
        assert not watcher_row["processes"][0]["quiet"]
        # /status says so too, and names this replica and its warm rule
        page = (await watcher.client.get("/status")).text
        assert "1 gone quiet" in page and "ghost:8000" in page and "watcher:8000" in page
        assert "(this one)" in page and "Warm rule: served (GATEWAY_WARM_START=served)" in page


def _held(replica: Replica, name: str) -> int | None:
    held = replica.services.catalog.held(name, "champion")
    return held.version if held is not None else None
