"""Jobs in a running gateway, on a sqlite registry and a real ``mlflow server``: an inline job's
result; Parquet (several files) and CSV jobs that score every row once, in order, as MLflow's
pyfunc does on the same rows; a bad file reported with its range; cancel; bad submissions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from gateway.demo import IRIS
from gateway.settings import GatewaySettings
from tests.conftest import IRIS_COLUMNS, Gateway, Registry, empty_registry, iris_split, running_gateway
from tests.support import models as fault_models
from tests.support.waiting import eventually, until

pytestmark = pytest.mark.anyio

JOB_SETTINGS = {"jobs_poll_seconds": 0.05, "jobs_lease_seconds": 3.0, "jobs_batch_rows": 64, "jobs_chunk_rows": 100}


def iris_rows(count: int, *, first: int = 0) -> pa.Table:
    """``count`` iris-like rows with a ``row_id`` (first, first + 1, ...)."""
    ids = np.arange(first, first + count)
    columns: dict[str, Any] = {"row_id": pa.array(ids, pa.int64())}
    for position, name in enumerate(IRIS_COLUMNS):
        columns[name] = pa.array(1.0 + ((ids * (position + 3)) % 61) / 10.0, pa.float64())
    return pa.table(columns)


async def ended(gateway: Gateway, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        answer = await gateway.client.get(f"/jobs/{job_id}")
        assert answer.status_code == 200, answer.text
        document: dict[str, Any] = answer.json()
        return document if document["state"] not in ("queued", "running") else None

    return await eventually(check, f"job {job_id} to end", timeout)


def output_rows(folder: Path, format: str) -> pa.Table:
    parts = sorted(folder.glob(f"part-*.{format}"))
    assert parts, f"no parts in {folder}"
    read = pq.read_table if format == "parquet" else pacsv.read_csv
    return pa.concat_tables([read(part) for part in parts])


def assert_scored_as_pyfunc(registry: Registry, version: int, given: pa.Table, scored: pa.Table) -> None:
    """Every input row once, in input order, its prediction equal to MLflow's pyfunc's."""
    assert scored.column("row_id").to_pylist() == given.column("row_id").to_pylist()
    expected = np.asarray(registry.pyfunc(IRIS, version).predict(given.select(IRIS_COLUMNS).to_pandas()))
    assert scored.column("prediction").to_numpy().tolist() == expected.tolist()


@pytest.fixture
def make_jobs_gateway(
    make_gateway: Callable[..., AbstractAsyncContextManager[Gateway]],
) -> Callable[..., AbstractAsyncContextManager[Gateway]]:
    return lambda **overrides: make_gateway(**{**JOB_SETTINGS, **overrides})


async def test_an_inline_job_answers_as_the_predict_route_does(
    make_jobs_gateway: Callable[..., AbstractAsyncContextManager[Gateway]], registry: Registry
) -> None:
    body = iris_split([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]])
    async with make_jobs_gateway() as gateway:
        submitted = await gateway.client.post(f"/models/{IRIS}/versions/champion/jobs", json={"request": body})
        assert submitted.status_code == 202, submitted.text
        job = submitted.json()
        assert submitted.headers["location"] == f"/jobs/{job['id']}"
        assert (job["alias"], job["version"]) == ("champion", registry.versions[IRIS][0])  # pinned now
        done = await ended(gateway, job["id"])
        assert done["state"] == "succeeded" and done["result"] == f"/jobs/{job['id']}/result"
        result = await gateway.client.get(done["result"])
        direct = await gateway.client.post(f"/models/{IRIS}/versions/{job['version']}/predict", json=body)
        assert result.status_code == 200 and result.json() == direct.json()


async def test_a_parquet_job_over_several_files_scores_every_row_once_as_pyfunc_does(
    make_jobs_gateway: Callable[..., AbstractAsyncContextManager[Gateway]], registry: Registry, tmp_path: Path
) -> None:
    tables = [iris_rows(450), iris_rows(333, first=450), iris_rows(7, first=783)]
    (tmp_path / "in").mkdir()
    for number, table in enumerate(tables):
        pq.write_table(table, tmp_path / "in" / f"part{number}.parquet", row_group_size=50)
    async with make_jobs_gateway() as gateway:
        submitted = await gateway.client.post(
            f"/models/{IRIS}/jobs",
            json={"input": str(tmp_path / "in" / "*.parquet"), "output": str(tmp_path / "out"), "id_column": "row_id"},
        )
        assert submitted.status_code == 202, submitted.text
        assert submitted.json()["rows_total"] == sum(table.num_rows for table in tables)
        done = await ended(gateway, submitted.json()["id"])
    assert (done["state"], done["chunks_failed"]) == ("succeeded", 0)
    assert done["rows_done"] == done["rows_total"] and done["chunks_done"] == done["chunks_total"] > len(tables)
    scored = output_rows(tmp_path / "out", "parquet")
    assert_scored_as_pyfunc(registry, done["version"], pa.concat_tables(tables), scored)


async def test_a_chunk_its_predecessor_claimed_is_run_at_once_not_left_for_its_lease(
    make_jobs_gateway: Callable[..., AbstractAsyncContextManager[Gateway]], registry: Registry, tmp_path: Path
) -> None:
    """Each chunk's finish claims the job's next one (registry_sync/jobs/store.py: finish): the
    runner starts it then. One left unstarted would wait out its lease (a minute here) before
    being claimed again: the job would not end within the wait below."""
    table = iris_rows(600)
    pq.write_table(table, tmp_path / "in.parquet", row_group_size=100)
    settings = {"jobs_lease_seconds": 60.0, "jobs_poll_seconds": 60.0, "jobs_on_serving": "always"}
    async with make_jobs_gateway(**settings) as gateway:
        submitted = await gateway.client.post(
            f"/models/{IRIS}/versions/1/jobs",
            json={"input": str(tmp_path / "in.parquet"), "output": str(tmp_path / "out"), "id_column": "row_id"},
        )
        assert submitted.status_code == 202, submitted.text
        done = await ended(gateway, submitted.json()["id"], timeout=30.0)
    assert (done["state"], done["rows_done"], done["chunks_done"]) == ("succeeded", 600, 6)
    assert_scored_as_pyfunc(registry, 1, table, output_rows(tmp_path / "out", "parquet"))


async def test_a_csv_job_scores_every_row_once_as_pyfunc_does(
    make_jobs_gateway: Callable[..., AbstractAsyncContextManager[Gateway]], registry: Registry, tmp_path: Path
) -> None:
    table = iris_rows(1234)
    pacsv.write_csv(table, tmp_path / "rows.csv")
    async with make_jobs_gateway(jobs_chunk_bytes=4096) as gateway:
        submitted = await gateway.client.post(
            f"/models/{IRIS}/versions/1/jobs",
            json={
                "input": f"file://{tmp_path / 'rows.csv'}",
                "output": str(tmp_path / "out"),
                "output_format": "csv",
                "id_column": "row_id",
            },
        )
        assert submitted.status_code == 202, submitted.text
        done = await ended(gateway, submitted.json()["id"])
    assert (done["state"], done["rows_done"]) == ("succeeded", table.num_rows)
    assert done["chunks_total"] > 1
    assert_scored_as_pyfunc(registry, 1, table, output_rows(tmp_path / "out", "csv"))


async def test_a_bad_file_is_reported_with_its_range_and_the_rest_is_scored(
    make_jobs_gateway: Callable[..., AbstractAsyncContextManager[Gateway]], tmp_path: Path
) -> None:
    (tmp_path / "in").mkdir()
    pq.write_table(iris_rows(200), tmp_path / "in" / "a-good.parquet", row_group_size=100)
    pq.write_table(iris_rows(100, first=200).drop_columns([IRIS_COLUMNS[0]]), tmp_path / "in" / "b-bad.parquet")
    async with make_jobs_gateway() as gateway:
        submitted = await gateway.client.post(
            f"/models/{IRIS}/jobs", json={"input": str(tmp_path / "in"), "output": str(tmp_path / "out")}
        )
        assert submitted.status_code == 202, submitted.text
        done = await ended(gateway, submitted.json()["id"])
    assert (done["state"], done["rows_done"], done["chunks_failed"]) == ("partial", 200, 1)
    [failed] = done["failed_chunks"]
    assert failed["file"].endswith("b-bad.parquet") and failed["row_groups"] == [0, 1]
    assert IRIS_COLUMNS[0] in failed["reason"] and "missing" in failed["reason"]


async def test_fail_fast_ends_the_job_at_the_first_bad_chunk(
    make_jobs_gateway: Callable[..., AbstractAsyncContextManager[Gateway]], tmp_path: Path
) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_text("row_id,x\n1,2\n")
    async with make_jobs_gateway(jobs_on_bad_chunk="fail") as gateway:
        submitted = await gateway.client.post(
            f"/models/{IRIS}/jobs", json={"input": str(tmp_path / "in"), "output": str(tmp_path / "out")}
        )
        done = await ended(gateway, submitted.json()["id"])
    assert done["state"] == "failed" and done["error"].startswith("chunk 0 failed")


async def a_job_held_in_its_predict(gateway: Gateway, tmp_path: Path, *, rows: int) -> str:
    """The id of a job of ``rows`` rows on ``gated-predict``, submitted and followed until its
    first chunk predicts, held there until ``fault_models.PREDICT_GATE`` is set."""
    pq.write_table(
        pa.table({"x": pa.array(np.arange(rows, dtype=np.float64))}), tmp_path / "x.parquet", row_group_size=50
    )
    fault_models.PREDICT_GATE.clear()
    submitted = await gateway.client.post(
        "/models/gated-predict/jobs", json={"input": str(tmp_path / "x.parquet"), "output": str(tmp_path / "out")}
    )
    assert submitted.status_code == 202, submitted.text
    await until(fault_models.PREDICT_ENTERED.is_set, "the job's first chunk to predict")
    return str(submitted.json()["id"])


@pytest.mark.parametrize("registry", ["sqlite"], indirect=True)
async def test_cancel_stops_a_running_job(
    make_jobs_gateway: Callable[..., AbstractAsyncContextManager[Gateway]], tmp_path: Path
) -> None:
    async with make_jobs_gateway() as gateway:
        job_id = await a_job_held_in_its_predict(gateway, tmp_path, rows=500)
        cancelled = await gateway.client.delete(f"/jobs/{job_id}")
        assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
        runner = gateway.services.rooms.jobs.runner
        await until(lambda: runner.running == 0, "the job's chunk here to stop")
        fault_models.PREDICT_GATE.set()
        job = (await gateway.client.get(f"/jobs/{job_id}")).json()
    assert (job["state"], job["chunks_done"]) == ("cancelled", 0)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("part-*"))


@pytest.mark.parametrize("registry", ["sqlite"], indirect=True)
async def test_a_read_with_wait_answers_when_the_job_ends_and_not_before(
    make_jobs_gateway: Callable[..., AbstractAsyncContextManager[Gateway]], tmp_path: Path
) -> None:
    """``GET /jobs/<id>?wait=N`` holds its answer until the job ends (at once then, not at a
    poll), or N seconds at most; a bad ``wait`` is refused naming it."""
    async with make_jobs_gateway() as gateway:
        job_id = await a_job_held_in_its_predict(gateway, tmp_path, rows=100)
        runner = gateway.services.rooms.jobs.runner
        began = time.monotonic()
        held = await gateway.client.get(f"/jobs/{job_id}", params={"wait": 0.5})
        assert held.status_code == 200 and held.json()["state"] == "running"
        assert time.monotonic() - began >= 0.5  # it waited: the job had not ended
        for bad in ("-1", "31", "soon"):
            refused = await gateway.client.get(f"/jobs/{job_id}", params={"wait": bad})
            assert refused.status_code == 400, refused.text
            assert "wait" in refused.json()["message"]
        waiting = asyncio.create_task(gateway.client.get(f"/jobs/{job_id}", params={"wait": 30}))
        await until(lambda: job_id in runner._ends, "the read to wait for the job's end")
        assert not waiting.done()
        fault_models.PREDICT_GATE.set()
        began = time.monotonic()
        answer = await asyncio.wait_for(waiting, 60)
        assert answer.status_code == 200 and answer.json()["state"] == "succeeded"
        assert time.monotonic() - began < 25  # woken by the end, not by its 30 s passing
        assert runner._ends == {}  # nothing kept for it


@pytest.mark.parametrize("registry", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("body", "named"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (b"{}", "exactly one of"),
        (b'{"request": {}, "input": "x"}', "exactly one of"),
        (b'{"request": 3}', "predict body"),
        (b'{"request": {}, "colour": 1}', "colour"),
        (b'{"input": 3, "output": "/tmp/x"}', '"input"'),
        (b'{"input": "/nowhere/at/all/*.parquet", "output": "/tmp/x"}', "/nowhere"),
        (b'{"input": "/tmp", "output": "relative/out"}', "relative"),
        (b'{"input": "/tmp", "output": "/tmp/x", "output_format": "xls"}', "output_format"),
        (b'{"request": {}, "callback": "ftp://x"}', "callback"),
    ],
)
async def test_garbage_submissions_are_refused_naming_the_problem(
    make_jobs_gateway: Callable[..., AbstractAsyncContextManager[Gateway]], body: bytes, named: str
) -> None:
    async with make_jobs_gateway() as gateway:
        answer = await gateway.client.post(f"/models/{IRIS}/jobs", content=body)
        assert answer.status_code == 400, answer.text
        assert answer.json()["error_code"] == "INVALID_PARAMETER_VALUE" and named in answer.json()["message"]
        assert (await gateway.client.get("/jobs/no-such-job")).status_code == 404
        assert (await gateway.client.get("/jobs")).json() == {"jobs": []}


async def test_a_version_deleted_while_its_job_runs_fails_the_job_with_that_reason(
    tmp_path: Path, make_settings: Callable[..., GatewaySettings]
) -> None:
    registry = empty_registry(tmp_path / "registry")
    # two versions: with version 1 deleted the model stays, and the job's next step (another
    # batch of the chunk, or the next chunk's look at its version) hears of version 1 alone
    for _ in range(2):
        registry.log(fault_models.log_pyfunc, "vanishing", fault_models.GatedPredict())
    pq.write_table(pa.table({"x": pa.array(np.arange(1.0, 501.0))}), tmp_path / "x.parquet", row_group_size=100)
    fault_models.PREDICT_GATE.clear()
    settings = make_settings(admin_token="t0ken", **JOB_SETTINGS)
    async with running_gateway(settings, registry.tracking_uri) as gateway:
        submitted = await gateway.client.post(
            "/models/vanishing/versions/1/jobs",
            json={"input": str(tmp_path / "x.parquet"), "output": str(tmp_path / "out")},
        )
        assert submitted.status_code == 202, submitted.text
        await until(fault_models.PREDICT_ENTERED.is_set, "the job's first chunk to predict")
        registry.client.delete_model_version("vanishing", "1")
        synced = await gateway.client.post(
            "/admin/sync", params={"model": "vanishing"}, headers={"Authorization": "Bearer t0ken"}
        )
        assert synced.status_code == 200, synced.text
        fault_models.PREDICT_GATE.set()
        done = await ended(gateway, submitted.json()["id"])
    assert done["state"] == "failed" and "has no version 1" in done["error"], done
    assert done["rows_done"] < 500  # the chunks after the deletion were not scored


async def test_a_csv_is_read_as_the_signature_types_it_in_every_chunk(
    tmp_path: Path, make_settings: Callable[..., GatewaySettings]
) -> None:
    """A column of digits that the signature names a string stays a string ("0050", not 50), in
    the chunks where every value looks like a number too: pyarrow alone types it per chunk."""
    registry = empty_registry(tmp_path / "registry")
    registry.log(fault_models.log_pyfunc, "codes", fault_models.CodeLength(), signature=fault_models.CODES_SIGNATURE)
    codes = [f"c{number}" if number < 50 else f"{number:04d}" for number in range(1000)]  # chunks of digits alone
    given = pa.table({"row_id": pa.array(range(1000), pa.int64()), "code": pa.array(codes)})
    source = tmp_path / "codes.csv"
    pacsv.write_csv(given, source)
    settings = make_settings(**{**JOB_SETTINGS, "jobs_chunk_bytes": 1024})
    async with running_gateway(settings, registry.tracking_uri) as gateway:
        submitted = await gateway.client.post(
            "/models/codes/jobs", json={"input": str(source), "output": str(tmp_path / "out"), "id_column": "row_id"}
        )
        assert submitted.status_code == 202, submitted.text
        done = await ended(gateway, submitted.json()["id"])
    assert (done["state"], done["chunks_failed"], done["rows_done"]) == ("succeeded", 0, 1000), done
    assert done["chunks_total"] > 2
    scored = output_rows(tmp_path / "out", "parquet")
    assert scored.column("row_id").to_pylist() == list(range(1000))
    assert scored.column("prediction").to_pylist() == [len(code) for code in codes]
