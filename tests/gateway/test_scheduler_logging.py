"""APScheduler's two INFO lines a poll ("Running job ...", "... executed successfully") stay out
of an INFO log (issue 25): at the default level the log says what happened, not that a timer
fired. At DEBUG they are there."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import pytest

from tests.conftest import Gateway, Registry
from tests.support.waiting import until

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def registry(sqlite_registry: Registry) -> Registry:
    return sqlite_registry


@pytest.mark.parametrize(("level", "shown"), [(logging.INFO, False), (logging.DEBUG, True)])
async def test_the_scheduler_logs_each_poll_only_at_debug(
    make_gateway: Callable[..., AbstractAsyncContextManager[Gateway]],
    caplog: pytest.LogCaptureFixture,
    level: int,
    shown: bool,
) -> None:
    logging.getLogger("apscheduler.executors").setLevel(logging.NOTSET)  # as a new process has it
    caplog.set_level(level)
    async with make_gateway(poll_interval_seconds=0.2) as gw:
        sample = gw.services.metrics.registry.get_sample_value
        runs = lambda: sample("gateway_sync_runs_total", {"outcome": "success"}) or 0.0  # noqa: E731
        before = runs()
        await until(lambda: runs() >= before + 2, "two scheduled polls", timeout=30)
    polls = [r for r in caplog.records if r.name.startswith("apscheduler.executors")]
    assert bool(polls) is shown, [r.getMessage() for r in polls]
