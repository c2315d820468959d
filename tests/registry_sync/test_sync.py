"""Synchronizer.sync_once against a real MLflow registry and a real state database."""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from registry_sync.artifacts import ArtifactStore
from registry_sync.database import make_engine, upgrade
from registry_sync.registry import ModelRecord, RegistryReader, VersionRecord
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


def test_first_sync_records_versions_and_routes_and_downloads_nothing(
    sqlite_registry: Registry, store: StateStore, tmp_path: Path
) -> None:
    report = make_sync(sqlite_registry, store, tmp_path).sync_once()
    assert report.ok, report.error
    snapshot = store.snapshot()
    assert report.new_versions == len(snapshot.versions) >= 6
    iris = snapshot.versions[("iris", 1)]
    assert iris.ready and iris.digest is None  # pinned when first fetched to be served, not before
    assert iris.created_ms is not None and iris.source.startswith("models:/")
    assert not (tmp_path / "artifacts").exists()  # not one byte of any artifact
    assert {(r.alias, r.version) for (n, _), r in snapshot.routes.items() if n == "iris"} == {
        ("champion", 1),
        ("challenger", 2),
    }
    assert kinds(store, "iris")[:2] == ["detected", "detected"]
    assert "alias_set" in kinds(store, "iris") and "fetched" not in kinds(store, "iris")
    again = make_sync(sqlite_registry, store, tmp_path).sync_once()
    assert again.ok and again.new_versions == again.alias_moves == again.verified == 0
    assert store.snapshot().generation == snapshot.generation  # nothing changed, nothing bumped


def pin_as_served(registry: Registry, store: StateStore, tmp_path: Path, name: str, version: int) -> str:
    """What the gateway's loader does when it first serves a version: fetch, hash, pin."""
    reader = RegistryReader(tracking_uri=registry.tracking_uri)
    identity = reader.get_model(name).versions[version].id
    _, digest = ArtifactStore(reader, tmp_path / "artifacts").fetch_verified(identity)
    assert store.pin_digest(identity, digest, actor="test").ok
    return digest


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


def test_a_digest_tag_pins_without_a_download_and_bytes_that_differ_are_refused(
    sqlite_registry: Registry, store: StateStore, tmp_path: Path, name: str
) -> None:
    good, bad = (sqlite_registry.log(log_pyfunc, name, Doubler()) for _ in range(2))
    sqlite_registry.client.set_model_version_tag(name, str(bad), "gateway.sha256", "0" * 64)
    sqlite_registry.client.set_registered_model_alias(name, "champion", str(bad))
    sync = make_sync(sqlite_registry, store, tmp_path)
    report = sync.sync_once([name])
    assert (report.verified, report.refused) == (1, 0) and not (tmp_path / "artifacts").exists()
    versions = store.snapshot().versions
    assert versions[(name, bad)].digest == "0" * 64 and versions[(name, good)].digest is None
    checked = sync.verify(sync.drift_candidates())  # the bytes in the store are not those
    assert checked.refused == 1
    assert "gateway.sha256" in (store.version(name, bad).refused_reason or "")  # type: ignore[union-attr]
    refused = [e for e in store.events(name=name) if e.kind == "refused"]
    assert [e.version for e in refused] == [bad]


def test_bytes_changed_in_place_after_pinning_are_refused(
    sqlite_registry: Registry, store: StateStore, tmp_path: Path, name: str
) -> None:
    version = sqlite_registry.log(log_pyfunc, name, Doubler())
    sqlite_registry.client.set_registered_model_alias(name, "champion", str(version))
    sync = make_sync(sqlite_registry, store, tmp_path)
    sync.sync_once([name])
    pinned = pin_as_served(sqlite_registry, store, tmp_path, name, version)
    candidates = [v for v in sync.drift_candidates() if v.name == name]
    assert [v.version for v in candidates] == [version]  # routed and pinned: worth checking
    assert sync.verify(candidates).refused == 0
    with (source_dir(sqlite_registry, name, version) / "requirements.txt").open("a") as handle:
        handle.write("# tampered\n")
    assert sync.verify(candidates).refused == 1
    state = store.snapshot().versions[(name, version)]
    assert state.digest == pinned  # the pin never moves
    assert "changed" in (state.refused_reason or "") and pinned in (state.refused_reason or "")
    assert [v for v in sync.drift_candidates() if v.name == name] == []  # refused: no more checks


def test_only_served_versions_are_checked_and_one_failure_does_not_stop_the_others(
    sqlite_registry: Registry, store: StateStore, tmp_path: Path, name: str
) -> None:
    broken, fine, unserved = (sqlite_registry.log(log_pyfunc, name, Doubler()) for _ in range(3))
    client = sqlite_registry.client
    client.set_registered_model_alias(name, "champion", str(broken))
    client.set_registered_model_alias(name, "challenger", str(fine))
    sync = make_sync(sqlite_registry, store, tmp_path)
    assert sync.sync_once([name]).ok
    for version in (broken, fine, unserved):
        pin_as_served(sqlite_registry, store, tmp_path, name, version)
    shutil.rmtree(source_dir(sqlite_registry, name, broken))
    candidates = [v for v in sync.drift_candidates() if v.name == name]
    assert sorted(v.version for v in candidates) == [broken, fine]  # the unserved one costs nothing
    report = sync.verify(candidates)
    assert (report.failed, report.verified) == (1, 1)
    assert report.problems == [f"{name} v{broken}"]
    assert store.version(name, broken).refused_reason is None  # type: ignore[union-attr]  # unreachable is no proof


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


class CountingReader(RegistryReader):
    """The real reader, counting what each pass asks the registry for."""

    def __init__(self, tracking_uri: str) -> None:
        super().__init__(tracking_uri=tracking_uri)
        self.full_reads = 0
        self.version_reads: list[set[str]] = []

    def all_models(self) -> list[ModelRecord]:
        self.full_reads += 1
        return super().all_models()

    def versions_of(self, names: Iterable[str]) -> dict[str, dict[int, VersionRecord]]:
        wanted = set(names)
        self.version_reads.append(wanted)
        return super().versions_of(wanted)


def test_later_passes_read_versions_only_of_models_that_changed_or_are_served(
    sqlite_registry: Registry, store: StateStore, tmp_path: Path, name: str
) -> None:
    client = sqlite_registry.client
    quiet, watched = f"{name}-quiet", f"{name}-served"
    first = sqlite_registry.log(log_pyfunc, name, Doubler())
    quiet_version = sqlite_registry.log(log_pyfunc, quiet, Doubler())
    watched_version = sqlite_registry.log(log_pyfunc, watched, Doubler())
    reader = CountingReader(sqlite_registry.tracking_uri)
    sync = Synchronizer(
        reader,
        store,
        ArtifactStore(reader, tmp_path / "artifacts"),
        watched=lambda: {watched},
        full_read_interval_seconds=3600,
    )
    assert sync.sync_once().ok and reader.full_reads == 1  # the first pass reads everything
    assert sync.sync_once().ok and reader.full_reads == 1
    assert reader.version_reads[-1] == {watched}  # nothing changed: only what is served here

    second = sqlite_registry.log(log_pyfunc, name, Doubler())  # moves the model's timestamp
    client.set_registered_model_alias(quiet, "champion", str(quiet_version))  # moves nothing
    client.set_model_version_tag(watched, str(watched_version), "gateway.batching", "false")
    client.set_model_version_tag(quiet, str(quiet_version), "stage", "canary")  # moves nothing either
    report = sync.sync_once()
    assert report.ok and report.new_versions == 1 and report.alias_moves == 1
    assert reader.version_reads[-1] == {name, watched}
    snapshot = store.snapshot()
    assert (name, second) in snapshot.versions and snapshot.routes[(quiet, "champion")].version == quiet_version
    assert snapshot.versions[(watched, watched_version)].tags == {"gateway.batching": "false"}
    assert snapshot.versions[(quiet, quiet_version)].tags == {}  # a webhook or the next full read brings it

    client.delete_model_version(name, str(first))
    assert sync.sync_once().ok and reader.version_reads[-1] == {name, watched}
    assert store.snapshot().versions[(name, first)].deleted

    later = Synchronizer(reader, store, ArtifactStore(reader, tmp_path / "artifacts"), full_read_interval_seconds=3600)
    assert later.sync_once().ok and reader.full_reads == 2  # a full read (a new leader's first pass)
    assert store.snapshot().versions[(quiet, quiet_version)].tags == {"stage": "canary"}
