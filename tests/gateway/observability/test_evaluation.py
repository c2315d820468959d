"""The rows ``registry-gateway evaluate`` scores: each row of a version's answered requests
joined with its latest label, read alike from a directory and from S3 (a real endpoint: moto_server).
tests/test_writeback.py runs the command itself against a real `mlflow server`."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.observability.records.evaluation import Joined, TablesUnavailable, joined, model_type_of
from tests.support.s3 import S3, moto_s3
from tests.support.tables import Expected, iris_tables

SINCE = datetime(2026, 11, 25, tzinfo=UTC)
ROWS = [[5.1, 3.5, 1.4, 0.2]]


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
