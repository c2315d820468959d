"""Engines for the state database, and its schema's version.

sqlite is the default (one process, one file); PostgreSQL serves many replicas.
The schema changes only through Alembic: ``upgrade`` runs it, ``check_schema`` refuses
to start on an old one and names the command that fixes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event

import migrations
from registry_sync.errors import RegistryError


class SchemaOutdated(RegistryError):
    def __init__(self, url: str, current: str | None, head: str) -> None:
        self.current = current
        self.head = head
        super().__init__(
            f"The state database {url} is at schema revision {current or 'none'}, this gateway needs {head}: "
            "run 'registry-gateway db upgrade' (with the same GATEWAY_DATABASE_URL) first"
        )


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def make_engine(url: str, *, sqlite_synchronous: str = "normal") -> Engine:
    """An engine for the state database at ``url``. On sqlite, ``sqlite_synchronous``
    (GATEWAY_DATABASE_SQLITE_SYNCHRONOUS) is its ``PRAGMA synchronous``: ``normal``, with WAL,
    syncs the log at checkpoints rather than at every commit: a process killed loses nothing
    committed and the file is never corrupted, while a power loss or a kernel crash may take
    back the last commits; ``full`` syncs every commit (one fsync a transaction: a job's claim
    and finish, a label batch)."""
    if sqlite_synchronous not in ("normal", "full"):
        raise ValueError(f"sqlite_synchronous is 'normal' or 'full', not {sqlite_synchronous!r}")
    if is_sqlite(url):
        database = url.split("///", 1)[1] if "///" in url else ""
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(connection: Any, _record: Any) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")  # readers never wait for the writer
            cursor.execute(f"PRAGMA synchronous={sqlite_synchronous.upper()}")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)


def _config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    # ConfigParser reads '%' as interpolation: escape it (URL-encoded passwords have them).
    config.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config(make_engine("sqlite://"))).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine) -> None:
    config = _config(engine)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def check_schema(engine: Engine, *, auto_upgrade: bool) -> None:
    """Upgrade (sqlite) or refuse to start (anything else) when the schema is behind."""
    head = head_revision()
    current = current_revision(engine)
    if current == head:
        return
    if auto_upgrade:
        upgrade(engine)
        return
    raise SchemaOutdated(engine.url.render_as_string(hide_password=True), current, head)
