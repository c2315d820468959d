"""Inference tables (GATEWAY_RECORDS_SINK=parquet+...): a real gateway serving real MLflow
versions writes Parquet that DuckDB and pandas read back, on a folder and on S3 (a real
moto_server); shadows and failed requests are rows; a reader never sees a file half-written;
a dead S3 endpoint costs records, counted, never requests."""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow.parquet as pq
import pytest

from gateway.demo import log_iris_version
from gateway.observability.records.record import InferenceRecord, LabelRecord
from gateway.observability.records.rows import LABEL_SCHEMA
from gateway.observability.records.sinks import InvalidSinkUrl, sink_for
from gateway.observability.records.tables import FolderDestination, TableSink
from gateway.settings import GatewaySettings
from registry_sync.traffic import SHADOW_TAG
from tests.conftest import IRIS_COLUMNS, Registry, empty_registry, iris_split, settings_under
from tests.support.keys import add_key, bearer, keyed_gateway
from tests.support.s3 import REGION, S3
from tests.support.servers import BIN, Process, free_port
from tests.support.tables import docs_query
from tests.support.waiting import until

pytestmark = pytest.mark.anyio
MODEL = "tables-iris"
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """Two iris versions of a model of this module's own: champion 1, and 2 a shadow of every
    default-route request."""
    registry = empty_registry(tmp_path_factory.mktemp("tables-registry"))
    first = registry.log(log_iris_version, MODEL, c=1.0)
    second = registry.log(log_iris_version, MODEL, c=0.05)
    registry.client.set_registered_model_alias(MODEL, "champion", str(first))
    registry.client.set_model_version_tag(MODEL, str(second), SHADOW_TAG, "100")
    registry.versions[MODEL] = [first, second]
    return registry


def settings_for(root: Path, sink: str, **overrides: Any) -> GatewaySettings:
    values: dict[str, Any] = {
        "records_sink": sink,
        "records_table_roll_seconds": 0.2,
        "auth": "keys",
        "warm_aliases": ["champion"],
        "follow_interval_seconds": 0.1,
        "replica_id": "replica-a:8000",
    }
    return settings_under(root, **(values | overrides))


async def traffic(gateway: Any, secret: str) -> dict[str, Any]:
    """A default-route request (with its shadow), a pinned one, and two that fail once their
    version is chosen: a body of the wrong columns, and one that is not JSON."""
    headers = bearer(secret)
    answers = {}
    for request_id, path, body in (
        ("ok-1", f"/models/{MODEL}/predict", iris_split(ROWS)),
        ("pinned-1", f"/models/{MODEL}/versions/1/predict", iris_split(ROWS[:1])),
        ("bad-columns", f"/models/{MODEL}/versions/1/predict", {"dataframe_split": {"columns": ["a"], "data": [[1]]}}),
    ):
        answers[request_id] = await gateway.client.post(path, json=body, headers=headers | {"X-Request-ID": request_id})
    answers["not-json"] = await gateway.client.post(
        f"/models/{MODEL}/versions/1/predict",
        content=b"{not json",
        headers=headers | {"X-Request-ID": "not-json", "Content-Type": "application/json"},
    )
    assert answers["ok-1"].status_code == 200, answers["ok-1"].text
    assert answers["pinned-1"].status_code == 200
    assert answers["bad-columns"].status_code == 400 and answers["not-json"].status_code == 400
    await gateway.services.shadows.drain()
    return {request_id: answer.json() for request_id, answer in answers.items()}


async def shadow_warm(gateway: Any, registry: Registry, secret: str) -> None:
    """A first request takes the model over here; its shadow version is warmed then."""
    answer = await gateway.client.post(f"/models/{MODEL}/predict", json=iris_split(ROWS[:1]), headers=bearer(secret))
    assert answer.status_code == 200, answer.text
    state = gateway.services.catalog.state(MODEL, registry.versions[MODEL][1])
    await until(lambda: state is not None and gateway.services.split.ready(state.id), what="the shadow to be warm")


def scan(root: str) -> str:
    files = f"'{root}/predictions/**/*.parquet'"
    return f"read_parquet({files}, hive_partitioning = true, hive_types = {{'version': 'VARCHAR'}})"


def rows_by_arm(db: duckdb.DuckDBPyConnection, root: str) -> dict[tuple[str, str], dict[str, Any]]:
    cursor = db.execute(f"SELECT * FROM {scan(root)}")
    names = [column[0] for column in cursor.description]
    return {
        (row["request_id"], row["arm"]): row for row in (dict(zip(names, r, strict=True)) for r in cursor.fetchall())
    }


def check_rows(found: dict[tuple[str, str], dict[str, Any]], answers: dict[str, Any]) -> None:
    ok = found[("ok-1", "default")]
    assert (ok["model"], ok["version"], ok["status"], ok["error_code"]) == (MODEL, "1", 200, None)
    assert ok["key_id"] == "analyst" and ok["replica"] == "replica-a:8000"
    assert ok["route"] == f"/models/{MODEL}/predict" and ok["protocol"] == "mlflow"
    assert ok["latency_ms"] > 0 and ok["queue_ms"] is not None and ok["predict_ms"] is not None
    assert ok["input_sepal length (cm)"] == [row[0] for row in ROWS]  # typed: DOUBLE[]
    assert ok["output_0"] == answers["ok-1"]["predictions"]  # typed: BIGINT[]
    assert json.loads(ok["inputs"]) == [dict(zip(IRIS_COLUMNS, row, strict=True)) for row in ROWS]  # records
    assert json.loads(ok["outputs"]) == answers["ok-1"]["predictions"]

    shadow = found[("ok-1", "shadow")]  # the same request, run again on version 2
    assert (shadow["version"], shadow["status"], shadow["inputs"]) == ("2", 200, ok["inputs"])
    assert len(shadow["output_0"]) == 2

    assert found[("pinned-1", "pinned")]["output_0"] == answers["pinned-1"]["predictions"]
    for request_id in ("bad-columns", "not-json"):
        failed = found[(request_id, "pinned")]
        assert failed["status"] == 400 and failed["error_code"] == answers[request_id]["error_code"]
        assert failed["outputs"] is None and failed["output_0"] is None and failed["error"]
    assert found[("not-json", "pinned")]["input_sepal length (cm)"] is None


def check_types(db: duckdb.DuckDBPyConnection, root: str) -> None:
    types = {row[0]: row[1] for row in db.execute(f"DESCRIBE SELECT * FROM {scan(root)}").fetchall()}
    assert types["time"] == "TIMESTAMP WITH TIME ZONE" and types["status"] == "INTEGER"
    assert types["input_sepal length (cm)"] == "DOUBLE[]" and types["output_0"] == "BIGINT[]"
    assert types["date"] == "DATE"  # hive partitions: model, version, date
    partitions = db.execute(f"SELECT DISTINCT model, version, date::VARCHAR FROM {scan(root)} ORDER BY 2").fetchall()
    assert [(m, v) for m, v, _ in partitions] == [(MODEL, "1"), (MODEL, "2")]


WRITTEN = {
    ("ok-1", "default"),
    ("ok-1", "shadow"),
    ("pinned-1", "pinned"),
    ("bad-columns", "pinned"),
    ("not-json", "pinned"),
}


def all_written(root: str) -> bool:
    """Every row of ``traffic`` in a published file."""
    try:
        seen = set(duckdb.sql(f"SELECT request_id, arm FROM {scan(root)}").fetchall())
    except duckdb.IOException:  # no file yet
        return False
    return WRITTEN <= seen


async def test_a_folder_of_tables_read_back_by_duckdb_and_pandas(registry: Registry, tmp_path: Path) -> None:
    root = tmp_path / "tables"
    settings = settings_for(tmp_path, f"parquet+file://{root}")
    secret = add_key(settings, "analyst", "predict:*")
    async with keyed_gateway(settings, registry) as (gateway, _):
        await shadow_warm(gateway, registry, secret)
        answers = await traffic(gateway, secret)
        await until(lambda: all_written(str(root)), what="the rows in published files")
        assert gateway.services.records is not None
        day = time.strftime("%Y-%m-%d", time.gmtime())
        label = LabelRecord("ok-1", MODEL, "1", answers["ok-1"]["predictions"][0], time.time())
        assert gateway.services.records.offer_labels([label]) == 1
        await until(lambda: any((root / "labels" / f"date={day}").glob("*.parquet")), what="the label's file")

    db = duckdb.connect()
    found = rows_by_arm(db, str(root))
    check_rows(found, answers)
    check_types(db, str(root))
    names = [p.name for p in root.rglob("*") if p.is_file()]
    assert names and all(re.fullmatch(r"part-\d{8}T\d{6}Z-replica_a_8000-\d+\.\d{6}\.parquet", n) for n in names)

    frame = pd.read_parquet(root / "predictions", partitioning=None)  # the file's own columns
    assert {"ok-1", "pinned-1", "bad-columns", "not-json"} <= set(frame["request_id"])
    assert str(frame["time"].dtype) == "datetime64[us, UTC]"

    joined = db.execute(docs_query().replace("/var/lib/gateway/tables", str(root))).fetchall()
    outputs = json.dumps(answers["ok-1"]["predictions"], separators=(",", ":"))
    first = json.dumps(answers["ok-1"]["predictions"][0])  # the label's row (0) of the answer
    assert joined == [("ok-1", 0, MODEL, "1", "default", outputs, first, json.dumps(label.label))]


def test_a_reader_polling_never_sees_a_file_half_written(tmp_path: Path) -> None:
    """The writer rolls a file every few rows while a reader reads every ``*.parquet`` it
    finds, as fast as it can: every file it opens is whole, and in the end every row is there."""
    root = tmp_path / "tables"
    sink = TableSink(
        FolderDestination(root), replica="r", redact=(), roll_bytes=40_000, roll_seconds=3600, keep_bytes=1 << 20
    )
    stop, failures, reads = threading.Event(), [], 0

    def reader() -> None:
        nonlocal reads
        while not stop.is_set():
            for path in root.rglob("*.parquet"):
                try:
                    pq.read_table(path)
                    reads += 1
                except FileNotFoundError:
                    pass
                except Exception as exc:  # a torn file: no footer, or a footer pointing past the end
                    failures.append(f"{path.name}: {exc}")

    thread = threading.Thread(target=reader)
    thread.start()
    body = b'{"inputs": [' + b",".join(b'{"x": %d}' % i for i in range(200)) + b"]}"
    try:
        for n in range(300):
            record = InferenceRecord(
                "m", 1, None, "default", f"r-{n}", None, "mlflow", "application/json", body,
                b'{"predictions": [1]}', 200, 0.001, time.time(),
            )  # fmt: skip
            sink.write([sink.entry(record, source="", redact=frozenset())])
        sink.close()
    finally:
        stop.set()
        thread.join()
    assert not failures, failures[:3]
    assert reads > 0
    table = pq.ParquetDataset(root / "predictions", partitioning=None).read()
    assert sorted(table.column("request_id").to_pylist()) == sorted(f"r-{n}" for n in range(300))
    assert not [p for p in root.rglob(".*")], "a temporary file was left behind"


def test_labels_have_their_own_schema(tmp_path: Path) -> None:
    sink = TableSink(FolderDestination(tmp_path), replica="r", redact=(), roll_bytes=1, roll_seconds=1, keep_bytes=1)
    label = LabelRecord("id-1", "m", "3", {"class": "a", "p": 0.5}, 1_764_000_000.0)
    sink.write([sink.entry(label, source="", redact=frozenset())])
    sink.close()
    (path,) = tmp_path.joinpath("labels").rglob("*.parquet")
    assert path.parent.name == "date=2025-11-24"
    table = pq.read_table(path)
    assert table.schema.equals(LABEL_SCHEMA, check_metadata=False)
    assert table.column("label").to_pylist() == ['{"class":"a","p":0.5}']


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[S3, Process]]:
    """A moto_server of this module's own: the test stops it to take S3 away."""
    root = tmp_path_factory.mktemp("tables-moto")
    port = free_port()
    server = Process(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        env={k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
        log=root / "moto.log",
        health_url=f"http://127.0.0.1:{port}/moto-api/",
        name="moto_server",
    )
    server.start(timeout=60)
    try:
        s3 = S3(f"http://127.0.0.1:{port}", "tables")
        s3.client().create_bucket(Bucket=s3.bucket)
        yield s3, server
    finally:
        server.stop()


async def test_tables_on_s3_then_s3_down_costs_records_never_requests(
    registry: Registry, tmp_path: Path, moto: tuple[S3, Process], monkeypatch: pytest.MonkeyPatch
) -> None:
    s3, server = moto
    for key, value in s3.client_env.items():
        monkeypatch.setenv(key, value)
    bound_mb = 0.05
    settings = settings_for(
        tmp_path, f"parquet+s3://{s3.bucket}/gateway/tables", records_queue_mb=bound_mb, records_batch_size=1
    )
    secret = add_key(settings, "analyst", "predict:*")
    client = s3.client()

    def keys() -> list[str]:
        listed = client.list_objects_v2(Bucket=s3.bucket, Prefix="gateway/tables/")
        return [item["Key"] for item in listed.get("Contents", [])]

    async with keyed_gateway(settings, registry) as (gateway, _):
        await shadow_warm(gateway, registry, secret)
        answers = await traffic(gateway, secret)

        local, fetched = tmp_path / "downloaded", set()

        def landed() -> bool:
            for key in set(keys()) - fetched:
                fetched.add(key)
                target = local / key.removeprefix("gateway/tables/")
                target.parent.mkdir(parents=True, exist_ok=True)
                client.download_file(s3.bucket, key, str(target))
            return all_written(str(local))

        await until(landed, what="the rows in S3")
        assert all(re.search(r"/date=\d{4}-\d\d-\d\d/part-[^/]+\.parquet$", key) for key in keys())
        check_rows(rows_by_arm(duckdb.connect(), str(tmp_path / "downloaded")), answers)

        import pyarrow.fs

        fs = pyarrow.fs.S3FileSystem(
            endpoint_override=s3.endpoint, access_key="testing", secret_key="testing", region=REGION, scheme="http"
        )
        frame = pd.read_parquet(f"{s3.bucket}/gateway/tables/predictions", filesystem=fs, partitioning=None)
        assert {"ok-1", "pinned-1"} <= set(frame["request_id"])

        # S3 goes away: every request is answered; what cannot be kept is dropped and counted
        server.stop()
        headers = bearer(secret)
        statuses = []
        for _ in range(8):
            batch = await asyncio.gather(
                *(
                    gateway.client.post(f"/models/{MODEL}/versions/1/predict", json=iris_split(ROWS), headers=headers)
                    for _ in range(50)
                )
            )
            statuses += [answer.status_code for answer in batch]
            assert gateway.services.records is not None
            assert gateway.services.records.queued_bytes <= bound_mb * 2**20
            await asyncio.sleep(0.1)  # rolls come due, and fail
        assert statuses == [200] * 400
        sample = gateway.services.metrics.registry.get_sample_value

        def dropped() -> float:
            return sum(
                sample("gateway_records_dropped_total", {"reason": r}) or 0 for r in ("queue_full", "sink_error")
            )

        await until(lambda: dropped() > 0, what="records dropped and counted")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("parquet+s3:///prefix", "names no bucket"),
        ("parquet+file://elsewhere/dir", "parquet+file:///absolute/directory"),
        ("parquet+ftp://host/dir", "parquet+file:///dir, parquet+s3://bucket/prefix, delta+file:///dir or delta+s3"),
    ],
)
def test_a_table_sink_url_that_names_nothing_usable_says_why(url: str, reason: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidSinkUrl, match=re.escape(reason)):
        sink_for(url, settings_under(tmp_path))


def test_a_typed_column_takes_missing_values_and_goes_null_for_a_value_of_another_type() -> None:
    import numpy as np
    from mlflow.models import infer_signature

    from gateway.observability.records.rows import prediction_row, typed_columns

    frame = pd.DataFrame([[5.1, 3, "a", True]], columns=["x", "n", "s", "b"])
    columns = typed_columns(infer_signature(frame, np.array([0])))

    def row(data: list[list[Any]]) -> dict[str, Any]:
        body = json.dumps({"dataframe_split": {"columns": ["x", "n", "s", "b"], "data": data}}).encode()
        record = InferenceRecord(
            "m", 1, None, "default", "r", None, "mlflow", "application/json", body,
            b'{"predictions": [0]}', 200, 0.001, time.time(),
        )  # fmt: skip
        return prediction_row(record, redact=frozenset(), columns=columns, replica="r")

    missing = row([[5.1, 3, "a", True], [None, None, None, None]])
    assert [missing[f"input_{c}"] for c in "xnsb"] == [[5.1, None], [3, None], ["a", None], [True, None]]
    wrong = row([[5.1, "3", 7, 1], [6, 2**63, "b", False]])  # each column but x has a stranger
    assert [wrong[f"input_{c}"] for c in "xnsb"] == [[5.1, 6], None, None, None]
    one = row([[5.1, "3", 7, 1]])  # one row (most requests) is checked alike
    assert [one[f"input_{c}"] for c in "xnsb"] == [[5.1], None, None, None]
    assert [row([[None, 3, "a", True]])[f"input_{c}"] for c in "xnsb"] == [[None], [3], ["a"], [True]]


def test_a_typed_column_arrow_refuses_goes_null_for_its_batch_alone(tmp_path: Path) -> None:
    """An integer past float32's exact range passes the plain check of a ``float`` column and
    not Arrow's: that column is null for its batch of rows (here the row group), the batch's other
    columns are kept."""
    import numpy as np
    from mlflow.models import infer_signature

    frame = pd.DataFrame({"f": np.array([0.5], dtype=np.float32), "d": [0.5]})
    signature = infer_signature(frame, np.array([0]))
    sink = TableSink(FolderDestination(tmp_path), replica="r", redact=(), roll_bytes=1, roll_seconds=1, keep_bytes=1)
    entries = []
    for n, data in enumerate([[[0.5, 0.25]], [[2**40, 1.0]]]):
        body = json.dumps({"dataframe_split": {"columns": ["f", "d"], "data": data}}).encode()
        record = InferenceRecord(
            "m", 1, None, "default", f"r-{n}", None, "mlflow", "application/json", body,
            b'{"predictions": [0]}', 200, 0.001, 1_764_000_000.0, signature=signature,
        )  # fmt: skip
        entries.append(sink.entry(record, source="", redact=frozenset()))
    sink.write(entries)
    sink.close()
    (path,) = tmp_path.joinpath("predictions").rglob("*.parquet")
    table = pq.read_table(path)
    assert table.column("request_id").to_pylist() == ["r-0", "r-1"]
    assert table.column("input_f").to_pylist() == [None, None]
    assert table.column("input_d").to_pylist() == [[0.25], [1.0]]
    assert [json.loads(text) for text in table.column("inputs").to_pylist()] == [
        [{"f": 0.5, "d": 0.25}],
        [{"f": 2**40, "d": 1.0}],
    ]
