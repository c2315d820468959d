"""One sync leader at a time: a lease row in the state database.

Taking or renewing the lease is a single conditional UPDATE (an INSERT for the very first
holder), so it is atomic on sqlite (one writer at a time) and on PostgreSQL (the row lock;
a second UPDATE re-checks its WHERE against the winner's row). Expiry is decided by the
database's clock, never a replica's. Each new holder gets a fencing token one higher than
the last; the sync's writes check, inside their own transaction, that the token still
holds (``hold``), so a leader that stalled past its lease cannot overwrite its successor.

The holder also keeps a local deadline, measured on its monotonic clock from *before* it
sent the renewal: it stops acting as leader no later than the database lets anyone else
take over.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from typing import Any, cast

from sqlalchemy import CursorResult, Engine, Float, case, insert, or_, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from registry_sync.errors import RegistryError
from registry_sync.state import LeaseRow

log = logging.getLogger(__name__)

SYNC_LEASE = "sync"
_MAX_DERIVED_SECONDS = 30.0
_MIN_DERIVED_SECONDS = 1.0


class NotLeader(RegistryError):
    def __init__(self, holder: str, lease: str = SYNC_LEASE) -> None:
        self.holder = holder
        self.lease = lease
        super().__init__(f"{holder} does not hold the '{lease}' lease (another process leads, or it expired)")


def lease_timing(*, poll_interval_seconds: float, lease_seconds: float | None) -> tuple[float, float]:
    """(time to live, renewal period). By default the lease lasts one poll interval, between
    1 and 30 s, and is renewed every third of it: a dead leader's successor takes over within
    ttl + ttl/3 and polls at once, inside the two poll intervals the issue asks for."""
    ttl = lease_seconds
    if ttl is None:
        ttl = min(max(poll_interval_seconds, _MIN_DERIVED_SECONDS), _MAX_DERIVED_SECONDS)
    return ttl, ttl / 3


def new_holder_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class db_now(FunctionElement[float]):
    """The database server's clock, seconds since the epoch."""

    type = Float()
    inherit_cache = True


@compiles(db_now)
def _db_now_default(element: db_now, compiler: SQLCompiler, **kw: Any) -> str:
    return "CAST(EXTRACT(EPOCH FROM CURRENT_TIMESTAMP) AS DOUBLE PRECISION)"


@compiles(db_now, "postgresql")
def _db_now_postgresql(element: db_now, compiler: SQLCompiler, **kw: Any) -> str:
    # clock_timestamp, not now(): now() is the start of the transaction
    return "CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS DOUBLE PRECISION)"


@compiles(db_now, "sqlite")
def _db_now_sqlite(element: db_now, compiler: SQLCompiler, **kw: Any) -> str:
    # julianday('now') has millisecond precision; the file is on this host, so is the clock
    return "((julianday('now') - 2440587.5) * 86400.0)"


class Lease:
    """A named lease in the state database. Blocking: callers use threads."""

    def __init__(
        self, engine: Engine, *, ttl_seconds: float, name: str = SYNC_LEASE, holder: str | None = None
    ) -> None:
        self.engine = engine
        self.name = name
        self.holder = holder or new_holder_id()
        self.ttl = ttl_seconds
        self.token: int | None = None
        self._deadline = 0.0  # monotonic; past it this process no longer acts as holder
        self._failing = False  # the last attempt met a database error

    @property
    def held(self) -> bool:
        return self.token is not None and time.monotonic() < self._deadline

    def acquire(self) -> bool:
        """Take the lease if it is free or expired, renew it if this process holds it.
        True if held afterwards. A database error counts as lost (and is logged)."""
        sent = time.monotonic()
        try:
            token = self._update() or self._insert()
        except SQLAlchemyError as exc:
            if self.held:
                log.warning("could not renew the '%s' lease, no longer leading: %s", self.name, exc)
            elif not self._failing:  # a standby that cannot reach the database cannot take over: said once
                log.warning("could not try for the '%s' lease (retrying quietly): %s", self.name, exc)
            self._failing = True
            self._lose()
            return False
        if self._failing:
            log.warning("the '%s' lease's database answers again", self.name)
            self._failing = False
        if token is None:
            if self.token is not None:
                log.warning("lost the '%s' lease to another process", self.name)
            self._lose()
            return False
        if token != self.token:
            log.info("took the '%s' lease as %s (fencing token %d)", self.name, self.holder, token)
        self.token = token
        self._deadline = sent + self.ttl
        return True

    renew = acquire  # the same conditional UPDATE: a holder renews, anyone else takes an expired lease

    def release(self) -> None:
        """Give the lease up now so another process takes over at once (a clean shutdown)."""
        self._lose()
        try:
            with self.engine.begin() as connection:
                connection.execute(
                    update(LeaseRow)
                    .where(LeaseRow.name == self.name, LeaseRow.holder == self.holder)
                    .values(holder=None, expires_at=db_now())
                )
        except SQLAlchemyError as exc:
            log.warning("could not release the '%s' lease (it expires on its own): %s", self.name, exc)

    def hold(self, session: Session) -> None:
        """Fence: raise NotLeader unless this process still holds the lease, checked inside
        ``session``'s transaction. It is an UPDATE, so it also locks the lease row until the
        transaction ends (sqlite: the write lock; PostgreSQL: the row lock): no successor can
        take over between this check and the commit."""
        if self.token is None or not self.held:
            raise NotLeader(self.holder, self.name)
        result = cast(
            CursorResult[Any],
            session.execute(
                update(LeaseRow)
                .where(
                    LeaseRow.name == self.name,
                    LeaseRow.holder == self.holder,
                    LeaseRow.token == self.token,
                    LeaseRow.expires_at > db_now(),
                )
                .values(token=LeaseRow.token)
                .execution_options(synchronize_session=False)
            ),
        )
        if result.rowcount != 1:
            self._lose()
            raise NotLeader(self.holder, self.name)

    def current(self) -> tuple[str, int] | None:
        """Who holds the lease now, by the database's clock, and with which token."""
        with self.engine.connect() as connection:
            row = connection.execute(
                select(LeaseRow.holder, LeaseRow.token).where(
                    LeaseRow.name == self.name, LeaseRow.holder.is_not(None), LeaseRow.expires_at > db_now()
                )
            ).first()
        return (str(row[0]), int(row[1])) if row is not None else None

    def _lose(self) -> None:
        self.token = None
        self._deadline = 0.0

    def _update(self) -> int | None:
        now = db_now()
        with self.engine.begin() as connection:
            result = connection.execute(
                update(LeaseRow)
                .where(LeaseRow.name == self.name, or_(LeaseRow.holder == self.holder, LeaseRow.expires_at <= now))
                .values(
                    # the same holder keeps its token; anyone else gets the next one
                    token=case((LeaseRow.holder == self.holder, LeaseRow.token), else_=LeaseRow.token + 1),
                    holder=self.holder,
                    expires_at=now + self.ttl,
                    renewed_at=now,
                )
            )
            if result.rowcount != 1:
                return None
            # still in the transaction that holds the row: the token read is ours
            return int(connection.scalar(select(LeaseRow.token).where(LeaseRow.name == self.name)) or 0)

    def _insert(self) -> int | None:
        """The first holder ever creates the row; a concurrent first holder loses the race."""
        with self.engine.connect() as connection:
            if connection.scalar(select(LeaseRow.name).where(LeaseRow.name == self.name)) is not None:
                return None  # held by someone else, not expired
        now = db_now()
        try:
            with self.engine.begin() as connection:
                connection.execute(
                    insert(LeaseRow).values(
                        name=self.name, holder=self.holder, token=1, expires_at=now + self.ttl, renewed_at=now
                    )
                )
        except IntegrityError:
            return None
        return 1
