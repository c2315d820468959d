"""The callers' quotas in the state database: set, listed and deleted by
``registry-gateway quotas``, read by every gateway at its usage flush interval.

A quota bounds what one caller uses of some models in a UTC day or month: ``amount``
requests, input rows or tokens. The caller is a key's name, ``oidc:<sub>`` (a token's
subject), or ``group:<name>``: every caller whose token names that group (in
``GATEWAY_OIDC_GROUPS_CLAIM``) has the quota, each its own (a group is a way to give many
callers one quota, not a shared budget: the usage it is checked against is the caller's).
``models`` is a shell glob; the models it matches are summed together.

They are kept as the API keys are (``registry_sync/keys.py``), not in settings: an operator
changes one with the CLI and every replica follows within an interval, no restart.
"""

from __future__ import annotations

import calendar
import fnmatch
import re
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from registry_sync.errors import RegistryError
from registry_sync.repository import transaction
from registry_sync.state import QuotaRow, utcnow

PERIODS = ("day", "month")
UNITS = ("requests", "rows", "tokens")
GROUP_PREFIX = "group:"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_MAX_CALLER = 320


class QuotaError(RegistryError):
    """Base of the errors of quota management."""


class InvalidQuotaSpec(QuotaError):
    """A name, caller, period, unit or amount that cannot be used; the message says why."""


class QuotaNotFound(QuotaError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"No quota named '{name}'")


@dataclass(frozen=True, slots=True)
class Quota:
    name: str
    caller: str
    models: str
    period: str
    unit: str
    amount: int
    created_at: datetime | None = None
    created_by: str = ""

    def bounds(self, caller: str, groups: tuple[str, ...]) -> bool:
        """Whether the quota is this caller's (by its name, or a group it is in)."""
        if self.caller.startswith(GROUP_PREFIX):
            return self.caller.removeprefix(GROUP_PREFIX) in groups
        return self.caller == caller

    def applies(self, caller: str, groups: tuple[str, ...], model: str) -> bool:
        return self.bounds(caller, groups) and fnmatch.fnmatchcase(model, self.models)

    def window(self, now: float) -> tuple[datetime, datetime]:
        """The period ``now`` (epoch seconds) is in: its start and its end (the reset), UTC."""
        moment = datetime.fromtimestamp(now, UTC)
        if self.period == "day":
            start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
            return start, datetime.fromtimestamp(start.timestamp() + 86_400, UTC)
        start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        days = calendar.monthrange(start.year, start.month)[1]
        return start, datetime.fromtimestamp(start.timestamp() + days * 86_400, UTC)

    def describe(self) -> str:
        return f"{self.amount:,} {self.unit} a {self.period} of {self.models} for {self.caller}"

    def as_dict(self) -> dict[str, str | int | None]:
        return {
            "name": self.name,
            "caller": self.caller,
            "models": self.models,
            "period": self.period,
            "unit": self.unit,
            "amount": self.amount,
            "created_at": self.created_at.isoformat() if self.created_at is not None else None,
            "created_by": self.created_by,
        }


def checked(quota: Quota) -> Quota:
    """``quota`` if every field is usable, else InvalidQuotaSpec saying which and why."""
    if not _NAME.fullmatch(quota.name):
        raise InvalidQuotaSpec(
            f"quota name '{quota.name[:80]}' is not allowed: 1 to 64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    if not quota.caller.strip() or len(quota.caller) > _MAX_CALLER or not quota.caller.isprintable():
        raise InvalidQuotaSpec(
            f"caller must be a key's name, oidc:<sub> or group:<name> (printable, at most {_MAX_CALLER} characters)"
        )
    if quota.caller == GROUP_PREFIX:
        raise InvalidQuotaSpec("caller 'group:' needs a group name: group:<name>")
    if not quota.models.strip() or len(quota.models) > 256:
        raise InvalidQuotaSpec("models must be a glob of model names ('*' for every model), at most 256 characters")
    if quota.period not in PERIODS:
        raise InvalidQuotaSpec(f"period '{quota.period[:20]}' is not one of {', '.join(PERIODS)}")
    if quota.unit not in UNITS:
        raise InvalidQuotaSpec(f"unit '{quota.unit[:20]}' is not one of {', '.join(UNITS)}")
    if not 1 <= quota.amount <= 2**62:
        raise InvalidQuotaSpec(f"amount {quota.amount} must be at least 1")
    return quota


class QuotaStore:
    """The ``quotas`` table. Everything blocks; callers use threads."""

    def __init__(self, engine: Engine) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def _session(self) -> AbstractContextManager[Session]:
        return transaction(self._sessions)

    def put(self, quota: Quota, *, actor: str) -> Quota:
        """Create the quota, or replace the one of that name."""
        checked(quota)
        with self._session() as session:
            row = session.get(QuotaRow, quota.name, with_for_update=True)
            if row is None:
                row = QuotaRow(name=quota.name)
                session.add(row)
            row.caller, row.models, row.period = quota.caller, quota.models, quota.period
            row.unit, row.amount = quota.unit, quota.amount
            row.created_at, row.created_by = utcnow(), actor
            return _quota(row)

    def delete(self, name: str) -> Quota:
        with self._session() as session:
            row = session.get(QuotaRow, name, with_for_update=True)
            if row is None:
                raise QuotaNotFound(name)
            quota = _quota(row)
            session.delete(row)
            return quota

    def quotas(self) -> list[Quota]:
        with self._session() as session:
            return [_quota(row) for row in session.scalars(select(QuotaRow).order_by(QuotaRow.name))]


def _quota(row: QuotaRow) -> Quota:
    created = row.created_at if row.created_at.tzinfo is not None else row.created_at.replace(tzinfo=UTC)
    return Quota(row.name, row.caller, row.models, row.period, row.unit, int(row.amount), created, row.created_by)
