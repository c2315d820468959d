"""Inference tables as Delta Lake tables (``delta+file://``, ``delta+s3://``): the Parquet sink's
very rows and partitions, a commit per rolled file, on a folder and on a real S3 endpoint
(moto_server), read back with deltalake and pandas (DuckDB's delta extension downloads itself:
not offline). Two writers append to one table at once and lose nothing; a file published again
after a failure is not appended twice."""

from __future__ import annotations

import re
import shutil
import threading
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from gateway.demo import log_iris_version
from gateway.observability.records.delta import DeltaDestination, storage_options
from gateway.observability.records.record import InferenceRecord, LabelRecord
from gateway.observability.records.tables import FolderDestination, TableSink, destination_for
from tests.conftest import empty_registry, iris_split, running_gateway, settings_under
from tests.support.s3 import S3, moto_s3

pytestmark = pytest.mark.anyio

DAY = 1_764_000_000.0  # 2025-11-24 16:00 UTC
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
BODY = b'{"inputs": [' + b",".join(b'{"x": %d}' % i for i in range(40)) + b"]}"


def traffic(replica: str, count: int) -> list[InferenceRecord | LabelRecord]:
    """Answers of two models (two versions of one), over two days, some failed, and labels."""
    items: list[InferenceRecord | LabelRecord] = []
    for n in range(count):
        model, version = ("iris", 1 + n % 2) if n % 3 else ("wine/red", 7)
        failed = n % 11 == 5
        items.append(
            InferenceRecord(
                model,
                version,
                None,
                "default",
                f"{replica}-{n}",
                None,
                "mlflow",
                "application/json",
                BODY,
                b'{"error_code": "BAD_REQUEST"}' if failed else b'{"predictions": [%d, 2]}' % (n % 3),
                400 if failed else 200,
                0.001,
                DAY + (n % 2) * 86_400,
                error_code="BAD_REQUEST" if failed else None,
            )  # fmt: skip
        )
        if n % 4 == 0:
            items.append(LabelRecord(f"{replica}-{n}", model, str(version), n % 3, DAY + 60, row=n % 2))
    return items


def written(destination: Any, items: list[InferenceRecord | LabelRecord], *, replica: str = "r") -> None:
    """Through a table sink that rolls a file every few rows."""
    sink = TableSink(destination, replica=replica, redact=(), roll_bytes=6_000, roll_seconds=3600, keep_bytes=1 << 24)
    for item in items:
        sink.write([sink.entry(item, source="", redact=frozenset())])
    sink.close()


def parquet_rows(root: Path, table: str) -> pd.DataFrame:
    """The Parquet sink's rows, with the ``date`` of their folder (its other folders, model and
    version, are columns of the files already)."""
    frames = []
    for path in (root / table).rglob("*.parquet"):
        frame = pq.read_table(path).to_pandas()
        frame["date"] = date.fromisoformat(path.parent.name.removeprefix("date="))
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def delta_rows(uri: str, table: str) -> pd.DataFrame:
    return DeltaTable(f"{uri}/{table}", storage_options=storage_options(uri)).to_pandas()


def same_rows(delta: pd.DataFrame, parquet: pd.DataFrame) -> None:
    """Row for row, column for column (the partitions included), whatever the order."""
    keys = ["request_id", "row"] if "row" in parquet else ["request_id"]
    assert sorted(delta.columns) == sorted(parquet.columns)
    delta = delta.sort_values(keys).reset_index(drop=True)[sorted(parquet.columns)]
    parquet = parquet.sort_values(keys).reset_index(drop=True)[sorted(parquet.columns)]
    for column in parquet.columns:
        assert [_plain(v) for v in delta[column]] == [_plain(v) for v in parquet[column]], column


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    return None if value is None or (isinstance(value, float) and value != value) else value


def commits(uri: str, table: str) -> list[dict[str, Any]]:
    return [
        c
        for c in DeltaTable(f"{uri}/{table}", storage_options=storage_options(uri)).history()
        if c["operation"] == "WRITE"
    ]


def files_rolled(root: Path, table: str) -> int:
    return len(list((root / table).rglob("*.parquet")))


def test_a_folders_delta_tables_hold_the_parquet_sinks_rows_a_commit_per_rolled_file(tmp_path: Path) -> None:
    items = traffic("a", 60)
    written(FolderDestination(tmp_path / "parquet"), items)
    uri = f"file://{tmp_path / 'delta'}"
    written(destination_for(f"delta+{uri}", replica="r"), items)
    for table in ("predictions", "labels"):
        same_rows(delta_rows(uri, table), parquet_rows(tmp_path / "parquet", table))
        # one commit per file the Parquet sink rolled: a reader sees a file's rows whole
        assert len(commits(uri, table)) == files_rolled(tmp_path / "parquet", table)
    assert files_rolled(tmp_path / "parquet", "predictions") > 1
    partitions = DeltaTable(f"{uri}/predictions").metadata().partition_columns
    assert partitions == ["model", "version", "date"]
    assert DeltaTable(f"{uri}/labels").metadata().partition_columns == ["date"]
    wine = delta_rows(uri, "predictions").query("model == 'wine/red'")
    assert set(wine["version"]) == {"7"} and len(wine) == 20  # a name with '/' stays itself


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3]:
    with moto_s3(tmp_path_factory.mktemp("moto"), bucket="tables") as s3:
        yield s3


def test_on_s3_two_writers_at_once_lose_no_commit(tmp_path: Path, s3: S3, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in s3.client_env.items():  # the artifact store's variables, as a gateway has them
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_S3_ALLOW_UNSAFE_RENAME", raising=False)  # conditional writes, not a lock
    uri = f"s3://{s3.bucket}/fleet"
    start = threading.Barrier(2)
    failures: list[BaseException] = []

    def replica(name: str) -> None:
        try:
            destination = destination_for(f"delta+{uri}", replica=name)
            start.wait()
            written(destination, traffic(name, 45), replica=name)
        except BaseException as exc:  # reported below: a thread's exception is lost otherwise
            failures.append(exc)

    threads = [threading.Thread(target=replica, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures
    for name in ("a", "b"):
        written(FolderDestination(tmp_path / name), traffic(name, 45), replica=name)
    for table in ("predictions", "labels"):
        expected = pd.concat([parquet_rows(tmp_path / name, table) for name in ("a", "b")], ignore_index=True)
        same_rows(delta_rows(uri, table), expected)
        assert len(commits(uri, table)) == sum(files_rolled(tmp_path / name, table) for name in ("a", "b"))


class _Cut(DeltaDestination):
    """The first commit's connection cut: after the commit landed (its answer lost on the way
    back), or before it was made. Made here: that instant cannot be aimed at from outside."""

    def __init__(self, uri: str, *, after: bool) -> None:
        super().__init__(uri, app_id=f"registry-gateway:r:{after}")
        self.after, self.cut = after, True

    def _write(self, *args: Any, **kwargs: Any) -> None:
        if self.cut and not self.after:
            self.cut = False
            raise OSError("connection reset before the commit")
        super()._write(*args, **kwargs)
        if self.cut:
            self.cut = False
            raise OSError("connection reset after the commit")


@pytest.mark.parametrize("after", [True, False], ids=["landed", "never-made"])
def test_a_file_published_again_after_a_failed_commit_is_in_the_table_once(tmp_path: Path, after: bool) -> None:
    uri = f"file://{tmp_path / 'delta'}"
    destination = _Cut(uri, after=after)
    written(FolderDestination(tmp_path / "one"), [LabelRecord("id-1", "m", "1", 1, DAY)])
    written(FolderDestination(tmp_path / "two"), [LabelRecord("id-0", "m", "1", 0, DAY)])
    ((first,), (second,)) = ((tmp_path / folder / "labels").rglob("*.parquet") for folder in ("one", "two"))
    spooled = [destination.spool(None) / f"{n}.parquet" for n in (1, 2)]  # type: ignore[arg-type]
    for path, copy in zip((first, second), spooled, strict=True):
        shutil.copy(path, copy)
    with pytest.raises(OSError, match="connection reset"):
        destination.publish(spooled[0], "labels/date=2025-11-24/part-1.parquet")
    assert spooled[0].exists()  # kept for another try, as the table sink keeps a file whose publish failed
    destination.publish(spooled[1], "labels/date=2025-11-24/part-2.parquet")  # another file goes first
    destination.publish(spooled[0], "labels/date=2025-11-24/part-1.parquet")
    assert not any(copy.exists() for copy in spooled)
    assert sorted(delta_rows(uri, "labels")["request_id"]) == ["id-0", "id-1"]
    assert len(commits(uri, "labels")) == 2
    destination.close()


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("delta+s3:///prefix", "names no bucket (delta+s3://bucket/prefix)"),
        ("delta+file://elsewhere/dir", "delta+file:///absolute/directory"),
        ("delta+gcs://bucket/dir", "delta+file:///dir or delta+s3://bucket/prefix"),
    ],
)
def test_a_delta_url_that_names_nothing_usable_says_why(url: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        destination_for(url)


async def test_a_gateway_writes_its_requests_and_labels_to_delta_tables(tmp_path: Path) -> None:
    registry = empty_registry(tmp_path / "registry")
    version = registry.log(log_iris_version, "iris-delta", c=1.0)
    root = tmp_path / "tables"
    settings = settings_under(
        tmp_path,
        records_sink=f"delta+file://{root}",
        records_table_roll_seconds=3600,  # rolled at shutdown: one commit per partition's file
        feedback_sample=1.0,
    )
    async with running_gateway(settings, registry.tracking_uri) as gateway:
        path = f"/models/iris-delta/versions/{version}/predict"
        ok = await gateway.client.post(path, json=iris_split(ROWS), headers={"X-Request-ID": "ok-1"})
        bad = await gateway.client.post(path, json={"dataframe_split": {"columns": ["a"], "data": [[1]]}})
        assert ok.status_code == 200 and bad.status_code == 400
        assert gateway.services.keeper is not None
        await gateway.services.keeper.flush()
        given = await gateway.client.post("/feedback", json=[{"request_id": "ok-1", "row": 1, "label": 2}])
        assert given.json()["counts"] == {"accepted": 1}
    uri = f"file://{root}"
    predictions = delta_rows(uri, "predictions").set_index("request_id")
    assert set(predictions["status"]) == {200, 400} and predictions.loc["ok-1", "version"] == str(version)
    assert predictions.loc["ok-1", "output_0"].tolist() == ok.json()["predictions"]  # typed, as in Parquet
    assert predictions.loc["ok-1", "date"] == predictions.loc["ok-1", "time"].date()  # its UTC day
    labels = delta_rows(uri, "labels")
    assert labels[["request_id", "row", "label"]].values.tolist() == [["ok-1", 1, "2"]]
    assert [len(commits(uri, table)) for table in ("predictions", "labels")] == [1, 1]
