"""API keys in the state database (sqlite and PostgreSQL), and ``registry-gateway keys``
as a script meets it (in-process, through the command's own main)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, select

from gateway.cli import main
from registry_sync.database import make_engine
from registry_sync.keys import InvalidKeySpec, KeyExists, KeyNotFound, KeyStore, Scopes, digest_of
from registry_sync.repository import StateStore
from registry_sync.state import ApiKeyRow
from tests.support.postgres import postgres_database


@pytest.fixture
def keys(engine: Engine) -> KeyStore:
    return KeyStore(engine)


# --- scopes ---------------------------------------------------------------------------


def test_scopes_parse_and_match_model_names_by_glob() -> None:
    scopes = Scopes.parse(" predict:iris* , read,predict:torch-?,admin")
    assert scopes == Scopes(predict=("iris*", "torch-?"), read=True, admin=True)
    assert str(scopes) == "predict:iris*,predict:torch-?,read,admin"
    assert scopes.can_predict("iris") and scopes.can_predict("iris-v2") and scopes.can_predict("torch-a")
    assert not scopes.can_predict("Iris")  # MLflow's names are case-sensitive, so are the globs
    assert not scopes.can_predict("torch-ab") and not scopes.can_predict("doubler")
    assert Scopes.parse(scopes.as_list()) == scopes
    assert not Scopes.parse("read").can_predict("iris")
    assert Scopes.parse("feedback") == Scopes(feedback=True) and Scopes.parse("feedback").as_list() == ["feedback"]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "at least one scope"),
        ("predict", "predict:<glob>"),
        ("predict:", "predict:<glob>"),
        ("write", "unknown scope 'write'"),
        ("read,everything", "unknown scope 'everything'"),
    ],
)
def test_bad_scopes_say_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(InvalidKeySpec, match=says.replace("*", r"\*").replace("?", r"\?")) as raised:
        Scopes.parse(text)
    assert says in str(raised.value)


# --- the store ------------------------------------------------------------------------


def test_a_key_is_stored_by_the_hash_of_its_secret_never_the_secret(keys: KeyStore, engine: Engine) -> None:
    key, secret = keys.create("ci", Scopes.parse("predict:iris*,read"), rate=5, concurrency=2, actor="test")
    assert secret.startswith("rgw_") and len(secret) > 40
    assert key.digest == digest_of(secret) and key.active and key.rate == 5 and key.concurrency == 2
    with engine.connect() as connection:
        stored = [tuple(str(v) for v in row) for row in connection.execute(select(ApiKeyRow))]
    assert stored and not any(secret in value for row in stored for value in row)
    assert not any(secret[len(key.prefix) :] in value for row in stored for value in row)
    generation, active = keys.active()
    assert generation == 1 and [k.name for k in active] == ["ci"]
    assert active[0].scopes == Scopes(predict=("iris*",), read=True)


def test_create_and_revoke_are_events_and_bump_the_keys_generation_not_the_sync_generation(
    keys: KeyStore, engine: Engine
) -> None:
    state = StateStore(engine)
    keys.create("ci", Scopes.parse("read"), rate=None, concurrency=None, actor="alice")
    assert keys.generation() == 1
    revoked = keys.revoke("ci", actor="bob")
    assert not revoked.active and keys.generation() == 2
    assert state.generation() == 0  # the catalog has nothing to re-read
    assert keys.active() == (2, [])
    assert [k.name for k in keys.keys()] == ["ci"] and keys.keys(revoked=False) == []
    events = [(e.kind, e.name, e.actor) for e in reversed(state.events())]
    assert events == [("key_created", "key:ci", "alice"), ("key_revoked", "key:ci", "bob")]
    assert "predict" not in state.events()[0].reason and "read" in state.events()[1].reason


def test_names_are_unique_among_active_keys_and_reusable_after_revocation(keys: KeyStore) -> None:
    first, first_secret = keys.create("ci", Scopes.parse("read"), rate=None, concurrency=None, actor="test")
    with pytest.raises(KeyExists, match="'ci' exists already"):
        keys.create("ci", Scopes.parse("admin"), rate=None, concurrency=None, actor="test")
    keys.revoke("ci", actor="test")
    with pytest.raises(KeyNotFound):
        keys.revoke("ci", actor="test")
    second, second_secret = keys.create("ci", Scopes.parse("admin"), rate=None, concurrency=None, actor="test")
    assert second_secret != first_secret and second.digest != first.digest
    assert [(k.name, k.scopes.admin, k.active) for k in keys.keys()] == [("ci", True, True)]


@pytest.mark.parametrize(
    ("name", "rate", "concurrency", "says"),
    [
        ("has space", None, None, "key name 'has space' is not allowed"),
        ("x" * 65, None, None, "is not allowed"),
        ("ok", 0, None, "rate 0 must be more than 0"),
        ("ok", None, 0, "concurrency 0 must be at least 1"),
    ],
)
def test_bad_names_and_limits_are_refused(
    keys: KeyStore, name: str, rate: float | None, concurrency: int | None, says: str
) -> None:
    with pytest.raises(InvalidKeySpec) as raised:
        keys.create(name, Scopes.parse("read"), rate=rate, concurrency=concurrency, actor="test")
    assert says in str(raised.value)
    assert keys.keys() == []


def test_the_deployment_id_is_made_once_and_shared(keys: KeyStore, engine: Engine) -> None:
    first = keys.deployment_id()
    assert len(first) == 16 and KeyStore(engine).deployment_id() == first


# --- the command ----------------------------------------------------------------------


def test_keys_create_list_revoke_on_the_command_line(tmp_path: Path) -> None:
    env = {"GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path / 'state.db'}"}
    runner = CliRunner()
    created = runner.invoke(
        main,
        ["keys", "create", "ci", "--scopes", "predict:iris*,read,admin", "--rate", "5", "--concurrency", "2"],
        env=env,
    )
    assert created.exit_code == 0, created.output
    secret = created.output.splitlines()[-1]
    assert secret.startswith("rgw_") and secret.strip() == secret
    assert "predict:iris*,read,admin" in created.output and "5/s (burst 5), 2 in flight" in created.output

    listed = runner.invoke(main, ["keys", "list"], env=env)
    assert listed.exit_code == 0 and "ci\t" in listed.output and "active" in listed.output
    assert secret not in listed.output and secret[:12] in listed.output

    again = runner.invoke(main, ["keys", "create", "ci", "--scopes", "read"], env=env)
    assert again.exit_code != 0 and "exists already" in again.output and "Traceback" not in again.output

    revoked = runner.invoke(main, ["keys", "revoke", "ci"], env=env)
    assert revoked.exit_code == 0 and "revoked" in revoked.output
    assert "revoked 20" in runner.invoke(main, ["keys", "list"], env=env).output
    unknown = runner.invoke(main, ["keys", "revoke", "ci"], env=env)
    assert unknown.exit_code != 0 and "No API key named 'ci' is active" in unknown.output

    engine = make_engine(env["GATEWAY_DATABASE_URL"])
    try:
        assert KeyStore(engine).active()[1] == []
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["keys", "create", "ci", "--scopes", "write"], "unknown scope 'write'"),
        (["keys", "create", "ci", "--scopes", "read", "--rate", "-1"], "rate -1 must be more than 0"),
        (["keys", "create", "ci"], "Missing option '--scopes'"),
    ],
)
def test_bad_key_commands_are_one_line_not_a_traceback(tmp_path: Path, args: list[str], says: str) -> None:
    env = {"GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path / 'state.db'}"}
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code != 0 and says in result.output and "Traceback" not in result.output


def test_keys_on_postgres_need_the_schema_upgraded_first() -> None:
    with postgres_database() as url:
        result = CliRunner().invoke(main, ["keys", "list"], env={"GATEWAY_DATABASE_URL": url})
        assert result.exit_code != 0 and "registry-gateway db upgrade" in result.output
