"""The rows ``registry-gateway evaluate`` scores: each row of a version's answered requests
joined with its latest label, read alike from a directory and from S3 (a real endpoint: moto_server),
and from Delta tables as from Parquet ones.
tests/test_writeback.py runs the command itself against a real `mlflow server`."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.observability.records.evaluation import Joined, TablesUnavailable, joined, model_type_of
from tests.support.s3 import S3, moto_s3
from tests.support.tables import Expected, iris_tables

SINCE = datetime(2026, 11, 25, tzinfo=UTC)
ROWS = [[5.1, 3.5, 1.4, 0.2]]
DAY_TWO = datetime(2025, 11, 25, tzinfo=UTC)  # the Delta tests' traffic: 24 and 25 November 2025


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Expected]:
    root = tmp_path_factory.mktemp("tables")
    return root, iris_tables(root, "iris", ROWS)


def _check(found: Joined, expected: Expected) -> None:
    frame = found.frame
    scored = list(zip(frame["request_id"], frame["row"], frame["prediction"], frame["label"], strict=True))
    assert sorted(scored) == sorted(expected.scored)
    assert any(row > 0 for _, row, _, _ in scored)  # an answer of several rows, each row labelled
    assert (found.requests, found.failed, found.unreadable, found.rows, found.unlabelled) == (
        expected.requests,
        expected.failed,
        expected.unreadable,
        expected.rows,
        expected.unlabelled,
    )
    assert model_type_of(found.frame) == "classifier"


def test_a_versions_answered_rows_are_joined_with_their_latest_label_for_that_version(
    tables: tuple[Path, Expected],
) -> None:
    root, expected = tables
    _check(joined(str(root), "iris", "1", since=SINCE), expected)
    everything = joined(str(root), "iris", "1")  # without --since: the day before too
    assert everything.requests == 60 and len(everything.frame) > len(expected.scored)
    with pytest.raises(TablesUnavailable, match="no predictions of iris version 2"):
        joined(str(root), "iris", "2")


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3]:
    with moto_s3(tmp_path_factory.mktemp("moto"), bucket="tables") as s3:
        yield s3


def test_the_same_tables_on_s3_give_the_same_rows(
    tables: tuple[Path, Expected], s3: S3, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, expected = tables
    for name, value in s3.client_env.items():  # the artifact store's variables, as a gateway has them
        monkeypatch.setenv(name, value)
    for path in root.rglob("*.parquet"):
        s3.client().upload_file(str(path), s3.bucket, f"inference/{path.relative_to(root)}")
    _check(joined(f"s3://{s3.bucket}/inference", "iris", "1", since=SINCE), expected)


# --- Delta tables -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same traffic (two models, two days, failures, labels) through the Parquet sink and the
    Delta sink."""
    from gateway.observability.records.tables import FolderDestination, destination_for
    from tests.gateway.observability.test_delta_tables import traffic, written

    root = tmp_path_factory.mktemp("both")
    items = traffic("a", 60)
    written(FolderDestination(root / "parquet"), items)
    written(destination_for(f"delta+file://{root / 'delta'}", replica="r"), items)
    return root / "parquet", root / "delta"


def _same(found: Joined, expected: Joined) -> None:
    def rows(joined: Joined) -> list[tuple[Any, ...]]:
        frame = joined.frame
        return sorted(zip(frame["request_id"], frame["row"], frame["prediction"], frame["label"], strict=True))

    assert rows(found) == rows(expected)
    assert found.describe() == expected.describe()


@pytest.mark.parametrize("since", [None, DAY_TWO, DAY_TWO.replace(hour=17)], ids=["all", "second-day", "within-it"])
@pytest.mark.parametrize(("model", "version"), [("iris", "1"), ("iris", "2"), ("wine/red", "7")])
def test_delta_tables_give_the_rows_the_parquet_tables_give(
    both: tuple[Path, Path], model: str, version: str, since: datetime | None
) -> None:
    parquet, delta = both
    try:
        expected = joined(str(parquet), model, version, since=since)
    except TablesUnavailable as exc:  # iris 1 answered on the first day only
        for root in (f"delta+file://{delta}", str(delta)):
            with pytest.raises(TablesUnavailable, match=re.escape(str(exc).split(" under ")[0])):
                joined(root, model, version, since=since)
        return
    assert expected.requests or since == DAY_TWO.replace(hour=17)  # answered at 16:00: none after 17:00
    # named delta+, and found by its log: the same rows
    for root in (f"delta+file://{delta}", str(delta)):
        _same(joined(root, model, version, since=since), expected)


def test_a_delta_read_takes_the_committed_files_of_the_versions_partitions_from_since_on(tmp_path: Path) -> None:
    from deltalake import DeltaTable

    from gateway.observability.records.tables import destination_for
    from tests.gateway.observability.test_delta_tables import traffic, written

    root = tmp_path / "delta"
    written(destination_for(f"delta+file://{root}", replica="r"), traffic("a", 60))
    before = joined(str(root), "wine/red", "7")
    # A file no commit names (a writer that died before committing) is not read...
    files = DeltaTable(str(root / "predictions")).file_uris()
    wine = [Path(uri.removeprefix("file://")) for uri in files if "model=wine" in uri]
    stray = wine[0].with_name("part-uncommitted.parquet")
    shutil.copy(wine[0], stray)
    assert joined(str(root), "wine/red", "7").describe() == before.describe()
    # ...and only the version's partitions, from --since's day on, are opened at all: a data
    # file of another model, or of the day before, gone from the store breaks no read of them.
    for path in wine:
        if "date=2025-11-24" in str(path):
            path.unlink()
    after = joined(str(root), "wine/red", "7", since=DAY_TWO)
    assert after.requests == 10 and after.describe() == joined(str(root), "wine/red", "7", since=DAY_TWO).describe()
    assert joined(str(root), "iris", "2").requests == 20
    with pytest.raises(TablesUnavailable, match="cannot read the Delta table"):
        joined(str(root), "wine/red", "7")


def test_delta_tables_on_s3_give_the_rows_the_parquet_tables_give(
    both: tuple[Path, Path], s3: S3, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.observability.records.tables import destination_for
    from tests.gateway.observability.test_delta_tables import traffic, written

    parquet, _ = both
    for name, value in s3.client_env.items():  # the artifact store's variables, as a gateway has them
        monkeypatch.setenv(name, value)
    uri = f"s3://{s3.bucket}/delta"
    written(destination_for(f"delta+{uri}", replica="r"), traffic("a", 60))
    for root in (f"delta+{uri}", uri):  # named, and found by its log
        _same(joined(root, "wine/red", "7", since=DAY_TWO), joined(str(parquet), "wine/red", "7", since=DAY_TWO))
        _same(joined(root, "iris", "1"), joined(str(parquet), "iris", "1"))


@pytest.mark.parametrize("root", ["delta+s3://tables/inference", "s3://tables/inference"], ids=["delta", "parquet"])
def test_a_store_that_does_not_answer_is_said_so_not_raised(root: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", "http://127.0.0.1:9")  # the discard port: nothing listens
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with pytest.raises(TablesUnavailable, match="cannot (open|read) the"):
        joined(root, "iris", "1")
