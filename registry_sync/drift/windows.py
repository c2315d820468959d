"""Live drift windows: sampled rows binned on a version's reference, summable over a fleet.

A serving process bins the inputs and outputs it samples on the version's reference bins
(:func:`registry_sync.drift.statistics.bin_frame`) and keeps a sliding window of those counts
(``gateway/drift/window.py``). Every GATEWAY_DRIFT_INTERVAL_SECONDS it publishes its window per
version identity (:meth:`WindowStore.publish`): one row per process and version, so no two
writers race for a key. Counts per bin add up over processes: the fleet's window is the sum of
the rows published within the last ``recent_seconds`` (:meth:`WindowStore.fleet`); rows of a
process not heard from for ``forget_after`` seconds (the database's clock) are deleted.

Nothing here holds a row of data: a window is bins, so its size is bounded per version by the
reference's columns and bins, whatever the traffic.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, delete, select
from sqlalchemy.orm import Session, sessionmaker

from registry_sync.drift.statistics import ColumnCounts
from registry_sync.identity import VersionId
from registry_sync.lease import db_now
from registry_sync.repository import transaction, upsert
from registry_sync.state import DriftWindowRow


def _sum(left: Mapping[str, ColumnCounts], right: Mapping[str, ColumnCounts]) -> dict[str, ColumnCounts]:
    total = dict(left)
    for name, counts in right.items():
        mine = total.get(name)
        # Counts binned on another reference (it changed between publications) do not add up.
        if mine is None:
            total[name] = counts
        elif len(mine.counts) == len(counts.counts):
            total[name] = mine + counts
    return total


@dataclass(frozen=True, slots=True)
class WindowCounts:
    """A window of one version's sampled traffic: per input and output column its counts on
    the reference's bins; ``rows`` the rows binned; ``requests`` the requests they came in;
    ``mismatched`` the requests whose columns were not the reference's (missing or extra:
    counted as outliers, binned for the columns they had); ``unreadable`` the sampled requests
    or answers that could not be read as a table at all."""

    inputs: Mapping[str, ColumnCounts] = field(default_factory=dict)
    outputs: Mapping[str, ColumnCounts] = field(default_factory=dict)
    rows: int = 0
    requests: int = 0
    mismatched: int = 0
    unreadable: int = 0

    def __add__(self, other: WindowCounts) -> WindowCounts:
        return WindowCounts(
            _sum(self.inputs, other.inputs),
            _sum(self.outputs, other.outputs),
            self.rows + other.rows,
            self.requests + other.requests,
            self.mismatched + other.mismatched,
            self.unreadable + other.unreadable,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "inputs": [c.to_json() for c in self.inputs.values()],
            "outputs": [c.to_json() for c in self.outputs.values()],
            "rows": self.rows,
            "requests": self.requests,
            "mismatched": self.mismatched,
            "unreadable": self.unreadable,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> WindowCounts:
        inputs = [ColumnCounts.from_json(c) for c in data.get("inputs", [])]
        outputs = [ColumnCounts.from_json(c) for c in data.get("outputs", [])]
        return cls(
            {c.name: c for c in inputs},
            {c.name: c for c in outputs},
            int(data.get("rows", 0)),
            int(data.get("requests", 0)),
            int(data.get("mismatched", 0)),
            int(data.get("unreadable", 0)),
        )


class WindowStore:
    def __init__(self, engine: Engine) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def _session(self) -> AbstractContextManager[Session]:
        return transaction(self._sessions)

    def publish(self, replica: str, windows: Mapping[VersionId, WindowCounts], *, forget_after: float) -> None:
        """Upsert this process's windows, one row per version identity, stamped with the
        database's clock; delete rows of any process not seen for ``forget_after`` seconds."""
        with self._session() as session:
            now = float(session.scalar(select(db_now())) or 0.0)
            rows = [
                {
                    "replica": replica,
                    "uid": version.uid,
                    "name": version.name,
                    "version": version.version,
                    "source": version.source,
                    "created_ms": version.created_ms,
                    "counts": window.to_json(),
                    "rows": window.rows,
                    "seen_at": now,
                }
                for version, window in windows.items()
            ]
            if rows:
                session.execute(
                    upsert(
                        session,
                        DriftWindowRow,
                        rows,
                        keys=["replica", "uid"],
                        update=lambda new: {c: new.excluded[c] for c in ("counts", "rows", "seen_at")},
                    )
                )
            session.execute(delete(DriftWindowRow).where(DriftWindowRow.seen_at < now - forget_after))

    def fleet(self, *, recent_seconds: float) -> dict[VersionId, tuple[WindowCounts, int]]:
        """The fleet's window per version identity: the sum over the processes that published
        within ``recent_seconds`` (the database's clock), with how many did."""
        with self._session() as session:
            now = float(session.scalar(select(db_now())) or 0.0)
            rows = session.scalars(select(DriftWindowRow).where(DriftWindowRow.seen_at >= now - recent_seconds)).all()
        found: dict[VersionId, tuple[WindowCounts, int]] = {}
        for row in rows:
            version = VersionId(row.name, row.version, row.source, row.created_ms)
            window = WindowCounts.from_json(row.counts)
            total, processes = found.get(version, (WindowCounts(), 0))
            found[version] = (total + window, processes + 1)
        return found
