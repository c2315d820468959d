"""A background pass that keeps failing is told once, and its recovery once (registry_sync/periodic.py)."""

from __future__ import annotations

import logging

import pytest

from registry_sync.periodic import Outage


def test_an_outage_is_told_once_and_its_end_once(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("tests.outage")
    outage = Outage(log, "could not publish the counts (trying again)", "publishing the counts again")
    with caplog.at_level(logging.INFO, logger="tests.outage"):
        outage.passed()  # nothing was failing: nothing to say
        for attempt in range(5):
            outage.failed(f"database down ({attempt})")
        assert outage.ongoing
        outage.passed()
        outage.passed()
        outage.failed("down again")
    told = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "tests.outage"]
    assert told == [
        ("WARNING", "could not publish the counts (trying again): database down (0)"),
        ("INFO", "publishing the counts again"),
        ("WARNING", "could not publish the counts (trying again): down again"),
    ]


@pytest.mark.anyio
async def test_a_loop_runs_its_passes_only_when_asked_and_never_at_interval_zero() -> None:
    import asyncio

    from registry_sync.periodic import Periodic

    passes: list[bool] = []
    asked = 0
    leading = False
    skipped_thrice, ran = asyncio.Event(), asyncio.Event()

    def when() -> bool:
        nonlocal asked
        asked += 1
        if asked == 3:
            skipped_thrice.set()
        return leading

    async def step() -> None:
        passes.append(leading)
        ran.set()

    log = logging.getLogger("tests.periodic")
    off = Periodic("off", 0, step, log=log)
    off.start()  # interval 0: a loop that never starts
    loop = Periodic("leader only", 0.01, step, log=log, when=when)
    loop.start()
    await asyncio.wait_for(skipped_thrice.wait(), timeout=10)  # three intervals, not leading
    assert passes == []
    leading = True
    await asyncio.wait_for(ran.wait(), timeout=10)
    await loop.stop()
    await off.stop()
    assert passes and all(passes)


@pytest.mark.anyio
async def test_a_publishing_loop_makes_one_last_pass_when_stopped_and_one_never_started_none() -> None:
    from registry_sync.periodic import Periodic

    passes = 0

    async def step() -> None:
        nonlocal passes
        passes += 1

    log = logging.getLogger("tests.periodic")
    never = Periodic("never started", 3600, step, log=log, last_pass=True)
    await never.stop()
    assert passes == 0
    publishing = Periodic("publishing", 3600, step, log=log, last_pass=True)
    publishing.start()
    await publishing.stop()  # an hour before its first pass: the last one is its only one
    assert passes == 1
