"""The reference store on sqlite and PostgreSQL, and reading reference files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import Engine

from registry_sync.drift.profile import Profile, output_frame, profile_columns
from registry_sync.drift.references import FAILED, NONE, READY, Reference, ReferenceStore
from registry_sync.drift.sources import Unusable, read_local, read_reference
from registry_sync.identity import VersionId

VERSION = VersionId("iris", 3, "models:/m-abc", 1_700_000_000_000)


def a_profile(seed: int = 1) -> Profile:
    generator = np.random.default_rng(seed)
    frame = pd.DataFrame({"x": generator.normal(size=500), "c": generator.choice(["a", "b"], 500)})
    outputs = profile_columns(output_frame(generator.integers(0, 3, 500)))
    return Profile(profile_columns(frame), outputs, rows=500, sampled_from=2_000)


def test_a_reference_round_trips_by_version_identity(engine: Engine) -> None:
    store = ReferenceStore(engine)
    ready = Reference(VERSION, READY, 12.5, "dataset", "s3://data/train.parquet", profile=a_profile(), tags_digest="d")
    store.save(ready)
    assert store.get(VERSION) == ready
    assert store.list() == [ready] and store.list(["other"]) == []

    # The number re-created: another identity, which finds nothing until it has its own.
    recreated = VersionId("iris", 3, "models:/m-def", 1_800_000_000_000)
    assert store.get(recreated) is None
    failed = Reference(recreated, FAILED, 13.0, "tag", "/nowhere.csv", reason="/nowhere.csv does not exist")
    store.save(failed)
    assert store.get(recreated) == failed and store.get(VERSION) is None
    assert store.list() == [failed]

    none = Reference(VersionId("iris", 4, "models:/m-x", None), NONE, 14.0, reason="no source")
    store.save(none)
    assert [reference.version.version for reference in store.list(["iris"])] == [3, 4]
    assert store.forget([("iris", 3)]) == 1 and store.list() == [none]


def test_a_baseline_reference_is_marked_weaker() -> None:
    assert Reference(VERSION, READY, 1.0, "baseline", None, profile=a_profile()).weaker
    assert not Reference(VERSION, READY, 1.0, "dataset", "x", profile=a_profile()).weaker


def test_a_large_file_is_sampled_the_same_way_every_time(tmp_path: Path) -> None:
    path = tmp_path / "big.parquet"
    frame = pd.DataFrame({"x": np.arange(10_000, dtype=np.float64), "y": np.arange(10_000) % 7})
    frame.to_parquet(path)
    first = read_local(path, columns=["y", "x"], rows=1_000, max_bytes=2**30)
    second = read_reference(path.as_uri(), columns=["x", "y"], rows=1_000, max_bytes=2**30, scratch=tmp_path)
    assert first.sampled_from == 10_000 and len(first.frame) == 1_000
    assert list(first.frame.columns) == ["y", "x"]
    pd.testing.assert_frame_equal(first.frame[["x", "y"]], second.frame)
    assert first.frame["x"].is_unique  # without replacement
    whole = read_local(path, columns=["x", "y"], rows=10_000, max_bytes=2**30)
    assert len(whole.frame) == 10_000


@pytest.mark.parametrize(
    ("write", "reason"),
    [
        (lambda path: path.write_bytes(b"\x00garbage"), "not a readable Parquet file"),
        (lambda path: None, "does not exist"),
        (lambda path: pd.DataFrame({"x": range(10)}).to_parquet(path), "over GATEWAY_DRIFT_REFERENCE_MAX_MB"),
    ],
)
def test_unusable_files_say_why(tmp_path: Path, write: object, reason: str) -> None:
    path = tmp_path / "reference.parquet"
    write(path)  # type: ignore[operator]
    with pytest.raises(Unusable, match=reason):
        read_local(path, columns=["x"], rows=100, max_bytes=100 if "MAX_MB" in reason else 2**30)


def test_only_local_and_s3_files_are_read(tmp_path: Path) -> None:
    with pytest.raises(Unusable, match="cannot read https: URIs"):
        read_reference("https://example.com/x.csv", columns=["x"], rows=100, max_bytes=2**30, scratch=tmp_path)


def test_the_book_reads_the_profiles_of_new_or_recomputed_references_only(engine: Engine) -> None:
    """Every process refreshes its references each drift interval: a light read of when each was
    computed, then only those that changed (a big registry is not read and parsed whole)."""
    from gateway.drift.book import ReferenceBook

    fetched: list[list[tuple[str, int]]] = []

    class Counted(ReferenceStore):
        def of(self, keys: Sequence[tuple[str, int]]) -> Sequence[Reference]:
            fetched.append(sorted(keys))
            return super().of(keys)

    store = Counted(engine)
    other = VersionId("iris", 4, "models:/m-x", None)
    store.save(Reference(VERSION, READY, 12.5, "dataset", "s3://data/train.parquet", profile=a_profile()))
    store.save(Reference(other, NONE, 14.0, reason="no source"))
    book = ReferenceBook(store)
    book.refresh()
    book.refresh()  # nothing changed: nothing fetched
    store.save(Reference(other, FAILED, 15.0, "tag", "/nowhere.csv", reason="gone"))
    book.refresh()
    assert fetched == [[("iris", 3), ("iris", 4)], [], [("iris", 4)]]
    assert {v.version: k.status for v, k in book.known().items()} == {3: READY, 4: FAILED}
    store.forget([("iris", 3)])
    book.refresh()
    assert [v.version for v in book.known()] == [4]  # a reference gone from the database goes
