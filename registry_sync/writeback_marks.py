"""What the sync leader has written back to MLflow, per version, in the state database: so that
a new leader (the old one dead, or its lease lost) logs every window to MLflow once.

A window is begun before it is logged (:meth:`WritebackMarks.begin`: its step, one of its
metrics and the processes' totals it reaches) and settled after (:meth:`WritebackMarks.settle`:
those totals become ``logged``). A leader that dies between the two leaves the window pending;
whoever leads next asks MLflow whether that metric has a point at that step: yes, MLflow has
the window (it is settled, not logged again); no, it never got there (it is dropped, and the
next window covers its answers). Each change is conditional on the row as it was read (its
step, its pending step): a leader that lost its lease and writes late changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, update
from sqlalchemy.orm import Session, sessionmaker

from registry_sync.figures import VersionFigures
from registry_sync.repository import transaction
from registry_sync.state import WritebackMarkRow

Totals = dict[str, VersionFigures]  # serving process -> its totals for one version


@dataclass(frozen=True, slots=True)
class Pending:
    """A window begun and not known to be in MLflow."""

    step: int
    key: str
    covers: Totals


@dataclass(frozen=True, slots=True)
class Mark:
    """Where one version's write-back stands: the totals MLflow's windows reach, the last step
    begun, and the window pending, if one is."""

    name: str
    version: int
    step: int = 0
    logged: Totals = field(default_factory=dict)
    pending: Pending | None = None


def _dump(totals: Totals) -> dict[str, Any]:
    return {
        replica: {"requests": f.requests, "errors": f.errors, "latency": dict(f.latency), "sum": f.latency_sum}
        for replica, f in totals.items()
    }


def _load(name: str, version: int, stored: Mapping[str, Any] | None) -> Totals:
    return {
        replica: VersionFigures(
            name,
            version,
            int(f["requests"]),
            int(f["errors"]),
            {str(k): int(v) for k, v in f["latency"].items()},
            float(f["sum"]),
        )
        for replica, f in (stored or {}).items()
    }


class WritebackMarks:
    def __init__(self, engine: Engine) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def _session(self) -> AbstractContextManager[Session]:
        return transaction(self._sessions)

    def read(self, name: str, version: int) -> Mark:
        with self._session() as session:
            row = session.get(WritebackMarkRow, (name, version))
        if row is None:
            return Mark(name, version)
        pending = None
        if row.pending_step is not None:
            pending = Pending(row.pending_step, row.pending_key or "", _load(name, version, row.pending_covers))
        return Mark(name, version, row.step, _load(name, version, row.logged), pending)

    def begin(self, mark: Mark, *, step: int, key: str, covers: Totals) -> bool:
        """Record a window about to be logged; False where the row is no longer as ``mark`` read
        it (another leader moved it on: log nothing)."""
        with self._session() as session:
            if session.get(WritebackMarkRow, (mark.name, mark.version)) is None:
                if mark.step != 0:
                    return False
                session.add(WritebackMarkRow(name=mark.name, version=mark.version, step=0, logged={}))
                session.flush()
            done = session.execute(
                update(WritebackMarkRow)
                .where(
                    WritebackMarkRow.name == mark.name,
                    WritebackMarkRow.version == mark.version,
                    WritebackMarkRow.step == mark.step,
                    WritebackMarkRow.pending_step.is_(None),
                )
                .values(step=step, pending_step=step, pending_key=key, pending_covers=_dump(covers))
            )
            return bool(done.rowcount)  # type: ignore[attr-defined]

    def settle(self, name: str, version: int, pending: Pending) -> bool:
        """MLflow has the window: its totals are what is logged."""
        return self._close(name, version, pending, logged=_dump(pending.covers))

    def drop(self, name: str, version: int, pending: Pending) -> bool:
        """MLflow never got the window: forget it (the next window covers its answers)."""
        return self._close(name, version, pending, logged=None)

    def _close(self, name: str, version: int, pending: Pending, *, logged: dict[str, Any] | None) -> bool:
        values: dict[str, Any] = {"pending_step": None, "pending_key": None, "pending_covers": None}
        if logged is not None:
            values["logged"] = logged
        with self._session() as session:
            done = session.execute(
                update(WritebackMarkRow)
                .where(
                    WritebackMarkRow.name == name,
                    WritebackMarkRow.version == version,
                    WritebackMarkRow.pending_step == pending.step,
                )
                .values(**values)
            )
            return bool(done.rowcount)  # type: ignore[attr-defined]
