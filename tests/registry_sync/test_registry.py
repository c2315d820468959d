"""RegistryReader and ArtifactStore against real registries."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.demo import IRIS
from registry_sync.artifacts import ArtifactStore
from registry_sync.errors import ArtifactFetchFailed, RegisteredModelNotFound, RegistryUnavailable
from registry_sync.identity import VersionId
from registry_sync.registry import RegistryReader
from tests.conftest import Registry
from tests.support.servers import free_port


def test_reads_versions_and_aliases(registry: Registry) -> None:
    reader = RegistryReader(tracking_uri=registry.tracking_uri)
    assert set(registry.versions) <= set(reader.model_names())
    model = reader.get_model(IRIS)
    assert model.aliases == {"champion": 1, "challenger": 2}
    assert sorted(model.versions) == [1, 2]
    assert all(v.ready and v.source.startswith("models:/") for v in model.versions.values())
    assert model.latest_ready == 2


def test_unknown_model_is_not_found(registry: Registry) -> None:
    with pytest.raises(RegisteredModelNotFound, match="no-such"):
        RegistryReader(tracking_uri=registry.tracking_uri).get_model("no-such")


def test_an_unreachable_registry_is_unavailable() -> None:
    reader = RegistryReader(tracking_uri=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(RegistryUnavailable):
        reader.get_model(IRIS)
    with pytest.raises(RegistryUnavailable):
        reader.model_names()


def identity(reader: RegistryReader, name: str, version: int) -> VersionId:
    return reader.get_model(name).versions[version].id


def test_fetch_downloads_once_and_metadata_needs_no_full_download(registry: Registry, tmp_path: Path) -> None:
    reader = RegistryReader(tracking_uri=registry.tracking_uri)
    store = ArtifactStore(reader, tmp_path)
    iris1 = identity(reader, IRIS, 1)
    metadata = store.metadata(iris1)
    assert "sklearn" in metadata.model.flavors
    assert "dataframe_split" in metadata.serving_example
    assert not (tmp_path / "blobs").exists() and store.downloaded_bytes == 0
    path, digest = store.fetch_verified(iris1)
    assert (path / "MLmodel").is_file() and store.downloaded_bytes > 0
    fetched = store.downloaded_bytes
    assert store.fetch_verified(iris1, expected=digest) == (path, digest)  # the pinned copy, hashed again
    assert store.downloaded_bytes == fetched
    assert store.metadata(iris1, digest=digest).model.flavors == metadata.model.flavors  # read from the copy
    assert store.fetch_verified(iris1)[1] == digest  # no pin: always from the store, never a local copy
    assert store.downloaded_bytes == 2 * fetched
    assert not list(tmp_path.rglob(".*"))  # no staging left behind


def test_a_version_whose_artifacts_vanished_fails_to_fetch_and_leaves_nothing(
    sqlite_registry: Registry, tmp_path: Path
) -> None:
    from tests.support.models import Doubler, log_pyfunc

    name = "vanishing"
    version = sqlite_registry.log(log_pyfunc, name, Doubler())
    reader = RegistryReader(tracking_uri=sqlite_registry.tracking_uri)
    source = Path(reader.download_uri(name, version).removeprefix("file://"))
    (source / "MLmodel").unlink()
    store = ArtifactStore(reader, tmp_path)
    with pytest.raises(ArtifactFetchFailed, match="MLmodel"):
        store.fetch_verified(identity(reader, name, version))
    assert list((tmp_path / "blobs").iterdir()) == []
    assert [p for p in tmp_path.rglob(".*")] == []  # no staging left anywhere


def test_the_cache_is_content_addressed_and_survives_a_restart(registry: Registry, tmp_path: Path) -> None:
    from registry_sync.hashing import directory_digest

    reader = RegistryReader(tracking_uri=registry.tracking_uri)
    iris2 = identity(reader, IRIS, 2)
    path, digest = ArtifactStore(reader, tmp_path).fetch_verified(iris2)
    assert path == tmp_path / "blobs" / digest and directory_digest(path) == digest
    # A new process with MLflow unreachable: the same bytes, from disk, checked again.
    offline = ArtifactStore(RegistryReader(tracking_uri=f"http://127.0.0.1:{free_port()}"), tmp_path)
    assert offline.fetch_verified(iris2, expected=digest) == (path, digest)


def test_a_download_that_does_not_match_the_pin_is_never_put_in_place(registry: Registry, tmp_path: Path) -> None:
    from registry_sync.errors import ArtifactDigestMismatch

    reader = RegistryReader(tracking_uri=registry.tracking_uri)
    store = ArtifactStore(reader, tmp_path)
    with pytest.raises(ArtifactDigestMismatch) as caught:
        store.fetch_verified(identity(reader, IRIS, 1), expected="0" * 64)
    assert len(caught.value.digest) == 64
    assert list((tmp_path / "blobs").iterdir()) == [] and not list(tmp_path.rglob(".*"))


def test_the_cache_keeps_to_its_budget_but_never_drops_what_is_loaded(registry: Registry, tmp_path: Path) -> None:
    reader = RegistryReader(tracking_uri=registry.tracking_uri)
    store = ArtifactStore(reader, tmp_path, max_bytes=1)
    iris1, iris2 = identity(reader, IRIS, 1), identity(reader, IRIS, 2)
    _, first = store.fetch_verified(iris1)
    _, second = store.fetch_verified(iris2)  # over budget: the older, unused blob goes
    assert not store.blob_path(first).exists() and store.blob_path(second).exists()
    store.in_use = lambda: {second}
    store.fetch_verified(iris1)  # over budget again, but version 2 is loaded: it stays
    assert {p.name for p in (tmp_path / "blobs").iterdir()} == {first, second}


def test_eviction_copes_with_blobs_removed_by_other_threads(tmp_path: Path) -> None:
    """A refused version's blob is removed while another thread's fetch sizes the cache."""
    import shutil
    import threading

    store = ArtifactStore(RegistryReader(tracking_uri=f"http://127.0.0.1:{free_port()}"), tmp_path, max_bytes=1 << 30)
    blobs = tmp_path / "blobs"

    def write(blob: Path) -> None:
        blob.mkdir(parents=True, exist_ok=True)
        for i in range(20):
            (blob / f"part-{i}").write_bytes(b"x" * 64)

    for n in range(20):
        write(blobs / f"{n:064x}")
    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            for n in range(20):
                shutil.rmtree(blobs / f"{n:064x}", ignore_errors=True)
                write(blobs / f"{n:064x}")

    churner = threading.Thread(target=churn)
    churner.start()
    try:
        for _ in range(300):
            store._evict(keep="")
    finally:
        stop.set()
        churner.join()
    assert len(list(blobs.iterdir())) == 20  # under budget: nothing was evicted
