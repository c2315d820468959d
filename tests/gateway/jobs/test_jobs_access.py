"""Jobs with keys, S3 and callbacks: who sees and cancels a job; a job reading and writing S3
(a real moto_server); the callback signed as MLflow's webhooks are."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import HTTPServer
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.json as pajson
import pyarrow.parquet as pq
import pytest

from gateway.demo import IRIS
from gateway.settings import GatewaySettings
from registry_sync.webhooks import sign
from tests.conftest import IRIS_COLUMNS, Registry, iris_split, running_gateway
from tests.gateway.jobs.test_jobs import JOB_SETTINGS, assert_scored_as_pyfunc, ended, iris_rows
from tests.support.callback_receiver import callback_receiver
from tests.support.keys import add_key, bearer
from tests.support.s3 import S3, moto_s3
from tests.support.servers import free_port
from tests.support.waiting import until

pytestmark = pytest.mark.anyio

BODY = iris_split([[5.1, 3.5, 1.4, 0.2]])


async def test_a_predict_key_sees_and_cancels_only_its_own_jobs(
    sqlite_registry: Registry, make_settings: Callable[..., GatewaySettings]
) -> None:
    settings = make_settings(auth="keys", jobs_max_chunks_per_process=0, **JOB_SETTINGS)  # jobs stay queued
    alice, bob = add_key(settings, "alice", "predict:iris*"), add_key(settings, "bob", "predict:iris*")
    reader, admin = add_key(settings, "reader", "read"), add_key(settings, "admin", "read,admin")
    async with running_gateway(settings, sqlite_registry.tracking_uri) as gateway:
        client = gateway.client
        submitted = await client.post(f"/models/{IRIS}/jobs", json={"request": BODY}, headers=bearer(alice))
        assert submitted.status_code == 202, submitted.text
        path = f"/jobs/{submitted.json()['id']}"
        assert (await client.get(path, headers=bearer(alice))).status_code == 200
        assert (await client.get(path, headers=bearer(bob))).status_code == 404  # not said to exist
        assert (await client.delete(path, headers=bearer(bob))).status_code == 404
        assert (await client.get(path, headers=bearer(reader))).status_code == 200
        assert (await client.delete(path, headers=bearer(reader))).status_code == 403  # read is not cancel
        assert [job["id"] for job in (await client.get("/jobs", headers=bearer(bob))).json()["jobs"]] == []
        assert len((await client.get("/jobs", headers=bearer(alice))).json()["jobs"]) == 1
        assert (
            await client.post("/models/other/jobs", json={"request": BODY}, headers=bearer(alice))
        ).status_code == 403
        result = await client.get(f"{path}/result", headers=bearer(alice))
        assert result.status_code == 409 and result.json()["error_code"] == "INVALID_STATE"  # queued: no result yet
        cancelled = await client.delete(path, headers=bearer(admin))
        assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3]:
    with moto_s3(tmp_path_factory.mktemp("moto"), bucket="scoring") as endpoint:
        yield endpoint


async def test_a_job_reads_and_writes_s3(
    s3: S3,
    sqlite_registry: Registry,
    make_settings: Callable[..., GatewaySettings],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    for key, value in s3.client_env.items():
        monkeypatch.setenv(key, value)  # the gateway reaches S3 as MLflow's clients do
    tables = [iris_rows(300), iris_rows(150, first=300)]
    for number, table in enumerate(tables):
        pq.write_table(table, tmp_path / f"{number}.parquet", row_group_size=40)
        s3.client().upload_file(str(tmp_path / f"{number}.parquet"), s3.bucket, f"in/{number}.parquet")
    async with running_gateway(make_settings(**JOB_SETTINGS), sqlite_registry.tracking_uri) as gateway:
        submitted = await gateway.client.post(
            f"/models/{IRIS}/jobs",
            json={
                "input": f"s3://{s3.bucket}/in/",
                "output": f"s3://{s3.bucket}/out",
                "output_format": "jsonl",
                "id_column": "row_id",
            },
        )
        assert submitted.status_code == 202, submitted.text
        done = await ended(gateway, submitted.json()["id"])
    assert (done["state"], done["rows_done"]) == ("succeeded", 450)
    listed = s3.client().list_objects_v2(Bucket=s3.bucket, Prefix="out/")["Contents"]
    parts = sorted(item["Key"] for item in listed if item["Key"].rsplit("/", 1)[-1].startswith("part-"))
    assert len(parts) == done["chunks_total"]
    for number, key in enumerate(parts):
        s3.client().download_file(s3.bucket, key, str(tmp_path / f"part{number}.jsonl"))
    scored = pa.concat_tables([pajson.read_json(tmp_path / f"part{n}.jsonl") for n in range(len(parts))])
    assert_scored_as_pyfunc(sqlite_registry, done["version"], pa.concat_tables(tables), scored)
    assert set(IRIS_COLUMNS).isdisjoint(scored.column_names)  # predictions and the id, not the inputs


async def test_the_callback_is_signed_as_mlflow_webhooks_are(
    sqlite_registry: Registry, make_settings: Callable[..., GatewaySettings]
) -> None:
    receiver = callback_receiver()
    server = HTTPServer(("127.0.0.1", free_port()), receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings = make_settings(jobs_callback_secret="s3cret", **JOB_SETTINGS)
    try:
        async with running_gateway(settings, sqlite_registry.tracking_uri) as gateway:
            url = f"http://127.0.0.1:{server.server_address[1]}/hooks"
            submitted = await gateway.client.post(f"/models/{IRIS}/jobs", json={"request": BODY, "callback": url})
            await until(receiver.arrived.is_set, "the job's callback", timeout=60)
    finally:
        server.shutdown()
    [(headers, body)] = receiver.received
    expected = sign("s3cret", headers["x-gateway-delivery-id"], headers["x-gateway-timestamp"], body)
    assert headers["x-gateway-signature"] == expected
    document = orjson.loads(body)
    assert (document["id"], document["state"]) == (submitted.json()["id"], "succeeded")


async def test_roots_bound_where_a_job_reads_and_writes(
    sqlite_registry: Registry, make_settings: Callable[..., GatewaySettings], tmp_path: Path
) -> None:
    allowed, other = tmp_path / "allowed", tmp_path / "other"
    for folder in (allowed, other):
        folder.mkdir()
        pq.write_table(iris_rows(10), folder / "in.parquet")
    settings = make_settings(jobs_roots=str(allowed), **JOB_SETTINGS)
    async with running_gateway(settings, sqlite_registry.tracking_uri) as gateway:

        async def submit(source: Path, output: Path) -> Any:
            return await gateway.client.post(f"/models/{IRIS}/jobs", json={"input": str(source), "output": str(output)})

        assert (await submit(allowed / "in.parquet", allowed / "out")).status_code == 202
        for source, output in ((other / "in.parquet", allowed / "o1"), (allowed / "in.parquet", other / "o2")):
            refused = await submit(source, output)
            assert refused.status_code == 400 and refused.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert not (other / "o2").exists()
