"""What each caller used of each model version, per UTC day, summed over a fleet in the state
database.

Every serving process adds up its own requests in memory (``gateway.admission.usage``) and,
at its flush interval, adds what it counted to the rows here: one upsert per (caller, model,
version, day) that *adds* (``SET requests = usage.requests + excluded.requests``), so that
processes never overwrite one another and a fleet's usage is the rows' plain sum. A row's
figures only go up; nothing here is forgotten (a day's row is a few numbers: an operator
deletes old days when they wish).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, date, datetime

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from registry_sync.repository import transaction, upsert
from registry_sync.state import UsageRow

ANONYMOUS = "-"
"""The caller of a gateway without keys or tokens: anyone."""

FIGURES = ("requests", "rows", "errors", "predict_seconds", "tokens")

UsageKey = tuple[str, str, int, str]
"""(caller, model, version, UTC day as ``YYYY-MM-DD``)."""


@dataclass(slots=True)
class Tally:
    """What was used under one key: added to on the request path, so mutable and plain."""

    requests: int = 0
    rows: int = 0
    errors: int = 0
    predict_seconds: float = 0.0
    tokens: int = 0

    def add(self, other: Tally) -> None:
        self.requests += other.requests
        self.rows += other.rows
        self.errors += other.errors
        self.predict_seconds += other.predict_seconds
        self.tokens += other.tokens

    def amount(self, unit: str) -> int:
        """The figure a quota counts in: ``requests``, ``rows`` or ``tokens``."""
        return int(getattr(self, unit))


@dataclass(frozen=True, slots=True)
class UsageLine:
    """One row of ``GET /usage``: a caller's use of a version on a day."""

    caller: str
    name: str
    version: int
    day: str
    requests: int
    rows: int
    errors: int
    predict_seconds: float
    tokens: int

    def as_dict(self) -> dict[str, str | int | float]:
        return {
            "caller": self.caller,
            "model": self.name,
            "version": self.version,
            "day": self.day,
            "requests": self.requests,
            "rows": self.rows,
            "errors": self.errors,
            "predict_seconds": round(self.predict_seconds, 6),
            "tokens": self.tokens,
        }


def day_of(moment: float) -> str:
    """The UTC day of an epoch time, as the rows name it."""
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d")


def parse_day(text: str) -> str:
    """``YYYY-MM-DD`` (or a full ISO date-time: its UTC day), or ValueError naming it."""
    try:
        if len(text) == 10:
            return date.fromisoformat(text).isoformat()
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"'{text[:40]}' is not a date (YYYY-MM-DD) or an ISO date-time") from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d")


class UsageStore:
    """The ``usage`` table. Everything blocks; callers use threads."""

    def __init__(self, engine: Engine) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def _session(self) -> AbstractContextManager[Session]:
        return transaction(self._sessions)

    def add(self, tallies: Mapping[UsageKey, Tally]) -> None:
        """Add what one process counted to the fleet's rows: a row's figures plus these."""
        rows = [
            {
                "caller": caller,
                "name": name,
                "version": version,
                "day": day,
                "requests": t.requests,
                "rows": t.rows,
                "errors": t.errors,
                "predict_seconds": t.predict_seconds,
                "tokens": t.tokens,
            }
            for (caller, name, version, day), t in sorted(tallies.items())  # one lock order: no deadlock
        ]
        if not rows:
            return
        table = UsageRow.__table__
        with self._session() as session:
            session.execute(
                upsert(
                    session,
                    UsageRow,
                    rows,
                    keys=["caller", "name", "version", "day"],
                    update=lambda new: {c: table.c[c] + new.excluded[c] for c in FIGURES},
                )
            )

    def lines(
        self,
        *,
        callers: Iterable[str] | None = None,
        model: str | None = None,
        since: str | None = None,
        until: str | None = None,
        limit: int = 10_000,
    ) -> list[UsageLine]:
        """The rows, by day, caller, model and version: ``callers`` None is everyone's;
        ``since`` and ``until`` are UTC days, both included."""
        query = select(UsageRow).order_by(UsageRow.day, UsageRow.caller, UsageRow.name, UsageRow.version)
        if callers is not None:
            query = query.where(UsageRow.caller.in_(list(callers)))
        if model is not None:
            query = query.where(UsageRow.name == model)
        if since is not None:
            query = query.where(UsageRow.day >= since)
        if until is not None:
            query = query.where(UsageRow.day <= until)
        with self._session() as session:
            return [
                UsageLine(r.caller, r.name, r.version, r.day, r.requests, r.rows, r.errors, r.predict_seconds, r.tokens)
                for r in session.scalars(query.limit(limit))
            ]

    def sums(self, callers: Iterable[str], *, since: str) -> dict[tuple[str, str, str], Tally]:
        """Per (caller, model, day) from ``since`` on, the versions summed: what the quotas of
        these callers are checked against."""
        wanted = list(callers)
        if not wanted:
            return {}
        query = (
            select(
                UsageRow.caller,
                UsageRow.name,
                UsageRow.day,
                func.sum(UsageRow.requests),
                func.sum(UsageRow.rows),
                func.sum(UsageRow.tokens),
            )
            .where(UsageRow.caller.in_(wanted), UsageRow.day >= since)
            .group_by(UsageRow.caller, UsageRow.name, UsageRow.day)
        )
        with self._session() as session:
            return {
                (caller, name, day): Tally(requests=int(req or 0), rows=int(rows or 0), tokens=int(tokens or 0))
                for caller, name, day, req, rows, tokens in session.execute(query)
            }


def matching(tallies: Mapping[tuple[str, str, str], Tally], caller: str, models: str, since: str) -> Tally:
    """The sum of ``tallies`` (as :meth:`UsageStore.sums` gives them) of one caller, over the
    models matching a glob, from a day on."""
    total = Tally()
    for (who, name, day), tally in tallies.items():
        if who == caller and day >= since and fnmatch.fnmatchcase(name, models):
            total.add(tally)
    return total
