"""``serve --role jobs`` and GATEWAY_JOBS_ON_SERVING, on a sqlite registry and a real ``mlflow
server``: a jobs process beside a serving one runs every chunk, one predict call a chunk, and
the serving process none; once the jobs process stops, the serving process runs chunks again;
a lone serving process predicts a chunk whole while its version has no requests and in
GATEWAY_JOBS_BATCH_ROWS batches while it has."""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from gateway.demo import IRIS
from gateway.jobs import scoring
from tests.conftest import Gateway, Registry, iris_split
from tests.gateway.jobs.test_jobs import JOB_SETTINGS, assert_scored_as_pyfunc, ended, iris_rows, output_rows
from tests.support.waiting import eventually

pytestmark = pytest.mark.anyio

# 450 rows in row groups of 50: chunks of 100 rows (JOB_SETTINGS), the last of 50, so five
# chunks; at 64 rows a call, nine predict calls, at a chunk a call, five.
ROWS, CHUNKS, SMALL_CALLS = 450, 5, 9


async def counted(gateway: Gateway, metric: str, label: str) -> float:
    """The sum of a counter's samples on ``/metrics`` whose labels include ``label``."""
    text = (await gateway.client.get("/metrics")).text
    found = re.findall(rf"^{metric}_total\{{([^}}]*)\}} (\S+)$", text, re.MULTILINE)
    return sum(float(value) for labels, value in found if label in labels)


async def predict_calls(gateway: Gateway) -> float:
    return await counted(gateway, "gateway_batches", f'model="{IRIS}"')


async def submit(gateway: Gateway, source: Path, out: Path) -> str:
    body = {"input": str(source), "output": str(out), "id_column": "row_id"}
    submitted = await gateway.client.post(f"/models/{IRIS}/versions/1/jobs", json=body)
    assert submitted.status_code == 202, submitted.text
    job_id: str = submitted.json()["id"]
    return job_id


async def loaded(gateway: Gateway) -> None:
    answer = await gateway.client.post(f"/models/{IRIS}/versions/1/predict", json=iris_split([[5.1, 3.5, 1.4, 0.2]]))
    assert answer.status_code == 200, answer.text


@pytest.fixture
def source(tmp_path: Path) -> Path:
    pq.write_table(iris_rows(ROWS), tmp_path / "in.parquet", row_group_size=50)
    return tmp_path / "in.parquet"


async def test_a_jobs_process_runs_every_chunk_in_one_call_and_the_serving_process_none_until_it_stops(
    make_gateway: Callable[..., AbstractAsyncContextManager[Gateway]],
    registry: Registry,
    source: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(scoring, "QUIET_SECONDS", 3600.0)  # a serving process would give way: a jobs process never
    async with make_gateway(**JOB_SETTINGS, replica_id="serving:1") as serving:
        async with make_gateway(**JOB_SETTINGS, replica_id="jobs:1", role="jobs") as jobs:
            await loaded(jobs)
            calls = await predict_calls(jobs)
            done = await ended(serving, await submit(serving, source, tmp_path / "out"))
            assert (done["state"], done["rows_done"], done["chunks_total"]) == ("succeeded", ROWS, CHUNKS)
            await all_counted(jobs, "the jobs process")
            assert await counted(serving, "gateway_job_chunks", 'outcome="done"') == 0
            assert await predict_calls(jobs) - calls == CHUNKS  # a chunk a call, with a request just before
        assert_scored_as_pyfunc(registry, 1, iris_rows(ROWS), output_rows(tmp_path / "out", "parquet"))
        # the jobs process reported itself stopped: the serving process runs chunks again
        done = await ended(serving, await submit(serving, source, tmp_path / "again"))
        assert (done["state"], done["rows_done"]) == ("succeeded", ROWS)
        await all_counted(serving, "the serving process")


async def all_counted(gateway: Gateway, what: str) -> None:
    """Wait for ``gateway`` to count CHUNKS chunks done: the last chunk's finish is committed
    (the job is seen ended) just before its runner counts it (a fresh clone's CI read 4 of 5)."""

    async def check() -> bool | None:
        return await counted(gateway, "gateway_job_chunks", 'outcome="done"') == CHUNKS or None

    await eventually(check, f"{what} to count every chunk", timeout=10)


@pytest.mark.parametrize(("quiet_seconds", "calls"), [(0.0, CHUNKS), (3600.0, SMALL_CALLS)])
async def test_a_serving_process_predicts_a_chunk_whole_only_while_its_version_has_no_requests(
    make_gateway: Callable[..., AbstractAsyncContextManager[Gateway]],
    source: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    quiet_seconds: float,
    calls: int,
) -> None:
    """A request was queued just before the job: within QUIET_SECONDS (an hour here) every
    chunk gives way in calls of GATEWAY_JOBS_BATCH_ROWS; past it (0 s), a chunk is one call."""
    monkeypatch.setattr(scoring, "QUIET_SECONDS", quiet_seconds)
    async with make_gateway(**JOB_SETTINGS) as serving:
        await loaded(serving)
        before = await predict_calls(serving)
        done = await ended(serving, await submit(serving, source, tmp_path / "out"))
        assert (done["state"], done["rows_done"]) == ("succeeded", ROWS)
        assert await predict_calls(serving) - before == calls


@pytest.mark.parametrize(
    ("quiet_seconds", "share", "pauses"),
    [(3600.0, 0.5, SMALL_CALLS - CHUNKS), (3600.0, 1.0, 0), (0.0, 0.5, 0)],
)
async def test_a_serving_process_pauses_between_a_chunks_calls_only_while_its_version_has_requests(
    make_gateway: Callable[..., AbstractAsyncContextManager[Gateway]],
    source: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    quiet_seconds: float,
    share: float,
    pauses: int,
) -> None:
    """GATEWAY_JOBS_PREDICT_SHARE below 1 with a request within QUIET_SECONDS: a chunk waits
    between two of its calls (once in each 100-row chunk of two calls, never after a chunk's
    last); at 1, or with no request (a chunk in one call), it never waits."""
    monkeypatch.setattr(scoring, "QUIET_SECONDS", quiet_seconds)
    async with make_gateway(**JOB_SETTINGS, jobs_predict_share=share) as serving:
        await loaded(serving)
        done = await ended(serving, await submit(serving, source, tmp_path / "out"))
        assert (done["state"], done["rows_done"]) == ("succeeded", ROWS)
        assert serving.services.jobs._runner._scorer.pauses == pauses
