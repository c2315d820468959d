"""The sqlite state database locked by another writer for longer than a chunk's lease, while a
job's chunks finish: their ends, renewals and claims wait for the lock (sqlite's busy timeout),
and once it is released the job completes with every row scored once, each chunk claimed and
predicted once (a lease that lapsed meanwhile is not taken as a dead process's)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import func, select

from gateway.settings import GatewaySettings
from registry_sync.state import JobChunkRow
from tests.conftest import running_gateway
from tests.gateway.jobs.gated import gated_job
from tests.gateway.jobs.test_jobs import ended
from tests.support.waiting import until

pytestmark = pytest.mark.anyio

ROWS, CHUNK_ROWS, LEASE = 1000, 100, 1.5


async def test_a_job_completes_once_across_a_locked_sqlite_state_database(
    tmp_path: Path, make_settings: Callable[..., GatewaySettings]
) -> None:
    registry, gate, entered = gated_job(tmp_path, ROWS)
    settings = make_settings(
        jobs_poll_seconds=0.05,
        jobs_lease_seconds=LEASE,
        jobs_chunk_rows=CHUNK_ROWS,
        jobs_max_chunks_per_process=2,
    )
    out = tmp_path / "out"
    async with running_gateway(settings, registry.tracking_uri) as gateway:
        submitted = await gateway.client.post(
            "/models/gated/versions/1/jobs",
            json={"input": str(tmp_path / "in.parquet"), "output": str(out), "id_column": "row_id"},
        )
        assert submitted.status_code == 202, submitted.text
        await until(lambda: len(list(entered.iterdir())) == 2, "two chunks mid-predict", timeout=60)
        lock = sqlite3.connect(settings.database_url.split("///", 1)[1], isolation_level=None)
        try:
            lock.execute("BEGIN IMMEDIATE")  # another writer holds the database
            gate.touch()
            await until(lambda: len(list(out.glob("part-*.parquet"))) == 2, "the two parts written", timeout=30)
            await asyncio.sleep(LEASE * 2)  # the lock outlasts the chunks' lease
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        done = await ended(gateway, submitted.json()["id"])
        with gateway.services.jobs.store.engine.connect() as connection:
            attempts = connection.scalar(select(func.max(JobChunkRow.attempts)))
    assert (done["state"], done["rows_done"], done["chunks_failed"]) == ("succeeded", ROWS, 0), done
    scored = pa.concat_tables([pq.read_table(part) for part in sorted(out.glob("part-*.parquet"))])
    assert scored.column("row_id").to_pylist() == list(range(ROWS))
    assert attempts == 1 and len(list(entered.iterdir())) == ROWS // CHUNK_ROWS
