"""API keys in the state database: created, listed and revoked by ``registry-gateway keys``,
followed by every gateway.

A secret is shown once, when it is made, and never stored: the database keeps its sha256,
which is what a gateway looks a presented key up by. Every change bumps
``sync_state.keys_generation`` in the same transaction and writes an event, so replicas
see a new or revoked key at their next look at that one integer.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
import secrets
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session, sessionmaker

from registry_sync.errors import RegistryError
from registry_sync.repository import EventKind, transaction
from registry_sync.state import ApiKeyRow, EventRow, SyncStateRow, utcnow

SECRET_PREFIX = "rgw_"
_SHOWN_PREFIX = 12  # characters of a secret kept to tell keys apart: 8 random ones, 48 of 256 bits
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class ApiKeyError(RegistryError):
    """Base of the errors of API key management."""


class InvalidKeySpec(ApiKeyError):
    """A name, a scope or a limit that cannot be used; the message says which and why."""


class KeyExists(ApiKeyError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"An API key named '{name}' exists already; revoke it first or choose another name")


class KeyNotFound(ApiKeyError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"No API key named '{name}' is active")


@dataclass(frozen=True, slots=True)
class Scopes:
    """What a key may do: predict with the models whose names match one of ``predict``
    (shell globs, case-sensitive), ``read`` (``/models``, versions, ``/events``),
    ``admin`` (``/admin/*``) and ``feedback`` (``POST /feedback``: labels for answers already
    given). Each is separate: ``admin`` does not imply the others."""

    predict: tuple[str, ...] = ()
    read: bool = False
    admin: bool = False
    feedback: bool = False

    @classmethod
    def parse(cls, text: str | list[str]) -> Scopes:
        """``'predict:iris*,read,admin,feedback'`` (or the stored list), or InvalidKeySpec saying why."""
        items = text.split(",") if isinstance(text, str) else text
        predict: list[str] = []
        read = admin = feedback = False
        for raw in items:
            item = raw.strip()
            if item == "read":
                read = True
            elif item == "admin":
                admin = True
            elif item == "feedback":
                feedback = True
            elif item.startswith("predict:") and item.removeprefix("predict:").strip():
                pattern = item.removeprefix("predict:").strip()
                if pattern not in predict:
                    predict.append(pattern)
            elif item == "predict" or item == "predict:":
                raise InvalidKeySpec(
                    "scope 'predict' needs model names: 'predict:<glob>', e.g. predict:* for every model"
                )
            elif item:
                raise InvalidKeySpec(f"unknown scope '{item}': use predict:<glob>, read, admin or feedback")
        scopes = cls(tuple(predict), read, admin, feedback)
        if not scopes.as_list():
            raise InvalidKeySpec("a key needs at least one scope: predict:<glob>, read, admin or feedback")
        return scopes

    def can_predict(self, model: str) -> bool:
        return any(fnmatch.fnmatchcase(model, pattern) for pattern in self.predict)

    def as_list(self) -> list[str]:
        return (
            [f"predict:{p}" for p in self.predict]
            + (["read"] if self.read else [])
            + (["admin"] if self.admin else [])
            + (["feedback"] if self.feedback else [])
        )

    def __str__(self) -> str:
        return ",".join(self.as_list())


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A key as the database has it: never its secret."""

    name: str
    digest: str
    prefix: str
    scopes: Scopes
    rate: float | None
    concurrency: int | None
    created_at: datetime
    created_by: str
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def describe_limits(self) -> str:
        rate = f"{self.rate:g}/s (burst {max(self.rate, 1):g})" if self.rate is not None else "no rate limit"
        concurrency = f"{self.concurrency} in flight" if self.concurrency is not None else "no concurrency cap"
        return f"{rate}, {concurrency}"


def digest_of(secret: str) -> str:
    """What a key is stored and looked up by."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise InvalidKeySpec(
            f"key name '{name}' is not allowed: 1 to 64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return name


def event_name(key_name: str) -> str:
    """The ``name`` of a key's events, which never collides with a model's: MLflow allows no
    ':' in a model name."""
    return f"key:{key_name}"


class KeyStore:
    """API keys in the state database. Everything blocks; callers use threads."""

    def __init__(self, engine: Engine) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def _session(self) -> AbstractContextManager[Session]:
        return transaction(self._sessions)

    def create(
        self, name: str, scopes: Scopes, *, rate: float | None, concurrency: int | None, actor: str
    ) -> tuple[ApiKey, str]:
        """A new key and its secret (shown once: only its sha256 is kept). A revoked key's
        name may be used again; an active one's may not."""
        check_name(name)
        if rate is not None and not rate > 0:
            raise InvalidKeySpec(f"rate {rate:g} must be more than 0 requests a second")
        if concurrency is not None and concurrency < 1:
            raise InvalidKeySpec(f"concurrency {concurrency} must be at least 1")
        secret = new_secret()
        with self._session() as session:
            row = session.get(ApiKeyRow, name, with_for_update=True)
            if row is not None and row.revoked_at is None:
                raise KeyExists(name)
            if row is None:
                row = ApiKeyRow(name=name)
                session.add(row)
            row.digest, row.prefix = digest_of(secret), secret[:_SHOWN_PREFIX]
            row.scopes, row.rate, row.concurrency = scopes.as_list(), rate, concurrency
            row.created_at, row.created_by, row.revoked_at = utcnow(), actor, None
            key = _api_key(row)
            reason = f"API key '{name}' created: scopes {scopes}; {key.describe_limits()}"
            session.add(EventRow(name=event_name(name), kind=EventKind.KEY_CREATED.value, reason=reason, actor=actor))
            _bump(session)
        return key, secret

    def revoke(self, name: str, *, actor: str) -> ApiKey:
        with self._session() as session:
            row = session.get(ApiKeyRow, name, with_for_update=True)
            if row is None or row.revoked_at is not None:
                raise KeyNotFound(name)
            row.revoked_at = utcnow()
            reason = f"API key '{name}' revoked: every gateway refuses it from its next look at the keys"
            session.add(EventRow(name=event_name(name), kind=EventKind.KEY_REVOKED.value, reason=reason, actor=actor))
            _bump(session)
            return _api_key(row)

    def keys(self, *, revoked: bool = True) -> list[ApiKey]:
        """Every key by name, the revoked ones too unless ``revoked`` is False."""
        query = select(ApiKeyRow).order_by(ApiKeyRow.name)
        if not revoked:
            query = query.where(ApiKeyRow.revoked_at.is_(None))
        with self._session() as session:
            return [_api_key(row) for row in session.scalars(query)]

    def active(self) -> tuple[int, list[ApiKey]]:
        """The keys generation and the active keys as of it (one transaction)."""
        with self._session() as session:
            generation = int(session.scalar(select(SyncStateRow.keys_generation).where(SyncStateRow.id == 1)) or 0)
            rows = session.scalars(select(ApiKeyRow).where(ApiKeyRow.revoked_at.is_(None)))
            return generation, [_api_key(row) for row in rows]

    def generation(self) -> int:
        with self._session() as session:
            return int(session.scalar(select(SyncStateRow.keys_generation).where(SyncStateRow.id == 1)) or 0)

    def deployment_id(self) -> str:
        """This database's random id, made at the first call: names what its processes share."""
        with self._session() as session:
            row = session.get(SyncStateRow, 1, with_for_update=True)
            assert row is not None, "sync_state is seeded by the first migration"
            if row.deployment_id is None:
                row.deployment_id = secrets.token_hex(8)
            return row.deployment_id


def _bump(session: Session) -> None:
    session.execute(
        update(SyncStateRow).where(SyncStateRow.id == 1).values(keys_generation=SyncStateRow.keys_generation + 1)
    )


def _utc(moment: datetime | None) -> datetime | None:
    # sqlite keeps no zone; everything is written in UTC
    return moment if moment is None or moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _api_key(row: ApiKeyRow) -> ApiKey:
    created = _utc(row.created_at)
    assert created is not None
    return ApiKey(
        name=row.name,
        digest=row.digest,
        prefix=row.prefix,
        scopes=Scopes.parse(list(row.scopes)),
        rate=row.rate,
        concurrency=row.concurrency,
        created_at=created,
        created_by=row.created_by,
        revoked_at=_utc(row.revoked_at),
    )
