"""Fixtures the state-database tests share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from registry_sync.database import make_engine, upgrade
from tests.support.postgres import postgres_database


@pytest.fixture(params=["sqlite", "postgresql"])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty state database: a sqlite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state.db'}"
    else:
        with postgres_database() as url:
            yield url


@pytest.fixture
def engine(state_url: str) -> Iterator[Engine]:
    """That database, migrated to the newest schema."""
    engine = make_engine(state_url)
    upgrade(engine)
    try:
        yield engine
    finally:
        engine.dispose()
