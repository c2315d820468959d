"""The fleet in the state database: each process's heartbeat and holdings, and what each
replica served lately.

Every process that serves or syncs reports itself (:meth:`FleetStore.report`) every
``GATEWAY_HEARTBEAT_SECONDS``: its row in ``fleet_members`` is stamped with the database's
clock, so "gone quiet" is judged on one clock whatever the hosts' own. A serving process also
upserts what it answered requests with into ``replica_history``, under its replica's stable
name: what that replica warms when it starts again. Each process writes only its own member
row and its own replica's history rows, so no two writers race for a key (the workers of one
``serve --workers N`` share a replica: their history rows keep the latest use of either).

Nothing here bumps the generation: the fleet is read on request (``GET /fleet``, ``/status``)
and at a process's start, never followed.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, case, delete, select
from sqlalchemy.orm import Session, sessionmaker

from registry_sync.identity import VersionId
from registry_sync.lease import db_now
from registry_sync.repository import transaction, upsert
from registry_sync.state import FleetMemberRow, ReplicaHistoryRow

STARTING, READY, DRAINING, STOPPED = "starting", "ready", "draining", "stopped"
SERVING_ROLES = ("all", "gateway")
JOBS_ROLE = "jobs"  # loads models for jobs' chunks only: not a serving replica


@dataclass(frozen=True, slots=True)
class Holding:
    """One version a process holds in memory."""

    name: str
    version: int
    size_bytes: int
    last_served: float | None  # when a request last used it, the process's clock (None: only warmed)
    in_use: int = 0
    aliases: tuple[str, ...] = ()  # the warm aliases the process serves with it (swapped to, flipped)

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "size_bytes": self.size_bytes,
            "last_served": self.last_served,
            "in_use": self.in_use,
            "aliases": list(self.aliases),
        }

    @classmethod
    def of_json(cls, raw: dict[str, Any]) -> Holding:
        return cls(
            name=str(raw["name"]),
            version=int(raw["version"]),
            size_bytes=int(raw.get("size_bytes") or 0),
            last_served=float(raw["last_served"]) if raw.get("last_served") is not None else None,
            in_use=int(raw.get("in_use") or 0),
            aliases=tuple(str(a) for a in raw.get("aliases") or ()),  # absent in a report before 49
        )


@dataclass(frozen=True, slots=True)
class Served:
    """A version a replica answered requests with, and when it last did."""

    id: VersionId
    size_bytes: int
    last_served: float  # the replica's clock, seconds since the epoch


@dataclass(frozen=True, slots=True)
class MemberReport:
    """What one process says of itself at each heartbeat."""

    member: str
    replica: str
    role: str
    state: str
    warm_rule: str = ""
    max_models: int = 0
    budget_bytes: int = 0
    loaded_bytes: int = 0
    holdings: tuple[Holding, ...] = ()


@dataclass(frozen=True, slots=True)
class Member:
    """A process of the fleet as it last reported, with its age on the database's clock."""

    member: str
    replica: str
    role: str
    state: str
    warm_rule: str
    started_at: float
    seen_at: float
    age_seconds: float  # since its last report, on the database's clock
    max_models: int
    budget_bytes: int
    loaded_bytes: int
    holdings: list[Holding] = field(default_factory=list)

    @property
    def serves(self) -> bool:
        return self.role in SERVING_ROLES


class FleetStore:
    def __init__(self, engine: Engine) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def _session(self) -> AbstractContextManager[Session]:
        return transaction(self._sessions)

    def report(
        self,
        report: MemberReport,
        served: Iterable[Served] = (),
        *,
        replica_now: float,
        forget_after: float,
        history_seconds: float,
    ) -> float:
        """Write this process's row and its replica's recent uses, in one transaction; delete
        members silent for ``forget_after`` seconds (the database's clock) and this replica's
        uses older than ``history_seconds`` before ``replica_now`` (its own clock, the one its
        uses are stamped with). Returns the database's clock."""
        with self._session() as session:
            now = float(session.scalar(select(db_now())) or 0.0)
            row = {
                "member": report.member,
                "replica": report.replica,
                "role": report.role,
                "state": report.state,
                "warm_rule": report.warm_rule,
                "started_at": now,
                "seen_at": now,
                "max_models": report.max_models,
                "budget_bytes": report.budget_bytes,
                "loaded_bytes": report.loaded_bytes,
                "holdings": [holding.as_json() for holding in report.holdings],
            }
            kept = ("replica", "role", "state", "warm_rule", "seen_at", "max_models", "budget_bytes", "loaded_bytes")
            session.execute(
                upsert(
                    session,
                    FleetMemberRow,
                    [row],
                    keys=["member"],
                    update=lambda new: {c: new.excluded[c] for c in (*kept, "holdings")},
                )
            )
            uses = [
                {
                    "replica": report.replica,
                    "name": used.id.name,
                    "version": used.id.version,
                    "source": used.id.source,
                    "created_ms": used.id.created_ms,
                    "size_bytes": used.size_bytes,
                    "last_served": used.last_served,
                }
                for used in served
            ]
            if uses:
                keys = ["replica", "name", "version"]
                session.execute(upsert(session, ReplicaHistoryRow, uses, keys=keys, update=_later))
            session.execute(
                delete(FleetMemberRow).where(
                    FleetMemberRow.seen_at < now - forget_after, FleetMemberRow.member != report.member
                )
            )
            session.execute(
                delete(ReplicaHistoryRow).where(
                    ReplicaHistoryRow.replica == report.replica,
                    ReplicaHistoryRow.last_served < replica_now - history_seconds,
                )
            )
            return now

    def history(self, replica: str, *, within: float, now: float) -> list[Served]:
        """What ``replica`` served in the ``within`` seconds before ``now`` (its own clock),
        most recently served first."""
        with self._session() as session:
            rows = session.scalars(
                select(ReplicaHistoryRow)
                .where(ReplicaHistoryRow.replica == replica, ReplicaHistoryRow.last_served >= now - within)
                .order_by(ReplicaHistoryRow.last_served.desc(), ReplicaHistoryRow.name, ReplicaHistoryRow.version)
            ).all()
        return [Served(VersionId(r.name, r.version, r.source, r.created_ms), r.size_bytes, r.last_served) for r in rows]

    def members(self) -> list[Member]:
        """Every process that reported within the forget window, by replica, newest first."""
        with self._session() as session:
            now = float(session.scalar(select(db_now())) or 0.0)
            rows = session.scalars(select(FleetMemberRow)).all()
        members = [
            Member(
                member=r.member,
                replica=r.replica,
                role=r.role,
                state=r.state,
                warm_rule=r.warm_rule,
                started_at=r.started_at,
                seen_at=r.seen_at,
                age_seconds=max(0.0, now - r.seen_at),
                max_models=r.max_models,
                budget_bytes=r.budget_bytes,
                loaded_bytes=r.loaded_bytes,
                holdings=[Holding.of_json(h) for h in r.holdings or []],
            )
            for r in rows
        ]
        return sorted(members, key=lambda m: (m.replica, -m.started_at, m.member))

    def other_serving_replicas(self, replica: str, *, within: float) -> list[str]:
        """Replicas other than ``replica`` with a serving process heard from within ``within``
        seconds and not stopped: is this process one of a fleet?"""
        with self._session() as session:
            now = float(session.scalar(select(db_now())) or 0.0)
            found = session.scalars(
                select(FleetMemberRow.replica)
                .where(
                    FleetMemberRow.replica != replica,
                    FleetMemberRow.role.in_(SERVING_ROLES),
                    FleetMemberRow.state != STOPPED,
                    FleetMemberRow.seen_at >= now - within,
                )
                .distinct()
            ).all()
        return sorted(found)

    def jobs_processes(self, *, within: float) -> int:
        """``--role jobs`` processes heard from within ``within`` seconds and not stopped: do
        serving processes leave the jobs' chunks to them (GATEWAY_JOBS_ON_SERVING=auto)?"""
        with self._session() as session:
            now = float(session.scalar(select(db_now())) or 0.0)
            found = session.scalars(
                select(FleetMemberRow.member).where(
                    FleetMemberRow.role == JOBS_ROLE,
                    FleetMemberRow.state != STOPPED,
                    FleetMemberRow.seen_at >= now - within,
                )
            ).all()
        return len(found)


def _later(new: Any) -> dict[str, Any]:
    """A history row keeps the latest use (two workers of one replica may report the same
    version) and the identity and size of the version that use was of."""
    newer = new.excluded.last_served >= ReplicaHistoryRow.last_served
    return {
        "last_served": case((newer, new.excluded.last_served), else_=ReplicaHistoryRow.last_served),
        "size_bytes": case((newer, new.excluded.size_bytes), else_=ReplicaHistoryRow.size_bytes),
        "source": case((newer, new.excluded.source), else_=ReplicaHistoryRow.source),
        "created_ms": case((newer, new.excluded.created_ms), else_=ReplicaHistoryRow.created_ms),
    }
