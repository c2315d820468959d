"""The sync leader lease on sqlite and on PostgreSQL: one holder at a time, expiry on the
database's clock, a fencing token per holder, release, and fenced writes."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, update

from registry_sync.database import make_engine, upgrade
from registry_sync.lease import Lease, NotLeader, db_now, lease_timing, new_holder_id
from registry_sync.registry import ModelRecord, VersionRecord
from registry_sync.repository import StateStore
from registry_sync.state import LeaseRow
from tests.support.postgres import postgres_database
from tests.support.waiting import wait_until


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A migrated state database: a sqlite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'state.db'}")
        upgrade(engine)
        yield engine
        engine.dispose()
        return
    with postgres_database() as url:
        engine = make_engine(url)
        upgrade(engine)
        try:
            yield engine
        finally:
            engine.dispose()


def lease(engine: Engine, holder: str, ttl: float = 30.0) -> Lease:
    return Lease(engine, ttl_seconds=ttl, holder=holder)


def expire_now(engine: Engine) -> None:
    """What time does to a lease its holder stopped renewing (without waiting for it)."""
    with engine.begin() as connection:
        connection.execute(update(LeaseRow).values(expires_at=db_now() - 1))


def row(engine: Engine) -> tuple[str | None, int, float]:
    with engine.connect() as connection:
        found = connection.execute(select(LeaseRow.holder, LeaseRow.token, LeaseRow.expires_at)).one()
    return found[0], int(found[1]), float(found[2])


def test_one_holder_at_a_time(engine: Engine) -> None:
    a, b = lease(engine, "a"), lease(engine, "b")
    assert a.acquire() and a.held and a.token == 1
    assert not b.acquire() and not b.held and b.token is None
    assert a.renew() and a.token == 1  # renewing keeps the token
    assert not b.acquire()
    assert a.current() == ("a", 1) and b.current() == ("a", 1)
    holder, token, expires_at = row(engine)
    assert (holder, token) == ("a", 1)
    assert abs(expires_at - (time.time() + 30)) < 5  # the database's clock, not a replica's


def test_expiry_lets_another_take_over_with_the_next_token(engine: Engine) -> None:
    a, b = lease(engine, "a", ttl=0.5), lease(engine, "b", ttl=0.5)
    assert a.acquire()
    wait_until(lambda: a.current() is None, timeout=10, what="the lease to expire on the database's clock")
    assert not a.held  # its own deadline passed too: it stopped acting as leader
    assert b.acquire() and b.token == 2
    assert not a.renew() and a.token is None  # lost to b
    assert b.current() == ("b", 2)


def test_a_holder_renewing_late_but_before_anyone_took_over_keeps_its_token(engine: Engine) -> None:
    a = lease(engine, "a")
    assert a.acquire()
    expire_now(engine)
    assert a.renew() and a.token == 1  # nobody held it in between: nothing to fence off


def test_release_hands_over_at_once_and_the_token_goes_up(engine: Engine) -> None:
    a, b = lease(engine, "a"), lease(engine, "b")
    assert a.acquire()
    a.release()
    assert not a.held and a.current() is None
    assert row(engine)[0] is None
    assert b.acquire() and b.token == 2
    b.release()
    assert a.acquire() and a.token == 3  # a new holder again after b
    b.release()  # not the holder: changes nothing
    assert a.current() == ("a", 3)


def test_racing_holders_one_wins(engine: Engine) -> None:
    holders = [lease(engine, new_holder_id()) for _ in range(6)]
    barrier = threading.Barrier(len(holders))
    won: list[bool] = [False] * len(holders)

    def race(index: int) -> None:
        barrier.wait()
        won[index] = holders[index].acquire()

    threads = [threading.Thread(target=race, args=(i,)) for i in range(len(holders))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sum(won) == 1, won
    winner = holders[won.index(True)]
    assert winner.current() == (winner.holder, 1)

    expire_now(engine)
    others = [i for i in range(len(holders)) if not won[i]]
    won = [False] * len(holders)
    barrier = threading.Barrier(len(others))
    threads = [threading.Thread(target=race, args=(i,)) for i in others]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sum(won) == 1, won
    assert holders[won.index(True)].token == 2


def one_model(alias_version: int) -> list[ModelRecord]:
    versions = {
        v: VersionRecord(
            name="m",
            version=v,
            status="READY",
            source=f"models:/m/{v}",
            run_id=None,
            created_ms=None,
            updated_ms=None,
            description="",
        )
        for v in (1, 2)
    }
    return [ModelRecord(name="m", description="", aliases={"champion": alias_version}, tags={}, versions=versions)]


def test_fenced_writes_refuse_a_leader_that_was_replaced(engine: Engine) -> None:
    store = StateStore(engine)
    a, b = lease(engine, "a"), lease(engine, "b")
    assert a.acquire()
    store.apply_registry(one_model(1), complete=True, actor="a", fence=a)
    assert store.generation() == 1

    # a stalls past its lease (GC pause, a partition); b takes over and writes
    expire_now(engine)
    assert b.acquire() and b.token == 2
    store.apply_registry(one_model(2), complete=True, actor="b", fence=b)
    assert a.held  # a's own clock has not caught up yet...
    with pytest.raises(NotLeader):  # ...but the database fences its write off
        store.apply_registry(one_model(1), complete=True, actor="a", fence=a)
    assert not a.held
    snapshot = store.snapshot()
    assert snapshot.routes[("m", "champion")].version == 2 and snapshot.generation == 2
    with pytest.raises(NotLeader):  # and one that never held it writes nothing either
        store.apply_registry(one_model(1), complete=True, actor="c", fence=lease(engine, "c"))


def test_lease_timing_fits_two_poll_intervals() -> None:
    for poll in (0.5, 2.0, 30.0, 300.0):
        ttl, renew = lease_timing(poll_interval_seconds=poll, lease_seconds=None)
        assert ttl <= 30 and renew == ttl / 3
        if poll >= 1:
            assert ttl + renew <= 2 * poll  # a dead leader's successor has taken over by then
    assert lease_timing(poll_interval_seconds=30, lease_seconds=6) == (6, 2)


def test_a_standby_that_cannot_reach_the_lease_says_so_once_and_again_when_it_can(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A standby's failed tries were silent: one that could never take over (its database
    unreachable) looked like one waiting its turn."""
    engine = make_engine(f"sqlite:///{tmp_path / 'state.db'}")
    upgrade(engine)
    leader, standby = lease(engine, "a"), lease(engine, "b")
    assert leader.acquire()
    caplog.set_level("WARNING", logger="registry_sync.lease")
    assert not standby.acquire()  # waiting its turn: nothing to say
    assert caplog.records == []
    with engine.begin() as connection:  # a real database error on every try
        connection.exec_driver_sql("ALTER TABLE leases RENAME TO leases_away")
    for _ in range(3):
        assert not standby.acquire()
    failures = [r.getMessage() for r in caplog.records]
    assert len(failures) == 1 and "could not try for the 'sync' lease" in failures[0] and "leases" in failures[0]
    with engine.begin() as connection:
        connection.exec_driver_sql("ALTER TABLE leases_away RENAME TO leases")
    assert not standby.acquire()  # the leader still holds it
    assert [r.getMessage() for r in caplog.records][1:] == ["the 'sync' lease's database answers again"]
    engine.dispose()
