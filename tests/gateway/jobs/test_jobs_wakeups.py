"""On PostgreSQL a job submitted to one process is claimed by the others at once, not at their
next poll (registry_sync/jobs/wakeups.py: LISTEN/NOTIFY), on a sqlite registry and a real
``mlflow server``: a serving process that runs no chunks takes the jobs, and a ``--role jobs``
process whose poll is an hour runs them."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from registry_sync.database import make_engine, upgrade
from tests.conftest import Gateway, Registry
from tests.gateway.jobs.test_jobs import JOB_SETTINGS, assert_scored_as_pyfunc, ended, iris_rows, output_rows
from tests.gateway.jobs.test_jobs_role import submit
from tests.support.postgres import postgres_database
from tests.support.waiting import eventually

pytestmark = pytest.mark.anyio

ROWS = 250  # three chunks of at most 100 rows (JOB_SETTINGS)


@pytest.mark.parametrize("registry", ["sqlite"], indirect=True)
async def test_a_job_submitted_to_one_process_is_claimed_by_another_at_once_not_at_its_poll(
    make_gateway: Callable[..., AbstractAsyncContextManager[Gateway]], registry: Registry, tmp_path: Path
) -> None:
    pq.write_table(iris_rows(ROWS), tmp_path / "in.parquet", row_group_size=50)
    never_polls = {**JOB_SETTINGS, "jobs_poll_seconds": 3600.0}
    with postgres_database() as url:
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        async with (
            make_gateway(
                **JOB_SETTINGS, database_url=url, jobs_max_chunks_per_process=0, replica_id="serving:1"
            ) as serving,
            make_gateway(**never_polls, database_url=url, replica_id="jobs:1", role="jobs") as jobs,
        ):
            wakeups = jobs.services.jobs._runner.wakeups
            assert wakeups is not None and serving.services.jobs._runner.wakeups is None  # runs no chunks: no listener

            async def listening() -> bool | None:
                return wakeups.listening.is_set() or None

            await eventually(listening, "the jobs process to listen", timeout=30)
            # Two jobs one after the other: the second is submitted long after whatever the
            # listener's first wake-up (on starting to listen) made the jobs process claim.
            for name in ("first", "second"):
                done = await ended(serving, await submit(serving, tmp_path / "in.parquet", tmp_path / name), timeout=30)
                assert (done["state"], done["rows_done"], done["chunks_total"]) == ("succeeded", ROWS, 3), done
                assert_scored_as_pyfunc(registry, 1, iris_rows(ROWS), output_rows(tmp_path / name, "parquet"))
