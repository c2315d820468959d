"""A state database taken to one migration revision, as a test of a later migration needs it."""

from __future__ import annotations

from alembic import command
from sqlalchemy import Engine

from registry_sync.database import _config


def migrate(engine: Engine, revision: str) -> None:
    """Upgrade ``engine``'s database to ``revision`` (``head``: the newest)."""
    config = _config(engine)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
