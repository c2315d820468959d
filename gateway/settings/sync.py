"""The state database and the registry sync: polling, warm aliases, webhooks, the admin endpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from gateway.settings.section import SettingsSection

DEFAULT_DATABASE_FILE = "gateway-state.db"


def default_database_url() -> str:
    """``gateway-state.db`` in the working directory (as ``mlflow server`` keeps ``mlflow.db``):
    ``serve``, ``keys`` and ``db`` run from one directory open the same one, and each directory
    (each registry tried) has its own. Resolved here, so a process that changes directory
    later, and the line each command prints, name the same file."""
    return f"sqlite:///{Path.cwd() / DEFAULT_DATABASE_FILE}"


class SyncSettings(SettingsSection):
    """The state database and the registry sync: polling, warm aliases, webhooks, the admin endpoint."""

    database_url: str = Field(default_factory=default_database_url)
    """The state database (versions seen, pinned digests, routes, events, API keys): a SQLAlchemy
    URL. sqlite (the default, ``gateway-state.db`` in the directory the command runs in, upgraded
    automatically) for one host; PostgreSQL for many replicas."""

    database_sqlite_synchronous: Literal["normal", "full"] = "normal"
    """On sqlite, when a commit reaches the disk (``PRAGMA synchronous``; the database is in WAL
    mode). ``normal``: at the log's checkpoints, not at every commit: a process killed or
    restarted loses nothing it committed and the file is never corrupted; a power loss or a
    kernel crash may take back the last commits. ``full``: every commit is synced (an fsync for
    each job chunk claimed or finished, each label batch): durable across a power loss, at that
    cost. PostgreSQL has its own (``synchronous_commit``)."""

    poll_interval_seconds: float = Field(default=30.0, gt=0)
    """How often the registry is polled for new versions, alias moves, tag changes and deletions."""

    warm_aliases: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["champion"])
    """Comma-separated aliases swapped blue-green: when one moves, the new version is fetched,
    verified, loaded and warmed before it takes traffic. Other aliases move at once."""

    verify_interval_seconds: float = Field(default=300.0, gt=0)
    """Each served version (routed, or loaded by the leading process) has its bytes checked
    against its pin once per interval, the checks spread evenly over it, to catch bytes
    changed in place: one LIST in direct S3, else a download."""

    full_sync_interval_seconds: float = Field(default=600.0, gt=0)
    """How often a poll reads every version of every model. Other polls read every model and
    its aliases, and the versions only of models whose versions changed (MLflow's
    ``last_updated_timestamp``) or that are served here; version tags of other models change
    no timestamp, so they are seen at the next full read, or at once with the webhook."""

    follow_interval_seconds: float = Field(default=1.0, gt=0)
    """How often this process checks the state database for changes made by the sync."""

    webhook_secret: SecretStr | None = None
    """Secret of the MLflow webhook (``MlflowClient.create_webhook(secret=...)``); without it,
    ``POST /webhooks/mlflow`` is off."""

    admin_token: SecretStr | None = None
    """Bearer token for ``POST /admin/sync``; without it the endpoint is off."""

    @field_validator("warm_aliases", mode="before")
    @classmethod
    def _split_aliases(cls, value: object) -> object:
        if isinstance(value, str):
            return [alias.strip() for alias in value.split(",") if alias.strip()]
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        # The URL may hold a password: the message never repeats it.
        value = value.strip()
        try:
            make_url(value).get_dialect()
        except NoSuchModuleError:  # an ArgumentError too: first
            scheme = value.partition(":")[0]
            raise ValueError(
                f"SQLAlchemy has no database dialect '{scheme}'; use sqlite or postgresql+psycopg"
            ) from None
        except ArgumentError:
            raise ValueError(
                "not a SQLAlchemy URL; e.g. sqlite:////var/lib/registry-gateway/state.db "
                "or postgresql+psycopg://user:password@host/db"
            ) from None
        return value
