"""A job on three ``registry-gateway serve`` replicas sharing a PostgreSQL state database, one
of them SIGKILLed while it holds chunks: the job completes, every input row scored once, in
order (the killed replica's chunks are claimed again once their lease lapsed, and redone)."""

from __future__ import annotations

import signal
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import func, select

from registry_sync.database import make_engine, upgrade
from registry_sync.state import JobChunkRow
from tests.conftest import empty_registry
from tests.support.models import FileGated, log_pyfunc
from tests.support.postgres import postgres_database
from tests.support.servers import gateway_server
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

MODEL = "gated-doubler"
ROWS, ROW_GROUP = 3000, 50


def test_a_job_survives_a_replica_sigkilled_mid_run_with_no_row_lost_or_doubled(tmp_path: Path) -> None:
    registry = empty_registry(tmp_path / "registry")
    gate = tmp_path / "gate"
    registry.log(log_pyfunc, MODEL, FileGated(str(gate)))  # blocks predicts of x != 0 until the gate exists
    ids = np.arange(ROWS)
    rows = pa.table({"row_id": pa.array(ids, pa.int64()), "x": pa.array(ids + 1.0, pa.float64())})
    pq.write_table(rows, tmp_path / "in.parquet", row_group_size=ROW_GROUP)
    with postgres_database() as url, ExitStack() as stack:  # the replicas stop before the database is dropped
        engine = make_engine(url)
        stack.callback(engine.dispose)
        upgrade(engine)
        common = {
            "GATEWAY_DATABASE_URL": url,
            "GATEWAY_POLL_INTERVAL_SECONDS": "1",
            "GATEWAY_JOBS_LEASE_SECONDS": "3",
            "GATEWAY_JOBS_POLL_SECONDS": "0.1",
            "GATEWAY_JOBS_CHUNK_ROWS": "100",
            "GATEWAY_JOBS_MAX_CHUNKS_PER_PROCESS": "2",
            "GATEWAY_LOG_LEVEL": "warning",
        }
        replicas = []
        for index in range(3):
            env = {**common, "GATEWAY_REPLICA_ID": f"r{index}"}
            proc, base = gateway_server(tracking_uri=registry.tracking_uri, workdir=tmp_path / f"r{index}", env=env)
            stack.callback(proc.stop, signal.SIGKILL)
            replicas.append((proc, base))
        with ThreadPoolExecutor(max_workers=3) as pool:
            for started in [pool.submit(proc.start) for proc, _ in replicas]:
                started.result()
        client = stack.enter_context(httpx.Client(base_url=replicas[0][1], timeout=30))
        submitted = client.post(
            f"/models/{MODEL}/versions/1/jobs",
            json={"input": str(tmp_path / "in.parquet"), "output": str(tmp_path / "out"), "id_column": "row_id"},
        )
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["id"]

        def holders() -> int:
            with engine.connect() as connection:
                return int(
                    connection.scalar(
                        select(func.count(func.distinct(JobChunkRow.holder))).where(JobChunkRow.state == "running")
                    )
                    or 0
                )

        wait_until(lambda: holders() == 3, timeout=60, what="each replica to hold chunks of the job")
        replicas[2][0].stop(signal.SIGKILL)  # mid-chunk: its predicts wait on the gate
        gate.touch()
        ended = {}

        def job_ended() -> bool:
            ended.update(client.get(f"/jobs/{job_id}").json())
            return ended["state"] not in ("queued", "running")

        wait_until(job_ended, timeout=120, what="the job to end", interval=0.2)
        with engine.connect() as connection:
            redone = connection.scalar(select(func.count()).where(JobChunkRow.attempts > 1))
    assert (ended["state"], ended["rows_done"], ended["chunks_failed"]) == ("succeeded", ROWS, 0)
    assert redone  # the killed replica's chunks were claimed again
    scored = pa.concat_tables([pq.read_table(part) for part in sorted((tmp_path / "out").glob("part-*.parquet"))])
    assert scored.column("row_id").to_pylist() == ids.tolist()  # every row once, in order
    assert scored.column("prediction").to_numpy().tolist() == (rows.column("x").to_numpy() * 2).tolist()
