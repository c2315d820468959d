"""Synchronizer.sync_once against a real MLflow registry and a real state database."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from registry_sync.artifacts import ArtifactStore
from registry_sync.database import make_engine, upgrade
from registry_sync.registry import RegistryReader
from registry_sync.repository import StateStore
from registry_sync.sync import Synchronizer
from tests.conftest import Registry
from tests.support.models import Doubler, log_pyfunc
from tests.support.servers import free_port

_names = itertools.count()


@pytest.fixture
def name() -> str:
    return f"sync-{next(_names)}"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    engine = make_engine(f"sqlite:///{tmp_path / 'state.db'}")
    upgrade(engine)
    yield StateStore(engine)
    engine.dispose()


def make_sync(registry: Registry, store: StateStore, tmp_path: Path, **kwargs: float) -> Synchronizer:
    reader = RegistryReader(tracking_uri=registry.tracking_uri)
    return Synchronizer(reader, store, ArtifactStore(reader, tmp_path / "artifacts"), **kwargs)


def kinds(store: StateStore, name: str) -> list[str]:
    return [event.kind for event in reversed(store.events(name=name))]


def source_dir(registry: Registry, name: str, version: int) -> Path:
    uri = RegistryReader(tracking_uri=registry.tracking_uri).download_uri(name, version)
    return Path(uri.removeprefix("file://"))


def test_first_sync_records_versions_pins_digests_and_routes(
    sqlite_registry: Registry, store: StateStore, tmp_path: Path
) -> None:
    report = make_sync(sqlite_registry, store, tmp_path).sync_once()
    assert report.ok, report.error
    snapshot = store.snapshot()
    assert report.new_versions == len(snapshot.versions) >= 6
    # other tests leave deliberately broken versions in the shared registry: they fail alone
    assert report.verified + report.failed + report.refused == report.new_versions
    assert report.verified >= 6
    iris = snapshot.versions[("iris", 1)]
    assert iris.ready and iris.digest is not None and len(iris.digest) == 64
    assert {(r.alias, r.version) for (n, _), r in snapshot.routes.items() if n == "iris"} == {
        ("champion", 1),
        ("challenger", 2),
    }
    assert kinds(store, "iris")[:2] == ["detected", "detected"]
    assert {"fetched", "verified", "alias_set"} <= set(kinds(store, "iris"))
    again = make_sync(sqlite_registry, store, tmp_path).sync_once()
    assert again.ok and again.new_versions == again.alias_moves == again.verified == 0
    assert store.snapshot().generation == snapshot.generation  # nothing changed, nothing bumped


def test_alias_and_tag_changes_are_found_by_diffing(
    sqlite_registry: Registry, store: StateStore, tmp_path: Path, name: str
) -> None:
    client = sqlite_registry.client
    first, second = (sqlite_registry.log(log_pyfunc, name, Doubler()) for _ in range(2))
    sync = make_sync(sqlite_registry, store, tmp_path)
    assert sync.sync_once([name]).new_versions == 2
    # MLflow leaves last_updated_timestamp alone for these; the sync must still see them.
    client.set_registered_model_alias(name, "champion", str(first))
    client.set_model_version_tag(name, str(second), "stage", "canary")
    assert sync.sync_once([name]).alias_moves == 1
    client.set_registered_model_alias(name, "champion", str(second))
    assert sync.sync_once([name]).alias_moves == 1
    assert store.snapshot().routes[(name, "champion")].version == second
    assert store.snapshot().versions[(name, second)].tags == {"stage": "canary"}
    client.delete_registered_model_alias(name, "champion")
    sync.sync_once([name])
    assert (name, "champion") not in store.snapshot().routes
    assert kinds(store, name).count("alias_set") == 2
    assert {"tags_changed", "alias_deleted"} <= set(kinds(store, name))


def test_deleted_versions_and_models_are_marked(
    sqlite_registry: Registry, store: StateStore, tmp_path: Path, name: str
) -> None:
    first, second = (sqlite_registry.log(log_pyfunc, name, Doubler()) for _ in range(2))
    sync = make_sync(sqlite_registry, store, tmp_path)
    sync.sync_once([name])
    sqlite_registry.client.delete_model_version(name, str(first))
    sync.sync_once()  # a full pass
    versions = store.snapshot().versions
    assert versions[(name, first)].deleted and not versions[(name, second)].deleted
    sqlite_registry.client.delete_registered_model(name)
    sync.sync_once([name])  # a webhook-style pass for a model that is gone
    assert store.snapshot().versions[(name, second)].deleted


def test_a_digest_tag_that_does_not_match_refuses_the_version(
    sqlite_registry: Registry, store: StateStore, tmp_path: Path, name: str
) -> None:
    good, bad = (sqlite_registry.log(log_pyfunc, name, Doubler()) for _ in range(2))
    sqlite_registry.client.set_model_version_tag(name, str(bad), "gateway.sha256", "0" * 64)
    report = make_sync(sqlite_registry, store, tmp_path).sync_once([name])
    assert (report.verified, report.refused) == (1, 1)
    versions = store.snapshot().versions
    assert versions[(name, good)].refused_reason is None
    assert "gateway.sha256" in (versions[(name, bad)].refused_reason or "")
    refused = [e for e in store.events(name=name) if e.kind == "refused"]
    assert [e.version for e in refused] == [bad]


def test_bytes_changed_in_place_after_pinning_are_refused(
    sqlite_registry: Registry, store: StateStore, tmp_path: Path, name: str
) -> None:
    version = sqlite_registry.log(log_pyfunc, name, Doubler())
    sqlite_registry.client.set_registered_model_alias(name, "champion", str(version))
    sync = make_sync(sqlite_registry, store, tmp_path, verify_interval_seconds=0)
    sync.sync_once()  # a full pass re-hashes what routes point at (other tests' models too)
    state = store.snapshot().versions[(name, version)]
    assert state.refused_reason is None and state.digest is not None
    pinned = state.digest
    with (source_dir(sqlite_registry, name, version) / "requirements.txt").open("a") as handle:
        handle.write("# tampered\n")
    assert sync.sync_once().refused >= 1
    state = store.snapshot().versions[(name, version)]
    assert state.digest == pinned  # the pin never moves
    assert "changed" in (state.refused_reason or "") and pinned in (state.refused_reason or "")
    assert (
        not ArtifactStore(RegistryReader(tracking_uri=sqlite_registry.tracking_uri), tmp_path / "artifacts")
        .local_path(name, version)
        .exists()
    )  # refused bytes are not kept


def test_one_broken_version_does_not_stop_the_others(
    sqlite_registry: Registry, store: StateStore, tmp_path: Path, name: str
) -> None:
    broken, fine = (sqlite_registry.log(log_pyfunc, name, Doubler()) for _ in range(2))
    (source_dir(sqlite_registry, name, broken) / "MLmodel").unlink()
    report = make_sync(sqlite_registry, store, tmp_path).sync_once([name])
    assert (report.failed, report.verified) == (1, 1)
    assert report.problems == [f"{name} v{broken}"]
    versions = store.snapshot().versions
    assert versions[(name, broken)].digest is None and versions[(name, fine)].digest is not None
    failed = [e for e in store.events(name=name) if e.kind == "failed"]
    assert failed and "MLmodel" in failed[0].reason


def test_an_unreachable_registry_changes_nothing_and_says_so(store: StateStore, tmp_path: Path) -> None:
    reader = RegistryReader(tracking_uri=f"http://127.0.0.1:{free_port()}")
    before = store.snapshot()
    report = Synchronizer(reader, store, ArtifactStore(reader, tmp_path)).sync_once()
    assert not report.ok and "unavailable" in (report.error or "")
    assert store.snapshot() == before
    status = store.sync_status()
    assert status.last_error and status.last_success_at is None and status.last_attempt_at is not None


@pytest.mark.anyio
async def test_the_poller_backs_off_while_the_registry_is_down(store: StateStore, tmp_path: Path) -> None:
    from registry_sync.poller import Poller

    reader = RegistryReader(tracking_uri=f"http://127.0.0.1:{free_port()}")
    reports = []
    poller = Poller(
        Synchronizer(reader, store, ArtifactStore(reader, tmp_path)), interval_seconds=60, on_synced=reports.append
    )
    await poller._scheduled()
    await poller._scheduled()  # within the backoff: skipped
    assert len(reports) == 1 and not reports[0].ok
    assert (await poller.sync(reason="admin")).error  # on demand still runs at once
    assert len(reports) == 2
