"""The state database's sqlite engine: WAL, and when a commit reaches the disk."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from gateway.settings import GatewaySettings
from registry_sync.database import make_engine

# PRAGMA synchronous answers a number: 1 is NORMAL, 2 is FULL (sqlite.org/pragma.html#pragma_synchronous).
_SYNCHRONOUS = {"normal": 1, "full": 2}


def _pragma(url: str, name: str, **options: str) -> object:
    engine = make_engine(url, **options)
    try:
        with engine.connect() as connection:
            return connection.execute(text(f"PRAGMA {name}")).scalar()
    finally:
        engine.dispose()


def test_a_sqlite_state_database_is_in_wal_and_syncs_at_checkpoints_unless_told(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    assert _pragma(url, "journal_mode") == "wal"
    assert _pragma(url, "synchronous") == _SYNCHRONOUS["normal"]
    assert _pragma(url, "synchronous", sqlite_synchronous="full") == _SYNCHRONOUS["full"]
    with pytest.raises(ValueError, match="'normal' or 'full'"):
        make_engine(url, sqlite_synchronous="off")


def test_the_setting_is_read_and_refused_when_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_DATABASE_SQLITE_SYNCHRONOUS", "full")
    assert GatewaySettings().database_sqlite_synchronous == "full"
    monkeypatch.setenv("GATEWAY_DATABASE_SQLITE_SYNCHRONOUS", "off")
    with pytest.raises(ValueError, match="database_sqlite_synchronous"):
        GatewaySettings()


def test_a_commit_under_normal_survives_the_process_killed(tmp_path: Path) -> None:
    """What ``normal`` keeps: a commit made by a process SIGKILLed right after it is there."""
    url = f"sqlite:///{tmp_path / 'state.db'}"
    script = (
        "import os, signal\n"
        "from sqlalchemy import text\n"
        "from registry_sync.database import make_engine\n"
        f"engine = make_engine({url!r})\n"
        "with engine.begin() as c:\n"
        "    c.execute(text('CREATE TABLE t (x INTEGER)'))\n"
        "    c.execute(text('INSERT INTO t VALUES (42)'))\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    ended = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[2], check=False)
    assert ended.returncode == -9
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            assert connection.execute(text("SELECT x FROM t")).scalar() == 42
    finally:
        engine.dispose()
