"""The state database on sqlite and on PostgreSQL: migrations, the schema check, the CLI's
``db`` commands, and every StateStore read and write.

Tests that take ``state_url`` run on both backends. The PostgreSQL run gets a fresh
database per test (tests/support/postgres.py): it skips where no server answers, and
fails in CI (``CI=true``), where it must run.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, func, select, text
from sqlalchemy.engine import make_url

from registry_sync.database import (
    SchemaOutdated,
    check_schema,
    current_revision,
    head_revision,
    make_engine,
    upgrade,
)
from registry_sync.registry import ModelRecord, VersionRecord
from registry_sync.repository import EXPECTED_DIGEST_TAG, ArmCount, EventKind, StateStore, WrongRegistry
from registry_sync.state import Base, WebhookDeliveryRow
from tests.support.postgres import admin_engine, postgres_database
from tests.support.servers import BIN, free_port
from tests.support.waiting import wait_until

ACTOR = "test"
HOUR = timedelta(hours=1)
DIGEST_A = hashlib.sha256(b"a").hexdigest()
DIGEST_B = hashlib.sha256(b"b").hexdigest()
UPGRADE_COMMAND = "registry-gateway db upgrade"


# --- fixtures -------------------------------------------------------------------------


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with postgres_database() as url:
        yield url


@pytest.fixture
def engine(state_url: str) -> Iterator[Engine]:
    engine = make_engine(state_url)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def store(engine: Engine) -> StateStore:
    upgrade(engine)
    return StateStore(engine)


# --- helpers --------------------------------------------------------------------------


def version(
    name: str,
    number: int,
    *,
    status: str = "READY",
    tags: dict[str, str] | None = None,
    source: str | None = None,
    created_ms: int | None = None,
) -> VersionRecord:
    return VersionRecord(
        name=name,
        version=number,
        status=status,
        source=source or f"models:/m-{name}-{number}",
        run_id=f"run{number}",
        created_ms=created_ms if created_ms is not None else 1_700_000_000_000 + number,
        updated_ms=None,
        description="",
        tags=dict(tags or {}),
    )


def model(name: str, *versions: VersionRecord, aliases: dict[str, int] | None = None) -> ModelRecord:
    return ModelRecord(
        name=name,
        description="",
        aliases=dict(aliases or {}),
        tags={},
        versions={v.version: v for v in versions},
    )


def kinds(store: StateStore, name: str | None = None) -> list[tuple[str, str, int | None, str | None, str]]:
    """(kind, name, version, alias, reason) of every event, oldest first."""
    return [(e.kind, e.name, e.version, e.alias, e.reason) for e in reversed(store.events(name=name, limit=1000))]


def cli(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "registry-gateway"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **env},
    )


def cli_env(database_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        "GATEWAY_DATABASE_URL": database_url,
        "GATEWAY_ARTIFACT_CACHE_DIR": str(tmp_path / "artifact-cache"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
    }


# --- migrations and the schema check ----------------------------------------------------


def test_upgrade_from_empty_reaches_head_and_is_idempotent(engine: Engine) -> None:
    assert current_revision(engine) is None
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    upgrade(engine)  # a second run (a second replica, a rerun deploy step) changes nothing
    assert current_revision(engine) == head_revision()
    store = StateStore(engine)
    assert store.generation() == 0
    status = store.sync_status()
    assert (status.generation, status.last_attempt_at, status.last_success_at, status.last_error) == (
        0,
        None,
        None,
        None,
    )


def test_migrated_schema_matches_the_models(engine: Engine) -> None:
    """The migrations and registry_sync.state never drift apart."""
    upgrade(engine)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True, "compare_server_default": True})
        differences = compare_metadata(context, Base.metadata)
    assert differences == []


def test_check_schema_refuses_an_empty_database_naming_the_upgrade_command(engine: Engine) -> None:
    with pytest.raises(SchemaOutdated) as raised:
        check_schema(engine, auto_upgrade=False)
    assert UPGRADE_COMMAND in str(raised.value)
    assert raised.value.current is None and raised.value.head == head_revision()
    assert current_revision(engine) is None  # refusing does not touch the database


def test_check_schema_upgrades_when_allowed(engine: Engine) -> None:
    check_schema(engine, auto_upgrade=True)
    assert current_revision(engine) == head_revision()
    check_schema(engine, auto_upgrade=False)  # at head: nothing to refuse


def test_upgrade_with_a_password_that_needs_url_escaping() -> None:
    admin = admin_engine()
    role = f"gw_test_role_{uuid.uuid4().hex[:12]}"
    password = "p@ss%w:rd/1"
    try:
        with admin.connect() as connection:
            connection.execute(text(f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}'"))
        with postgres_database() as url:
            with admin.connect() as connection:
                connection.execute(text(f'ALTER DATABASE "{make_url(url).database}" OWNER TO "{role}"'))
            owner_url = make_url(url).set(username=role, password=password).render_as_string(hide_password=False)
            engine = make_engine(owner_url)
            try:
                upgrade(engine)
                assert current_revision(engine) == head_revision()
            finally:
                engine.dispose()
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP ROLE IF EXISTS "{role}"'))
        admin.dispose()


# --- the CLI ----------------------------------------------------------------------------


def test_serve_refuses_an_empty_postgres_database_until_db_upgrade(postgres_url: str, tmp_path: Path) -> None:
    env = cli_env(postgres_url, tmp_path)
    try:
        served = cli("serve", "--port", str(free_port()), env=env, timeout=60)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"serve kept running on an un-migrated PostgreSQL database instead of refusing: {exc.stderr!r}")
    assert served.returncode != 0
    assert UPGRADE_COMMAND in served.stderr
    assert "Uvicorn running" not in served.stderr
    engine = make_engine(postgres_url)
    try:
        assert current_revision(engine) is None  # PostgreSQL is never upgraded behind the operator's back
    finally:
        engine.dispose()

    upgraded = cli("db", "upgrade", env=env)
    assert upgraded.returncode == 0, upgraded.stderr
    assert head_revision() in upgraded.stdout
    current = cli("db", "current", env=env)
    assert current.returncode == 0, current.stderr
    assert f"current: {head_revision()}" in current.stdout


def test_db_upgrade_and_current_on_the_cli(state_url: str, tmp_path: Path) -> None:
    env = cli_env(state_url, tmp_path)
    before = cli("db", "current", env=env)
    assert before.returncode == 0, before.stderr
    assert "current: empty" in before.stdout and f"needed: {head_revision()}" in before.stdout
    for _ in range(2):  # the second run is harmless
        upgraded = cli("db", "upgrade", env=env)
        assert upgraded.returncode == 0, upgraded.stderr
    assert f"(was {head_revision()})" in upgraded.stdout
    after = cli("db", "current", env=env)
    assert after.returncode == 0, after.stderr
    assert f"current: {head_revision()}; needed: {head_revision()}" in after.stdout


# --- apply_registry ---------------------------------------------------------------------


def test_new_versions_are_detected_and_bump_the_generation_once(store: StateStore) -> None:
    listing = [model("iris", version("iris", 1), version("iris", 2, status="PENDING_REGISTRATION"))]
    changes = store.apply_registry(listing, complete=True, actor=ACTOR)
    assert sorted(changes.new_versions) == [("iris", 1), ("iris", 2)]
    assert changes.any
    assert store.generation() == 1
    assert kinds(store) == [
        ("detected", "iris", 1, None, "status READY"),
        ("detected", "iris", 2, None, "status PENDING_REGISTRATION"),
    ]
    snapshot = store.snapshot()
    assert snapshot.generation == 1
    assert set(snapshot.versions) == {("iris", 1), ("iris", 2)}
    first = snapshot.versions[("iris", 1)]
    assert (first.status, first.source, first.run_id, first.digest, first.deleted) == (
        "READY",
        "models:/m-iris-1",
        "run1",
        None,
        False,
    )
    assert first.ready and not snapshot.versions[("iris", 2)].ready
    assert events_seen(store) == 2

    again = store.apply_registry(listing, complete=True, actor=ACTOR)
    assert not again.any and again.new_versions == [] and again.alias_moves == []
    assert store.generation() == 1
    assert events_seen(store) == 2

    store.apply_registry(
        [model("iris", version("iris", 1), version("iris", 2), version("iris", 3))], complete=True, actor=ACTOR
    )
    assert store.generation() == 2  # one call, two changes (a status, a new version): one bump


def events_seen(store: StateStore) -> int:
    return len(store.events(limit=1000))


def test_alias_set_moved_and_deleted(store: StateStore) -> None:
    versions = (version("iris", 1), version("iris", 2))
    store.apply_registry([model("iris", *versions, aliases={"champion": 1})], complete=True, actor=ACTOR)
    snapshot = store.snapshot()
    route = snapshot.routes[("iris", "champion")]
    assert (route.version, route.active_version, route.generation) == (1, None, snapshot.generation)
    assert snapshot.model_names() == ["iris"]

    changes = store.apply_registry([model("iris", *versions, aliases={"champion": 2})], complete=True, actor=ACTOR)
    assert changes.alias_moves == [("iris", "champion", 2)] and changes.new_versions == []
    moved = store.snapshot()
    assert moved.generation == snapshot.generation + 1
    assert moved.routes[("iris", "champion")].version == 2
    assert moved.routes[("iris", "champion")].generation == moved.generation

    store.apply_registry([model("iris", *versions)], complete=True, actor=ACTOR)
    deleted = store.snapshot()
    assert deleted.generation == moved.generation + 1
    assert deleted.routes == {}
    assert [k for k in kinds(store) if k[0].startswith("alias")] == [
        ("alias_set", "iris", 1, "champion", "champion -> 1"),
        ("alias_set", "iris", 2, "champion", "champion 1 -> 2"),
        ("alias_deleted", "iris", 2, "champion", ""),
    ]


def test_status_and_tag_changes_are_events(store: StateStore) -> None:
    store.apply_registry(
        [model("iris", version("iris", 1, status="PENDING_REGISTRATION", tags={"team": "a", "stage": "x"}))],
        complete=True,
        actor=ACTOR,
    )
    generation = store.generation()
    changes = store.apply_registry(
        [model("iris", version("iris", 1, status="READY", tags={"team": "b", "owner": "me"}))],
        complete=True,
        actor=ACTOR,
    )
    assert changes.new_versions == [("iris", 1)]  # it became READY: servable now
    assert store.generation() == generation + 1
    assert kinds(store)[-2:] == [
        ("status_changed", "iris", 1, None, "PENDING_REGISTRATION -> READY"),
        ("tags_changed", "iris", 1, None, "owner, stage, team"),
    ]
    state = store.version("iris", 1)
    assert state is not None
    assert state.status == "READY" and state.tags == {"team": "b", "owner": "me"}

    store.apply_registry([model("iris", version("iris", 1, status="FAILED_REGISTRATION"))], complete=False, actor=ACTOR)
    assert kinds(store)[-2:] == [
        ("status_changed", "iris", 1, None, "READY -> FAILED_REGISTRATION"),
        ("tags_changed", "iris", 1, None, "owner, team"),
    ]
    assert store.generation() == generation + 2


def test_a_version_gone_from_a_listed_model_is_deleted_and_can_come_back(store: StateStore) -> None:
    store.apply_registry([model("iris", version("iris", 1), version("iris", 2))], complete=False, actor=ACTOR)
    store.apply_registry([model("iris", version("iris", 2))], complete=False, actor=ACTOR)
    gone = store.version("iris", 1)
    assert gone is not None and gone.deleted and not gone.ready
    assert kinds(store)[-1] == ("deleted", "iris", 1, None, "gone from the registry")
    changes = store.apply_registry([model("iris", version("iris", 1), version("iris", 2))], complete=False, actor=ACTOR)
    assert changes.new_versions == [("iris", 1)]
    back = store.version("iris", 1)
    assert back is not None and not back.deleted
    assert kinds(store)[-1] == ("detected", "iris", 1, None, "status READY")


def test_a_complete_listing_deletes_missing_models(store: StateStore) -> None:
    listing = [
        model("iris", version("iris", 1), version("iris", 2), aliases={"champion": 2}),
        model("wine", version("wine", 1)),
    ]
    store.apply_registry(listing, complete=True, actor=ACTOR)
    generation = store.generation()

    changes = store.apply_registry([model("wine", version("wine", 1))], complete=True, actor=ACTOR)
    assert changes.any
    assert store.generation() == generation + 1
    snapshot = store.snapshot()
    assert snapshot.versions[("iris", 1)].deleted and snapshot.versions[("iris", 2)].deleted
    assert not snapshot.versions[("wine", 1)].deleted
    assert ("iris", "champion") not in snapshot.routes
    assert sorted(k[0] for k in kinds(store, "iris")[-3:]) == ["alias_deleted", "deleted", "deleted"]
    assert kinds(store, "wine") == [("detected", "wine", 1, None, "status READY")]


def test_a_partial_listing_leaves_unlisted_models_alone(store: StateStore) -> None:
    listing = [
        model("iris", version("iris", 1), aliases={"champion": 1}),
        model("wine", version("wine", 1)),
    ]
    store.apply_registry(listing, complete=True, actor=ACTOR)
    before = store.snapshot()
    events_before = events_seen(store)

    changes = store.apply_registry([model("wine", version("wine", 1))], complete=False, actor=ACTOR)
    assert not changes.any
    after = store.snapshot()
    assert after.generation == before.generation
    assert after.versions == before.versions and after.routes == before.routes
    assert events_seen(store) == events_before

    store.apply_registry([model("wine", version("wine", 1), version("wine", 2))], complete=False, actor=ACTOR)
    assert store.generation() == before.generation + 1
    iris = store.version("iris", 1)
    assert iris is not None and not iris.deleted
    assert ("iris", "champion") in store.snapshot().routes


# --- pin_digest -------------------------------------------------------------------------


def test_the_first_digest_pins_and_the_same_digest_passes(store: StateStore) -> None:
    store.apply_registry([model("iris", version("iris", 1))], complete=True, actor=ACTOR)
    generation = store.generation()
    result = store.pin_digest(version("iris", 1).id, DIGEST_A, actor=ACTOR)
    assert result.ok and result.digest == DIGEST_A and result.reason is None
    assert kinds(store)[-1] == ("verified", "iris", 1, None, f"pinned sha256 {DIGEST_A}")
    assert store.generation() == generation + 1
    pinned = store.version("iris", 1)
    assert pinned is not None and pinned.digest == DIGEST_A and pinned.refused_reason is None

    events = events_seen(store)
    again = store.pin_digest(version("iris", 1).id, DIGEST_A, actor=ACTOR)
    assert again.ok and again.reason is None
    assert events_seen(store) == events
    assert store.generation() == generation + 1


def test_replicas_pinning_at_once_pin_the_first_digest_only(store: StateStore, state_url: str) -> None:
    """Two processes (two engines) pin the same versions at the same moment with different
    bytes: per version one digest is pinned, once, and the other is refused naming both;
    never two pins, never the second overwriting the first (sqlite has no FOR UPDATE)."""
    versions = [version("iris", n) for n in range(1, 13)]
    store.apply_registry([model("iris", *versions)], complete=True, actor=ACTOR)
    generation = store.generation()
    engines = [make_engine(state_url) for _ in range(2)]
    stores = [StateStore(engine) for engine in engines]
    barrier = threading.Barrier(2)

    def pin_all(replica: StateStore, digest: str) -> list[bool]:
        results = []
        for each in versions:
            barrier.wait(timeout=30)
            results.append(replica.pin_digest(each.id, digest, actor=ACTOR).ok)
        return results

    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            first, second = pool.map(pin_all, stores, [DIGEST_A, DIGEST_B])
    finally:
        for engine in engines:
            engine.dispose()
    assert [a != b for a, b in zip(first, second, strict=True)] == [True] * len(versions)
    events = kinds(store, "iris")
    for each, won_by_a in zip(versions, first, strict=True):
        state = store.version("iris", each.version)
        assert state is not None and state.digest == (DIGEST_A if won_by_a else DIGEST_B)
        assert (
            state.refused_reason is not None and DIGEST_A in state.refused_reason and DIGEST_B in state.refused_reason
        )
        mine = [kind for kind, _, number, _, _ in events if number == each.version]
        assert mine.count("verified") == 1 and mine.count("refused") == 1
    assert store.generation() == generation + 2 * len(versions)


def test_a_different_digest_is_refused_for_good(store: StateStore) -> None:
    store.apply_registry([model("iris", version("iris", 1))], complete=True, actor=ACTOR)
    assert store.pin_digest(version("iris", 1).id, DIGEST_A, actor=ACTOR).ok
    generation = store.generation()

    changed = store.pin_digest(version("iris", 1).id, DIGEST_B, actor=ACTOR)
    assert not changed.ok
    assert changed.reason is not None and DIGEST_A in changed.reason and DIGEST_B in changed.reason
    assert kinds(store)[-1] == ("refused", "iris", 1, None, changed.reason)
    assert store.generation() == generation + 1
    state = store.version("iris", 1)
    assert state is not None and state.refused_reason == changed.reason and state.digest == DIGEST_A

    events = events_seen(store)
    original = store.pin_digest(
        version("iris", 1).id, DIGEST_A, actor=ACTOR
    )  # bytes changed in place once: never again
    assert not original.ok and original.reason == changed.reason
    assert events_seen(store) == events  # already refused: no second event
    assert store.generation() == generation + 1


def test_a_digest_other_than_the_tag_is_refused_at_the_first_pin(store: StateStore) -> None:
    tags = {EXPECTED_DIGEST_TAG: f" {DIGEST_B.upper()} "}
    store.apply_registry([model("iris", version("iris", 1, tags=tags))], complete=True, actor=ACTOR)
    assert store.snapshot().versions[("iris", 1)].expected_digest == DIGEST_B

    result = store.pin_digest(version("iris", 1).id, DIGEST_A, actor=ACTOR)
    assert not result.ok
    assert result.reason is not None and DIGEST_A in result.reason and DIGEST_B in result.reason
    assert EXPECTED_DIGEST_TAG in result.reason
    state = store.version("iris", 1)
    assert state is not None and state.digest is None and state.refused_reason == result.reason
    assert not store.pin_digest(version("iris", 1).id, DIGEST_B, actor=ACTOR).ok  # refused stays refused


def test_a_digest_equal_to_the_tag_pins(store: StateStore) -> None:
    tags = {EXPECTED_DIGEST_TAG: DIGEST_A.upper()}
    store.apply_registry([model("iris", version("iris", 1, tags=tags))], complete=True, actor=ACTOR)
    assert store.pin_digest(version("iris", 1).id, DIGEST_A, actor=ACTOR).ok
    state = store.version("iris", 1)
    assert state is not None and state.digest == DIGEST_A


def test_a_pin_for_a_version_the_registry_does_not_have_pins_nothing(store: StateStore) -> None:
    assert store.version("late", 7) is None
    result = store.pin_digest(version("late", 7).id, DIGEST_A, actor=ACTOR)
    assert not result.ok and result.stale
    assert store.version("late", 7) is None and kinds(store, "late") == [] and store.generation() == 0


# --- version identity ---------------------------------------------------------------------


def test_a_version_recreated_under_an_old_number_is_a_new_version(store: StateStore) -> None:
    old = version("iris", 1, source="models:/m-old", created_ms=1000)
    store.apply_registry([model("iris", old, aliases={"champion": 1})], complete=True, actor=ACTOR)
    assert store.pin_digest(old.id, DIGEST_A, actor=ACTOR).ok
    store.apply_registry([], complete=True, actor=ACTOR)  # the model is deleted...
    assert store.version("iris", 1).deleted  # type: ignore[union-attr]
    new = version("iris", 1, source="models:/m-new", created_ms=2000)  # ...and registered again
    changes = store.apply_registry([model("iris", new, aliases={"champion": 1})], complete=True, actor=ACTOR)
    assert changes.new_versions == [("iris", 1)]
    state = store.version("iris", 1)
    assert state is not None and state.id == new.id and not state.deleted
    assert state.digest is None and state.refused_reason is None  # the old pin is not the new one's
    replaced = [k for k in kinds(store, "iris") if k[0] == "replaced"]
    assert len(replaced) == 1 and "deleted" in replaced[0][4] and "m-old" in replaced[0][4]
    stale = store.pin_digest(old.id, DIGEST_A, actor=ACTOR)  # a load of the old one, finishing late
    assert stale.stale and not stale.ok and store.version("iris", 1).digest is None  # type: ignore[union-attr]
    assert store.pin_digest(new.id, DIGEST_B, actor=ACTOR).ok


def test_a_version_recreated_between_two_passes_is_caught_without_seeing_the_deletion(store: StateStore) -> None:
    old = version("iris", 1, source="models:/m-old", created_ms=1000)
    store.apply_registry([model("iris", old)], complete=True, actor=ACTOR)
    assert store.pin_digest(old.id, DIGEST_A, actor=ACTOR).ok
    assert not store.pin_digest(old.id, DIGEST_B, actor=ACTOR).ok  # refused, for the old one
    same_source = version("iris", 1, source="models:/m-old", created_ms=5000)  # re-registered from the same model
    store.apply_registry([model("iris", same_source)], complete=False, actor=ACTOR)
    state = store.version("iris", 1)
    assert state is not None and state.id == same_source.id
    assert state.digest is None and state.refused_reason is None
    assert [k[0] for k in kinds(store, "iris")].count("replaced") == 1


def test_rows_recorded_before_creation_times_keep_their_pins(store: StateStore, engine: Engine) -> None:
    first = version("iris", 1)
    store.apply_registry([model("iris", first)], complete=True, actor=ACTOR)
    assert store.pin_digest(first.id, DIGEST_A, actor=ACTOR).ok
    with engine.begin() as connection:  # as migration 0004 leaves a row it found
        connection.execute(text("UPDATE model_versions SET created_ms = NULL"))
    store.apply_registry([model("iris", first)], complete=True, actor=ACTOR)
    state = store.version("iris", 1)
    assert state is not None and state.created_ms == first.created_ms and state.digest == DIGEST_A
    assert "replaced" not in [k[0] for k in kinds(store, "iris")]


def test_digest_tags_pin_without_a_download_and_refuse_a_later_mismatch(store: StateStore) -> None:
    tagged = version("iris", 1, tags={EXPECTED_DIGEST_TAG: DIGEST_A.upper()})
    plain = version("iris", 2)
    changes = store.apply_registry([model("iris", tagged, plain)], complete=True, actor=ACTOR)
    assert store.apply_digest_tags(changes.retagged, actor=ACTOR) == (1, 0)
    assert store.version("iris", 1).digest == DIGEST_A  # type: ignore[union-attr]
    assert store.version("iris", 2).digest is None  # type: ignore[union-attr]
    assert store.pin_digest(plain.id, DIGEST_A, actor=ACTOR).ok
    retag = version("iris", 2, tags={EXPECTED_DIGEST_TAG: DIGEST_B})  # a tag set after the pin
    changes = store.apply_registry([model("iris", tagged, retag)], complete=True, actor=ACTOR)
    assert changes.retagged == [("iris", 2)]
    assert store.apply_digest_tags(changes.retagged, actor=ACTOR) == (0, 1)
    assert EXPECTED_DIGEST_TAG in (store.version("iris", 2).refused_reason or "")  # type: ignore[union-attr]


def test_served_states_are_what_routes_point_at_and_what_was_asked(store: StateStore) -> None:
    versions = [version("iris", n) for n in (1, 2, 3, 4)]
    store.apply_registry([model("iris", *versions, aliases={"champion": 1})], complete=True, actor=ACTOR)
    for record in versions[:3]:
        assert store.pin_digest(record.id, DIGEST_A, actor=ACTOR).ok
    store.set_active("iris", "champion", 2, previous=None, actor=ACTOR)
    assert [s.version for s in store.served_states(extra=[("iris", 3), ("iris", 4)])] == [1, 2, 3]  # 4: no pin


# --- set_active, record, sync status --------------------------------------------------


def test_set_active_records_the_swap(store: StateStore) -> None:
    store.apply_registry(
        [model("iris", version("iris", 1), version("iris", 2), aliases={"champion": 1})], complete=True, actor=ACTOR
    )
    store.set_active("iris", "champion", 1, previous=None, actor="gw-1")
    assert store.snapshot().routes[("iris", "champion")].active_version == 1
    store.apply_registry(
        [model("iris", version("iris", 1), version("iris", 2), aliases={"champion": 2})], complete=True, actor=ACTOR
    )
    route = store.snapshot().routes[("iris", "champion")]
    assert (route.version, route.active_version) == (2, 1)  # MLflow moved it; the gateways still serve 1
    store.set_active("iris", "champion", 2, previous=1, actor="gw-1")
    assert store.snapshot().routes[("iris", "champion")].active_version == 2
    swaps = [e for e in store.events(limit=1000) if e.kind == EventKind.SWAPPED]
    assert [(e.version, e.alias, e.reason, e.actor) for e in swaps] == [
        (2, "champion", "champion 1 -> 2", "gw-1"),
        (1, "champion", "champion -> 1", "gw-1"),
    ]


def test_sync_attempted_is_reported(store: StateStore) -> None:
    store.sync_attempted(error="registry down")
    failed = store.sync_status()
    assert failed.last_error == "registry down" and failed.last_attempt_at is not None
    assert failed.last_success_at is None
    store.sync_attempted(error=None)
    ok = store.sync_status()
    assert ok.last_error is None and ok.last_success_at is not None and ok.last_attempt_at is not None


# --- take_delivery ----------------------------------------------------------------------


def deliveries(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.scalar(select(func.count()).select_from(WebhookDeliveryRow)) or 0)


def test_a_delivery_is_taken_once(store: StateStore, engine: Engine) -> None:
    assert store.take_delivery("d-1", keep=HOUR) is True
    assert store.take_delivery("d-1", keep=HOUR) is False  # a replay
    assert store.take_delivery("d-2", keep=HOUR) is True
    assert store.take_delivery("d-2", keep=HOUR) is False
    assert deliveries(engine) == 2
    # a refused replay leaves the database usable (its transaction was rolled back)
    assert store.take_delivery("d-3", keep=HOUR) is True
    assert deliveries(engine) == 3


def test_old_deliveries_are_pruned(store: StateStore, engine: Engine) -> None:
    assert store.take_delivery("old-1", keep=HOUR)
    assert store.take_delivery("old-2", keep=HOUR)
    # a window that ends after now: everything taken so far is older than it
    assert store.take_delivery("new", keep=timedelta(minutes=-1))
    assert deliveries(engine) == 1
    assert store.take_delivery("old-1", keep=HOUR) is True  # forgotten, so taken again
    assert store.take_delivery("new", keep=HOUR) is False  # kept: taken after the prune
    assert deliveries(engine) == 2


# --- events -----------------------------------------------------------------------------


def test_events_newest_first_with_filter_limit_and_paging(store: StateStore) -> None:
    for i in range(5):
        store.record(EventKind.FAILED, "a", version=i, reason=f"a{i}", actor="x")
        store.record(EventKind.WARMED, "b", version=i, alias="champion", reason=f"b{i}")
    everything = store.events(limit=1000)
    assert len(everything) == 10
    ids = [e.id for e in everything]
    assert ids == sorted(ids, reverse=True)
    assert [e.reason for e in everything[:2]] == ["b4", "a4"]
    assert all(e.at is not None for e in everything)

    only_a = store.events(name="a")
    assert [e.reason for e in only_a] == ["a4", "a3", "a2", "a1", "a0"]
    assert all(e.kind == "failed" and e.actor == "x" and e.alias is None for e in only_a)
    assert [(e.kind, e.alias) for e in store.events(name="b", limit=1)] == [("warmed", "champion")]
    assert store.events(name="nobody") == []

    assert [e.id for e in store.events(limit=3)] == ids[:3]
    pages: list[int] = []
    before: int | None = None
    while True:
        page = store.events(limit=3, before=before)
        if not page:
            break
        assert len(page) <= 3
        pages.extend(e.id for e in page)
        before = page[-1].id
    assert pages == ids

    page = store.events(name="a", limit=2, before=only_a[1].id)
    assert [e.reason for e in page] == ["a2", "a1"]


# --- claim ------------------------------------------------------------------------------


def test_claim_binds_the_database_to_one_registry(store: StateStore) -> None:
    store.claim("http://mlflow-a:5000")
    store.claim("http://mlflow-a:5000")
    with pytest.raises(WrongRegistry) as raised:
        store.claim("http://mlflow-b:5000")
    message = str(raised.value)
    assert "http://mlflow-a:5000" in message and "http://mlflow-b:5000" in message
    assert (raised.value.owner, raised.value.asked) == ("http://mlflow-a:5000", "http://mlflow-b:5000")
    store.claim("http://mlflow-a:5000")  # still bound to the first


# --- two processes ----------------------------------------------------------------------


def test_two_stores_on_one_database_see_each_others_writes(state_url: str) -> None:
    """Two engines with their own pools: what two gateway replicas do."""
    one, two = make_engine(state_url), make_engine(state_url)
    try:
        upgrade(one)
        upgrade(two)  # the second replica's deploy step finds it done
        first, second = StateStore(one), StateStore(two)
        assert first.generation() == second.generation() == 0

        first.apply_registry([model("iris", version("iris", 1), aliases={"champion": 1})], complete=True, actor="one")
        assert second.generation() == 1
        assert second.snapshot().routes[("iris", "champion")].version == 1

        assert second.pin_digest(version("iris", 1).id, DIGEST_A, actor="two").ok
        assert first.generation() == 2
        assert first.snapshot().versions[("iris", 1)].digest == DIGEST_A
        assert not first.pin_digest(version("iris", 1).id, DIGEST_B, actor="one").ok
        assert second.version("iris", 1) is not None
        assert second.snapshot().versions[("iris", 1)].refused_reason is not None

        second.set_active("iris", "champion", 1, previous=None, actor="two")
        assert first.snapshot().routes[("iris", "champion")].active_version == 1
        assert first.events(limit=1)[0].kind == "swapped"

        assert first.take_delivery("d-1", keep=HOUR)
        assert not second.take_delivery("d-1", keep=HOUR)

        first.claim("http://mlflow-a:5000")
        with pytest.raises(WrongRegistry):
            second.claim("http://mlflow-b:5000")
    finally:
        one.dispose()
        two.dispose()


def test_replicas_publish_their_traffic_counts_and_old_ones_are_forgotten(store: StateStore) -> None:
    """Upserted per (replica, model, arm, version) on sqlite and PostgreSQL alike, stamped with
    the database's clock; a replica unseen for ``forget_after`` seconds is deleted."""
    store.publish_counts(
        "a",
        [ArmCount("m", "default", 1, 10, 1), ArmCount("m", "canary", 2, 5, 0), ArmCount("n", "default", 1, 3, 0)],
        forget_after=3600,
    )
    store.publish_counts("b", [ArmCount("m", "shadow", 3, 7, 1, agreed=5, differed=1, dropped=2)], forget_after=3600)
    store.publish_counts("a", [ArmCount("m", "default", 1, 12, 1), ArmCount("m", "canary", 2, 6, 1)], forget_after=3600)
    found = {replica.replica: replica for replica in store.replica_counts("m")}
    assert found["a"].counts == [ArmCount("m", "canary", 2, 6, 1), ArmCount("m", "default", 1, 12, 1)]
    assert found["b"].counts == [ArmCount("m", "shadow", 3, 7, 1, agreed=5, differed=1, dropped=2)]
    assert [replica.replica for replica in store.replica_counts("m")] == ["a", "b"]  # most recently seen first
    assert all(0 <= replica.age_seconds < 3600 and replica.seen_at.tzinfo is not None for replica in found.values())
    assert [(r.replica, r.counts) for r in store.replica_counts("n")] == [("a", [ArmCount("n", "default", 1, 3, 0)])]
    assert store.replica_counts("nobody") == []

    wait_until(  # the database's clock moves past a's and b's last publication
        lambda: all(replica.age_seconds > 0 for replica in store.replica_counts("m")),
        timeout=10,
        what="the database's clock to move on",
    )
    store.publish_counts("c", [ArmCount("m", "default", 1, 1, 0)], forget_after=0)
    assert [replica.replica for replica in store.replica_counts("m")] == ["c"]
    assert store.replica_counts("n") == []
