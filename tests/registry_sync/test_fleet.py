"""The fleet in the state database (registry_sync.fleet), on sqlite and PostgreSQL: members'
reports and heartbeats, each replica's history, and who counts as another replica."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import Engine

from registry_sync.fleet import DRAINING, READY, STOPPED, FleetStore, Holding, MemberReport, Served
from tests.support.versions import vid

HOUR = 3600.0


@pytest.fixture
def fleet(engine: Engine) -> FleetStore:
    return FleetStore(engine)


def report(member: str, replica: str, state: str = READY, role: str = "gateway", **fields: object) -> MemberReport:
    return MemberReport(member=member, replica=replica, role=role, state=state, **fields)  # type: ignore[arg-type]


def test_a_member_reports_its_state_and_holdings_and_its_start_stays(fleet: FleetStore) -> None:
    holding = Holding("iris", 3, size_bytes=12_800, last_served=1_000.5, in_use=1)
    fleet.report(
        report("a:1:x", "a:8000", state="starting", max_models=16, budget_bytes=2**31),
        replica_now=time.time(),
        forget_after=HOUR,
        history_seconds=HOUR,
    )
    [first] = fleet.members()
    fleet.report(
        report("a:1:x", "a:8000", loaded_bytes=12_800, holdings=(holding,), max_models=16, budget_bytes=2**31),
        replica_now=time.time(),
        forget_after=HOUR,
        history_seconds=HOUR,
    )
    [member] = fleet.members()
    assert (member.state, member.role, member.replica) == (READY, "gateway", "a:8000")
    assert member.holdings == [holding] and member.loaded_bytes == 12_800 and member.budget_bytes == 2**31
    assert member.started_at == first.started_at and member.seen_at >= first.seen_at  # a heartbeat, not a new start
    assert member.age_seconds < 60


def test_history_keeps_each_replicas_latest_use_by_identity_and_forgets_old_ones(fleet: FleetStore) -> None:
    now = time.time()
    old = Served(vid("old", 1), 10, last_served=now - 2 * HOUR)
    iris = Served(vid("iris", 1), 100, last_served=now - 60)
    fleet.report(report("a:1:x", "a:8000"), [old, iris], replica_now=now, forget_after=HOUR, history_seconds=3 * HOUR)
    # a second worker of the same replica reports an older use of iris, and a newer one of another model
    torch = Served(vid("torch", 2), 5_000, last_served=now - 5)
    fleet.report(
        report("a:2:y", "a:8000"),
        [Served(vid("iris", 1), 99, last_served=now - 600), torch],
        replica_now=now,
        forget_after=HOUR,
        history_seconds=3 * HOUR,
    )
    fleet.report(report("b:1:z", "b:8000"), [iris], replica_now=now, forget_after=HOUR, history_seconds=3 * HOUR)

    history = fleet.history("a:8000", within=HOUR, now=now)
    assert history == [torch, iris]  # most recent first; the older use did not overwrite the newer
    assert [s.id for s in fleet.history("a:8000", within=3 * HOUR, now=now)] == [torch.id, iris.id, old.id]
    # a replica's report deletes its own uses past the history window, no other replica's
    fleet.report(report("a:1:x", "a:8000"), replica_now=now, forget_after=HOUR, history_seconds=HOUR)
    assert [s.id for s in fleet.history("a:8000", within=3 * HOUR, now=now)] == [torch.id, iris.id]
    assert fleet.history("b:8000", within=HOUR, now=now) == [iris]


def test_a_version_recreated_under_its_number_is_another_in_the_history(fleet: FleetStore) -> None:
    now = time.time()
    before = Served(vid("m", 1, source="models:/m-before", created_ms=1), 10, last_served=now - 100)
    after = Served(vid("m", 1, source="models:/m-after", created_ms=2), 20, last_served=now - 10)
    fleet.report(report("a:1:x", "a:8000"), [before], replica_now=now, forget_after=HOUR, history_seconds=HOUR)
    fleet.report(report("a:1:x", "a:8000"), [after], replica_now=now, forget_after=HOUR, history_seconds=HOUR)
    [kept] = fleet.history("a:8000", within=HOUR, now=now)
    assert kept.id == after.id and kept.size_bytes == 20


def test_other_serving_replicas_leave_out_this_one_sync_processes_and_the_stopped(fleet: FleetStore) -> None:
    now = time.time()
    for member, replica, role, state in [
        ("a:1:x", "a:8000", "all", READY),  # this one
        ("a:2:y", "a:8000", "all", READY),  # another worker of this one
        ("b:1:x", "b:8000", "gateway", DRAINING),
        ("c:1:x", "c:8000", "gateway", STOPPED),
        ("s:1:x", "s:8000", "sync", READY),
    ]:
        fleet.report(report(member, replica, state, role), replica_now=now, forget_after=HOUR, history_seconds=HOUR)
    assert fleet.other_serving_replicas("a:8000", within=60) == ["b:8000"]
    assert fleet.other_serving_replicas("b:8000", within=60) == ["a:8000"]


def test_members_silent_past_the_forget_window_are_deleted(fleet: FleetStore) -> None:
    now = time.time()
    fleet.report(report("gone:1:x", "gone:8000"), replica_now=now, forget_after=HOUR, history_seconds=HOUR)
    # anyone's report deletes members silent for longer than its forget window (on the database's clock)
    fleet.report(report("a:1:x", "a:8000"), replica_now=now, forget_after=0.0, history_seconds=HOUR)
    assert [m.member for m in fleet.members()] == ["a:1:x"]
