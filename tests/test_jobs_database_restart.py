"""The state database restarted under a running job: a ``registry-gateway serve`` process on a
PostgreSQL cluster of the test's own (tests/support/private_postgres.py; the shared server is
never restarted), its job's chunks mid-predict when the database stops, and finishing while it
is down. Once it is back the job completes: every input row scored once, in order, none lost
and none twice: the chunks scored while it was down are recorded when it is back, not scored
again."""

from __future__ import annotations

import signal
import time
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
from tests.support.private_postgres import private_postgres
from tests.support.servers import gateway_server
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

MODEL = "gated-doubler"
ROWS, ROW_GROUP = 2000, 50
LEASE = 3.0


def test_a_job_completes_with_every_row_once_across_a_database_restart(tmp_path: Path) -> None:
    registry = empty_registry(tmp_path / "registry")
    gate, entered = tmp_path / "gate", tmp_path / "entered"
    entered.mkdir()
    registry.log(log_pyfunc, MODEL, FileGated(str(gate), str(entered)))  # predicts of x != 0 wait for the gate
    ids = np.arange(ROWS)
    rows = pa.table({"row_id": pa.array(ids, pa.int64()), "x": pa.array(ids + 1.0, pa.float64())})
    pq.write_table(rows, tmp_path / "in.parquet", row_group_size=ROW_GROUP)
    out = tmp_path / "out"
    with private_postgres() as database, ExitStack() as stack:  # the gateway stops before the cluster
        engine = make_engine(database.url)
        stack.callback(engine.dispose)
        upgrade(engine)
        env = {
            "GATEWAY_DATABASE_URL": database.url,
            "GATEWAY_JOBS_LEASE_SECONDS": str(LEASE),
            "GATEWAY_JOBS_POLL_SECONDS": "0.1",
            "GATEWAY_JOBS_CHUNK_ROWS": "100",
            "GATEWAY_JOBS_MAX_CHUNKS_PER_PROCESS": "2",
            "GATEWAY_LOG_LEVEL": "warning",
        }
        proc, base = gateway_server(tracking_uri=registry.tracking_uri, workdir=tmp_path / "gw", env=env)
        stack.callback(proc.stop, signal.SIGKILL)
        proc.start()
        client = stack.enter_context(httpx.Client(base_url=base, timeout=30))
        submitted = client.post(
            f"/models/{MODEL}/versions/1/jobs",
            json={"input": str(tmp_path / "in.parquet"), "output": str(out), "id_column": "row_id"},
        )
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["id"]

        wait_until(lambda: len(list(entered.iterdir())) == 2, timeout=60, what="two chunks mid-predict")
        engine.dispose()  # the test's own connections would only hold the stop up
        database.stop()
        gate.touch()  # the two chunks finish while the database is down
        wait_until(lambda: len(list(out.glob("part-*.parquet"))) == 2, timeout=30, what="the two parts written")
        time.sleep(LEASE * 1.5)  # an outage past the chunks' lease
        database.start()

        ended: dict[str, object] = {}

        def job_ended() -> bool:
            answer = client.get(f"/jobs/{job_id}")
            if answer.status_code != 200:
                return False
            ended.update(answer.json())
            return ended["state"] not in ("queued", "running")

        wait_until(job_ended, timeout=120, what="the job to end", interval=0.2)
        with engine.connect() as connection:
            attempts = connection.scalar(select(func.max(JobChunkRow.attempts)))
    assert (ended["state"], ended["rows_done"], ended["chunks_failed"]) == ("succeeded", ROWS, 0), ended
    scored = pa.concat_tables([pq.read_table(part) for part in sorted(out.glob("part-*.parquet"))])
    assert scored.column("row_id").to_pylist() == ids.tolist()  # every row once, in order
    assert scored.column("prediction").to_numpy().tolist() == (rows.column("x").to_numpy() * 2).tolist()
    # The two chunks that finished during the outage were recorded once it was back, not redone
    # (nor any other chunk): each chunk claimed once, and predicted once.
    assert attempts == 1
    assert len(list(entered.iterdir())) == ROWS // 100
