"""A chunk claimed while the heartbeat's renewal is on its way to the state database (a slow
database, one coming back from an outage) is not in the renewal's answer, and is this
process's all the same: the heartbeat leaves it running. (It was cancelled, its lease left to
lapse, and the chunk scored again.) Nor does it cancel a chunk whose finish committed just
before the renewal read (no longer running, so not in its answer): that chunk is counted done,
not lost.

The renewal is held open by wrapping the store's own ``renew``: the real one runs, against the
real database; only its answer comes back late, once a chunk has been claimed meanwhile."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from gateway.settings import GatewaySettings
from registry_sync.jobs.records import Claimed
from registry_sync.state import JobChunkRow
from tests.conftest import running_gateway
from tests.gateway.jobs.gated import gated_job
from tests.gateway.jobs.test_jobs import ended
from tests.support.waiting import until

pytestmark = pytest.mark.anyio

ROWS, CHUNK_ROWS = 600, 100


async def test_a_chunk_claimed_during_a_renewal_is_not_cancelled_by_its_answer(
    tmp_path: Path, make_settings: Callable[..., GatewaySettings], monkeypatch: pytest.MonkeyPatch
) -> None:
    registry, gate, entered = gated_job(tmp_path, ROWS)
    settings = make_settings(
        jobs_poll_seconds=0.05, jobs_lease_seconds=1.5, jobs_chunk_rows=CHUNK_ROWS, jobs_max_chunks_per_process=2
    )
    async with running_gateway(settings, registry.tracking_uri) as gateway:
        store = gateway.services.jobs.store
        real_renew, real_claim = store.renew, store.claim
        claimed_meanwhile = threading.Event()
        held: list[set[tuple[str, int]]] = []

        def claim(**kwargs: Any) -> Claimed | None:
            claimed = real_claim(**kwargs)
            if claimed is not None and held and not claimed_meanwhile.is_set():
                claimed_meanwhile.set()
            return claimed

        def renew(chunks: Collection[tuple[str, int]]) -> set[tuple[str, int]]:
            still = real_renew(chunks)
            if len(chunks) == 2 and not held:  # the first renewal of two chunks mid-predict
                held.append(set(chunks))
                gate.touch()  # they finish; a third chunk is claimed while this answer is on its way
                assert claimed_meanwhile.wait(timeout=30)
            return still

        monkeypatch.setattr(store, "claim", claim)
        monkeypatch.setattr(store, "renew", renew)
        submitted = await gateway.client.post(
            "/models/gated/versions/1/jobs",
            json={"input": str(tmp_path / "in.parquet"), "output": str(tmp_path / "out"), "id_column": "row_id"},
        )
        assert submitted.status_code == 202, submitted.text
        await until(lambda: len(list(entered.iterdir())) >= 2, "two chunks mid-predict", timeout=60)
        done = await ended(gateway, submitted.json()["id"])
        with store.engine.connect() as connection:
            attempts = connection.scalar(select(func.max(JobChunkRow.attempts)))
    assert held and claimed_meanwhile.is_set()  # the race this test is about did happen
    assert (done["state"], done["rows_done"]) == ("succeeded", ROWS), done
    assert attempts == 1 and len(list(entered.iterdir())) == ROWS // CHUNK_ROWS  # each chunk scored once


async def test_a_chunk_whose_finish_committed_before_a_renewal_is_counted_done_not_lost(
    tmp_path: Path, make_settings: Callable[..., GatewaySettings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The finish's answer is held until a renewal has answered without the chunk (it is done):
    the heartbeat then cancelled its task, and the chunk counted ``lost`` though its rows
    counted in the job. The finish's own answer now decides."""
    registry, gate, _ = gated_job(tmp_path, CHUNK_ROWS)
    gate.touch()  # no wait in the predict: the race is in the finish
    settings = make_settings(jobs_poll_seconds=0.05, jobs_lease_seconds=0.6, jobs_chunk_rows=CHUNK_ROWS)
    async with running_gateway(settings, registry.tracking_uri) as gateway:
        store = gateway.services.jobs.store
        real_renew, real_finish = store.renew, store.finish
        renewed_without_it = threading.Event()
        finished: list[tuple[str, int]] = []

        def finish(job_id: str, index: int, **kwargs: Any) -> Any:
            ending = real_finish(job_id, index, **kwargs)  # committed: the chunk is done
            finished.append((job_id, index))
            assert renewed_without_it.wait(timeout=30)  # its answer held until a renewal answered
            return ending

        def renew(chunks: Collection[tuple[str, int]]) -> set[tuple[str, int]]:
            still = real_renew(chunks)
            if finished and finished[0] in chunks and finished[0] not in still:
                renewed_without_it.set()
            return still

        monkeypatch.setattr(store, "finish", finish)
        monkeypatch.setattr(store, "renew", renew)
        submitted = await gateway.client.post(
            "/models/gated/versions/1/jobs",
            json={"input": str(tmp_path / "in.parquet"), "output": str(tmp_path / "out")},
        )
        assert submitted.status_code == 202, submitted.text
        done = await ended(gateway, submitted.json()["id"])
        runner = gateway.services.rooms.jobs.runner
        await until(lambda: runner.running == 0, "the chunk's task to end")
        metrics = (await gateway.client.get("/metrics")).text
    assert renewed_without_it.is_set()  # the race this test is about did happen
    assert (done["state"], done["rows_done"]) == ("succeeded", CHUNK_ROWS), done
    outcomes = dict(re.findall(r'^gateway_job_chunks_total\{[^}]*outcome="(\w+)"[^}]*\} (\S+)$', metrics, re.MULTILINE))
    assert float(outcomes.get("done", 0)) == 1 and float(outcomes.get("lost", 0)) == 0, outcomes
