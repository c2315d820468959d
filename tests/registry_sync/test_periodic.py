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
