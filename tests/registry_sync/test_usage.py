"""Usage per caller, model, version and UTC day (issue 53): what each process counts adds up in
the state database (upserts that add, never overwrite), a failed flush loses nothing, and the
quotas are checked against the database's sums plus what this process counted since."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine

from gateway.admission.quotas import QuotaGuard
from gateway.admission.usage import UsageMeter
from gateway.errors import QuotaExceeded
from gateway.metrics import GatewayMetrics
from registry_sync.database import make_engine, upgrade
from registry_sync.quotas import InvalidQuotaSpec, Quota, QuotaNotFound, QuotaStore
from registry_sync.usage import UsageStore, parse_day
from tests.support.clock import ManualClock

pytestmark = pytest.mark.anyio

NOON = datetime(2026, 11, 26, 12, 0, tzinfo=UTC).timestamp()


def _meter(engine: Engine, clock: ManualClock, quotas: QuotaGuard | None = None) -> UsageMeter:
    metrics = GatewayMetrics()
    metrics.track_usage(by_caller=False)
    return UsageMeter(UsageStore(engine), metrics, interval_seconds=0, quotas=quotas, clock=clock)


async def test_what_each_process_counts_adds_up_in_the_database(engine: Engine) -> None:
    clock = ManualClock()
    clock.now = NOON
    first, second = _meter(engine, clock), _meter(engine, clock)  # two replicas
    for _ in range(3):
        first.count("alice", "iris", 1, error=False, rows=2, seconds=0.5, tokens=0)
    first.count("alice", "iris", 1, error=True, rows=0, seconds=0.0, tokens=0)
    second.count("alice", "iris", 1, error=False, rows=5, seconds=0.25, tokens=7)
    second.count("oidc:bob", "chat", 2, error=False, rows=0, seconds=0.1, tokens=40)
    assert await first.flush() and await second.flush()
    first.count("alice", "iris", 1, error=False, rows=1, seconds=0.5, tokens=0)  # a second flush adds again
    assert await first.flush()
    assert not await first.flush()  # nothing counted since: nothing written
    clock.now += 86_400  # the next UTC day is a row of its own
    first.count("alice", "iris", 1, error=False, rows=1, seconds=0.0, tokens=0)
    await first.flush()

    store = UsageStore(engine)
    lines = {(u.caller, u.name, u.version, u.day): u for u in store.lines()}
    alice = lines["alice", "iris", 1, "2026-11-26"]
    assert (alice.requests, alice.rows, alice.errors, alice.tokens) == (6, 12, 1, 7)
    assert alice.predict_seconds == pytest.approx(2.25)
    assert lines["oidc:bob", "chat", 2, "2026-11-26"].tokens == 40
    assert lines["alice", "iris", 1, "2026-11-27"].requests == 1
    assert [u.caller for u in store.lines(callers=["oidc:bob"])] == ["oidc:bob"]
    assert {u.day for u in store.lines(since="2026-11-27")} == {"2026-11-27"}
    assert {u.day for u in store.lines(until="2026-11-26")} == {"2026-11-26"}
    assert {u.name for u in store.lines(model="chat")} == {"chat"}
    assert (
        first._metrics.registry.get_sample_value("gateway_usage_requests_total", {"model": "iris", "version": "1"}) == 6
    )  # first's own: 4 + 1 + 1, per model and version, no caller label


async def test_a_failed_flush_keeps_its_counts_for_the_next(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'state.db'}")  # not migrated yet: every write fails
    try:
        clock = ManualClock()
        clock.now = NOON
        meter = _meter(engine, clock)
        meter.count("alice", "iris", 1, error=False, rows=3, seconds=0.0, tokens=0)
        assert not await meter.flush()
        meter.count("alice", "iris", 1, error=False, rows=4, seconds=0.0, tokens=0)
        upgrade(engine)
        assert await meter.flush()
        (line,) = UsageStore(engine).lines()
        assert (line.requests, line.rows) == (2, 7)
    finally:
        engine.dispose()


async def test_a_quota_counts_the_fleets_sums_and_this_process_and_resets_at_the_periods_end(engine: Engine) -> None:
    clock = ManualClock()
    clock.now = NOON
    QuotaStore(engine).put(Quota("alice-iris", "alice", "iris*", "day", "rows", 10), actor="test")
    QuotaStore(engine).put(Quota("readers", "group:ml-readers", "*", "month", "requests", 1000), actor="test")
    metrics = GatewayMetrics()
    guard = QuotaGuard(QuotaStore(engine), UsageStore(engine), metrics, clock=clock)
    other = _meter(engine, clock)  # another replica, which has no quota guard of its own here
    meter = _meter(engine, clock, guard)
    await guard.refresh()
    assert [q.name for q in guard.quotas] == ["alice-iris", "readers"]

    other.count("alice", "iris", 1, error=False, rows=6, seconds=0.0, tokens=0)
    await other.flush()
    await meter.flush()  # reads the fleet's sums: 6 rows of 10
    applied = await guard.check("alice", (), "iris")
    assert [a.quota.name for a in applied] == ["alice-iris"]
    assert await guard.check("alice", (), "wine") == []  # another model: unbounded
    assert await guard.check("carol", ("ml-readers",), "wine") != []  # a member of the group
    guard.counted(applied, rows=3, tokens=0)  # 9 of 10 as this process knows (not flushed)
    meter.count("alice", "iris", 1, error=False, rows=3, seconds=0.0, tokens=0)
    applied = await guard.check("alice", (), "iris")
    guard.counted(applied, rows=1, tokens=0)  # 10 of 10
    meter.count("alice", "iris", 1, error=False, rows=1, seconds=0.0, tokens=0)
    with pytest.raises(QuotaExceeded) as refused:
        await guard.check("alice", (), "iris")
    assert refused.value.headers == {
        "X-RateLimit-Limit": "10",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": str(12 * 3600),
    }
    assert refused.value.fields["resets_at"] == "2026-11-27T00:00:00Z"
    assert refused.value.retry_after == 12 * 3600
    await meter.flush()  # this process's counts now come from the database: still 10
    with pytest.raises(QuotaExceeded):
        await guard.check("alice", (), "iris")
    clock.now = datetime(2026, 11, 27, 0, 0, tzinfo=UTC).timestamp()  # the period's end: a new day
    assert await guard.check("alice", (), "iris") != []
    assert metrics.registry.get_sample_value("gateway_limited_total", {"limit": "quota"}) == 2


def test_quotas_are_set_replaced_listed_and_deleted_and_bad_ones_say_why(engine: Engine) -> None:
    store = QuotaStore(engine)
    store.put(Quota("q", "alice", "*", "day", "requests", 5), actor="test")
    store.put(Quota("q", "alice", "iris", "month", "tokens", 9), actor="test")  # replaced
    (quota,) = store.quotas()
    assert (quota.models, quota.period, quota.unit, quota.amount) == ("iris", "month", "tokens", 9)
    assert quota.window(NOON)[1] == datetime(2026, 12, 1, tzinfo=UTC)
    for bad, says in (
        (Quota("no spaces", "a", "*", "day", "requests", 1), "quota name"),
        (Quota("q", "", "*", "day", "requests", 1), "caller"),
        (Quota("q", "group:", "*", "day", "requests", 1), "group name"),
        (Quota("q", "a", "*", "week", "requests", 1), "period"),
        (Quota("q", "a", "*", "day", "bytes", 1), "unit"),
        (Quota("q", "a", "*", "day", "rows", 0), "at least 1"),
    ):
        with pytest.raises(InvalidQuotaSpec, match=says):
            store.put(bad, actor="test")
    store.delete("q")
    with pytest.raises(QuotaNotFound):
        store.delete("q")


def test_days_are_read_as_utc_days_and_garbage_says_so() -> None:
    assert parse_day("2026-11-26") == "2026-11-26"
    assert parse_day("2026-11-26T23:30:00-02:00") == "2026-11-27"
    with pytest.raises(ValueError, match="not a date"):
        parse_day("yesterday")


async def test_a_meter_stopped_flushes_what_it_counted(engine: Engine) -> None:
    clock = ManualClock()
    clock.now = NOON
    meter = UsageMeter(UsageStore(engine), GatewayMetrics(), interval_seconds=3600, clock=clock)
    meter._metrics.track_usage(by_caller=True)
    meter.start()
    meter.count("alice", "iris", 1, error=False, rows=2, seconds=0.0, tokens=0)
    await meter.stop()  # an hour before its first flush
    (line,) = UsageStore(engine).lines()
    assert (line.caller, line.requests, line.rows) == ("alice", 1, 2)
    by_caller = {"model": "iris", "version": "1", "caller": "alice"}
    assert meter._metrics.registry.get_sample_value("gateway_usage_rows_total", by_caller) == 2
