"""A chunk claimed while the heartbeat's renewal is on its way to the state database (a slow
database, one coming back from an outage) is not in the renewal's answer, and is this
process's all the same: the heartbeat leaves it running. (It was cancelled, its lease left to
lapse, and the chunk scored again.)

The renewal is held open by wrapping the store's own ``renew``: the real one runs, against the
real database; only its answer comes back late, once a chunk has been claimed meanwhile."""

from __future__ import annotations

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
