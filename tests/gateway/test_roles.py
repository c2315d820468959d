"""Several processes on one state database: one sync leader polls MLflow, the others follow.

Each "replica" here is a whole app with its lifespan, in this process, on the same sqlite
state database, with a reader that counts how often it reads the registry.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select

from gateway.app import create_app
from gateway.settings import GatewaySettings
from registry_sync.registry import ModelRecord, RegistryReader
from registry_sync.state import LeaseRow
from tests.conftest import Registry, empty_registry
from tests.gateway.test_control_api import alias_payload, signed
from tests.support import models as fault_models
from tests.support.models import Doubler, log_pyfunc
from tests.support.versions import loaded
from tests.support.waiting import eventually, until

pytestmark = pytest.mark.anyio

SECRET = "roles-secret"
TOKEN = "roles-t0ken"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
X = {"dataframe_records": [{"x": 1.5}]}
_names = itertools.count()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """A registry of these tests' own models only. These tests count generations and wait for
    every warm alias to be warm; the shared registry holds other tests' broken versions
    (deleted artifacts, mismatched tags), whose failed warm-ups would move both."""
    return empty_registry(tmp_path_factory.mktemp("roles-registry"))


class CountingReader(RegistryReader):
    """Counts the registry reads that polling and syncing make (not artifact downloads)."""

    def __init__(self, tracking_uri: str) -> None:
        super().__init__(tracking_uri=tracking_uri)
        self.full_reads = 0
        self.named_reads: list[str] = []

    def all_models(self) -> list[ModelRecord]:
        self.full_reads += 1
        return super().all_models()

    def registered_models(self) -> list[ModelRecord]:  # a whole-registry poll, versions where changed
        self.full_reads += 1
        return super().registered_models()

    def get_model(self, name: str) -> ModelRecord:
        self.named_reads.append(name)
        return super().get_model(name)


@dataclass
class Replica:
    client: httpx.AsyncClient
    services: Any
    reader: CountingReader

    async def served(self, name: str) -> int | None:
        response = await self.client.post(f"/models/{name}/predict", json=X)
        return int(response.headers["x-model-version"]) if response.status_code == 200 else None


@asynccontextmanager
async def replica(settings: GatewaySettings, tracking_uri: str) -> AsyncIterator[Replica]:
    reader = CountingReader(tracking_uri)
    app = create_app(settings, reader=reader)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://replica", timeout=60) as client:
            yield Replica(client, app.state.services, reader)


@pytest.fixture
def settings_for(make_settings: Callable[..., GatewaySettings]) -> Callable[..., GatewaySettings]:
    """Every replica of a test shares the state database (and the host's artifact cache)."""

    def make(role: str, **overrides: Any) -> GatewaySettings:
        values: dict[str, Any] = {
            "role": role,
            # 5 s: long enough that no loaded machine lets it lapse while a test builds another
            # replica on the same event loop; the takeovers here come from a release at stop
            "lease_seconds": 5.0,
            "follow_interval_seconds": 0.1,
            "warm_aliases": ["champion"],
            "webhook_secret": SECRET,
            "admin_token": TOKEN,
        }
        values.update(overrides)
        return make_settings(**values)

    return make


def fresh_model(registry: Registry, versions: int = 2, champion: int | None = 1) -> tuple[str, list[int]]:
    name = f"roles-{next(_names)}"
    numbers = [registry.log(log_pyfunc, name, Doubler()) for _ in range(versions)]
    if champion is not None:
        registry.client.set_registered_model_alias(name, "champion", str(numbers[champion - 1]))
    return name, numbers


async def leader_gauge(process: Any) -> float:
    metrics = (await process.client.get("/metrics")).text
    [line] = [line for line in metrics.splitlines() if line.startswith("gateway_sync_leader ")]
    return float(line.split()[1])


async def test_two_processes_on_one_database_poll_once_and_the_other_takes_over(
    registry: Registry, settings_for: Callable[..., GatewaySettings]
) -> None:
    fast = {"poll_interval_seconds": 0.3}
    async with AsyncExitStack() as first_stack:
        first = await first_stack.enter_async_context(replica(settings_for("all", **fast), registry.tracking_uri))
        async with replica(settings_for("all", **fast), registry.tracking_uri) as second:
            assert first.services.poller.leading and not second.services.poller.leading
            await until(lambda: first.reader.full_reads >= 4, "the leader to poll a few times")
            assert second.reader.full_reads == 0  # MLflow is polled once, not twice

            ready = [(await r.client.get("/health/ready")).json() for r in (first, second)]
            assert [(h["status"], h["role"], h["leader"]) for h in ready] == [("ok", "all", True), ("ok", "all", False)]
            assert [await leader_gauge(r) for r in (first, second)] == [1.0, 0.0]

            await first_stack.aclose()  # the leader stops: it releases the lease on the way out
            await until(lambda: second.services.poller.leading, "the other process to take the lease", timeout=10)
            await until(lambda: second.reader.full_reads >= 2, "the new leader to poll", timeout=10)
            leader = second.services.lease.current()
            assert leader is not None and leader[0] == second.services.lease.holder and leader[1] == 2
            assert await leader_gauge(second) == 1.0


async def test_a_webhook_on_a_gateway_replica_is_synced_by_the_leader(
    registry: Registry, settings_for: Callable[..., GatewaySettings]
) -> None:
    name, (v1, v2) = fresh_model(registry)
    async with (
        replica(settings_for("sync"), registry.tracking_uri) as sync,
        replica(settings_for("gateway"), registry.tracking_uri) as one,
        replica(settings_for("gateway"), registry.tracking_uri) as two,
    ):
        assert sync.services.poller.leading
        assert not one.services.poller.leading and not two.services.poller.leading
        for gateway in (one, two):
            # A --role gateway replica with no history warms nothing at start (nobody asked it
            # for anything yet); the first request takes the warm alias over.
            assert loaded(gateway.services.cache, name, v1) is None
            assert await gateway.served(name) == v1
            assert loaded(gateway.services.cache, name, v1) is not None
        generation = sync.services.store.generation()

        registry.client.set_registered_model_alias(name, "champion", str(v2))
        body, headers = signed(alias_payload(name, "champion", v2), secret=SECRET)
        response = await one.client.post("/webhooks/mlflow", content=body, headers=headers)
        assert response.status_code == 202, response.text

        for gateway in (one, two):  # the leader synced it; both replicas warmed and swapped
            await until(
                lambda g=gateway: (
                    g.services.reconciler.unwarmed() == [] and loaded(g.services.cache, name, v2) is not None
                ),
                "a warm swap",
            )  # type: ignore[misc]
            assert await gateway.served(name) == v2
        assert name in sync.reader.named_reads
        for gateway in (one, two):  # a gateway replica never read the registry itself
            assert gateway.reader.full_reads == 0 and gateway.reader.named_reads == []

        # the generation moved for the alias move and for v2's pin (its first fetch, by whichever
        # replica warmed it first); the replicas' swaps did not bump it
        assert sync.services.store.generation() == generation + 2
        await until(
            lambda: one.services.catalog.generation == two.services.catalog.generation == generation + 2,
            "both replicas to follow",
        )

        def swaps() -> list[Any]:
            events = sync.services.store.events(name=name, limit=100)
            return [e for e in events if e.kind == "swapped" and e.version == v2]

        # one event per replica (same host and pid here, so one actor); a replica records its
        # swap in a thread just after it flips, so the second record may still be on its way
        await until(lambda: len(swaps()) == 2, "both replicas to record their swap", timeout=10)
        assert len(swaps()) == 2
        route = sync.services.store.snapshot().routes[(name, "champion")]
        assert (route.version, route.active_version) == (v2, v2)

        ready = (await sync.client.get("/health/ready")).json()
        assert (ready["role"], ready["leader"], ready["status"]) == ("sync", True, "ok")
        assert (await sync.client.post(f"/models/{name}/predict", json=X)).status_code == 404  # serves no models
        assert (await sync.client.get("/metrics")).status_code == 200


async def test_admin_sync_and_misses_on_a_gateway_replica_go_through_the_leader(
    registry: Registry, settings_for: Callable[..., GatewaySettings]
) -> None:
    name, (v1, _) = fresh_model(registry)
    async with AsyncExitStack() as leader_stack:
        leader = await leader_stack.enter_async_context(replica(settings_for("all"), registry.tracking_uri))
        async with replica(settings_for("gateway"), registry.tracking_uri) as gateway:
            # a model registered after startup: the miss asks the leader, then serves
            late, (late_v1,) = fresh_model(registry, versions=1, champion=None)
            assert await gateway.served(late) == late_v1
            unknown = await gateway.client.post("/models/never-registered-here/predict", json=X)
            assert unknown.status_code == 404 and unknown.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
            assert {late, "never-registered-here"} <= set(leader.reader.named_reads)

            # /admin/sync on a non-leader answers the leader's report, after the swaps here
            registry.client.set_registered_model_alias(name, "champion", str(v1 + 1))
            response = await gateway.client.post("/admin/sync", params={"model": name}, headers=ADMIN)
            assert response.status_code == 200, response.text
            assert response.json()["alias_moves"] == 1
            assert await gateway.served(name) == v1 + 1
            assert gateway.reader.full_reads == 0 and gateway.reader.named_reads == []

            # no leader at all: accepted and queued, and the next leader runs it (a replica
            # that waits 1.5 s for a leader, not the 3 registry timeouts of the default)
            await leader_stack.aclose()
            async with replica(settings_for("gateway", registry_timeout_seconds=0.5), registry.tracking_uri) as hasty:
                response = await hasty.client.post("/admin/sync", headers=ADMIN)
            assert response.status_code == 202, response.text
            assert response.json()["accepted"] is True
            store = gateway.services.store
            assert [r.reason for r in store.pending_sync_requests()] == ["admin"]
            async with replica(settings_for("sync"), registry.tracking_uri) as successor:
                await eventually(lambda: _none_pending(store), "the new leader to run the queued request", timeout=10)
                assert successor.reader.full_reads >= 1


async def _none_pending(store: Any) -> bool | None:
    return True if not store.pending_sync_requests() else None


def lease_row(engine: Engine) -> tuple[str | None, int, float]:
    with engine.connect() as connection:
        row = connection.execute(select(LeaseRow.holder, LeaseRow.token, LeaseRow.renewed_at)).one()
    return row[0], int(row[1]), float(row[2])


async def test_the_leader_keeps_its_lease_through_a_startup_longer_than_the_lease(
    registry: Registry, settings_for: Callable[..., GatewaySettings]
) -> None:
    """The lease is renewed from the moment it is taken, not once warm: a warm-up that
    outlasts it must not leave the lead to expire (and to another process)."""
    name = f"roles-{next(_names)}"
    version = registry.log(log_pyfunc, name, fault_models.GatedLoad())
    registry.client.set_registered_model_alias(name, "champion", str(version))
    fault_models.LOAD_GATE.clear()  # the champion's warm-up blocks until the gate opens
    settings = settings_for("all", lease_seconds=1.0)
    app = create_app(settings, reader=CountingReader(registry.tracking_uri), start_in_background=True)
    async with app.router.lifespan_context(app):
        services = app.state.services
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://replica") as client:
            await until(lambda: services.stage.startswith("warming"), "the warm-up to begin")
            ready = await client.get("/health/ready")
            assert ready.status_code == 503 and ready.json()["reason"].startswith("warming")
            assert (await client.get("/health/live")).status_code == 200
            engine = services.store.engine
            holder, token, first = lease_row(engine)
            assert (holder, token) == (services.lease.holder, 1)
            await until(lambda: lease_row(engine)[2] >= first + 3.0, "renewals over three lease lifetimes", timeout=15)
            assert services.stage.startswith("warming")  # still warming all along
            assert lease_row(engine)[:2] == (services.lease.holder, 1)
            fault_models.LOAD_GATE.set()
            await until(lambda: services.ready, "the warm-up to finish", timeout=30)
            await until(lambda: services.poller.leading, "the leader's lease, renewed in a thread, to be current")
            ready = await client.get("/health/ready")
            assert ready.status_code == 200 and ready.json()["leader"] is True
