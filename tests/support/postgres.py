"""A throwaway PostgreSQL database per test.

``postgres_database()`` creates a uniquely named database on the server named by
``GATEWAY_TEST_POSTGRES_URL`` (default: ``postgres`` on 127.0.0.1:5432, no password), yields
its SQLAlchemy URL, and drops it afterwards. Where no server answers, the test is skipped
with the reason, except in CI (``CI=true``), where the PostgreSQL tests must run: there it
fails loudly instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from tests.support.ci import in_ci as in_ci  # noqa: F401 - where tests in other branches import it from
from tests.support.ci import missing

ADMIN_URL_VARIABLE = "GATEWAY_TEST_POSTGRES_URL"
DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"

# Once a server did not answer, later tests skip at once instead of waiting for it again.
_unreachable: str | None = None


def admin_url() -> str:
    return os.environ.get(ADMIN_URL_VARIABLE) or DEFAULT_ADMIN_URL


def _unavailable(reason: str) -> NoReturn:
    """Skip on a developer's machine; fail in CI, where PostgreSQL is part of the contract."""
    message = f"PostgreSQL is not available ({reason}); set {ADMIN_URL_VARIABLE} to a server's admin database URL"
    missing(message)


def admin_engine() -> Engine:
    """An AUTOCOMMIT engine on the admin database (skips or fails as above when there is none)."""
    global _unreachable
    if _unreachable is not None:
        _unavailable(_unreachable)
    try:
        import psycopg  # noqa: F401  (the driver the URLs name)
    except ImportError as exc:
        _unreachable = f"the psycopg driver is not installed: {exc}"
        _unavailable(_unreachable)
    url = admin_url()
    engine = create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool, connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        engine.dispose()
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        _unreachable = f"cannot connect to {make_url(url).render_as_string(hide_password=True)}: {first_line}"
        _unavailable(_unreachable)
    return engine


def _drop(engine: Engine, name: str) -> None:
    with engine.connect() as connection:
        connection.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = :name AND pid <> pg_backend_pid()"
            ),
            {"name": name},
        )
        # FORCE (PostgreSQL 13+) also ends a session that connected after the terminate above
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextmanager
def postgres_database(prefix: str = "gw_test") -> Iterator[str]:
    """A fresh, empty database; yields its SQLAlchemy URL and drops it on exit."""
    engine = admin_engine()
    name = f"{prefix}_{uuid.uuid4().hex}"
    try:
        with engine.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(admin_url()).set(database=name).render_as_string(hide_password=False)
        finally:
            _drop(engine, name)
    finally:
        engine.dispose()
