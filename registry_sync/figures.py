"""Each serving process's figures per version, in the state database, summable over a fleet.

A serving process counts, per version, the prediction requests it answered, those answered
5xx, and their latencies in its Prometheus histogram's buckets (``gateway/metrics.py``); every
follow interval it publishes these counts since its start (:meth:`FiguresStore.publish`),
when they changed, as one row per version under its own process id: no two writers race for a
key, and a row's counts never go down (a restarted process is a new row). Counts and bucket
counts add up over processes, where percentiles do not: a fleet's p99 is read from the summed
buckets (:func:`quantile`, the way Prometheus's ``histogram_quantile`` reads them). Rows not
published for ``forget_after`` seconds (the database's clock) are deleted.

Nothing here bumps the generation: the sync leader reads these rows at its write-back interval
(``registry_sync/writeback.py``), never the request path.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

from sqlalchemy import Engine, delete, select
from sqlalchemy.orm import Session, sessionmaker

from registry_sync.lease import db_now
from registry_sync.repository import transaction, upsert
from registry_sync.state import VersionFiguresRow

INF = "+Inf"


@dataclass(frozen=True, slots=True)
class VersionFigures:
    """What processes answered with one version: requests, 5xx errors, latency bucket counts
    (upper bound as Prometheus writes it -> requests in that bucket, not cumulative)."""

    name: str
    version: int
    requests: int = 0
    errors: int = 0
    latency: Mapping[str, int] = field(default_factory=dict)
    latency_sum: float = 0.0

    def __add__(self, other: VersionFigures) -> VersionFigures:
        buckets = dict(self.latency)
        for bound, count in other.latency.items():
            buckets[bound] = buckets.get(bound, 0) + count
        return VersionFigures(
            self.name,
            self.version,
            self.requests + other.requests,
            self.errors + other.errors,
            buckets,
            self.latency_sum + other.latency_sum,
        )

    def __sub__(self, earlier: VersionFigures) -> VersionFigures:
        """What was answered since ``earlier`` (the same process's counts, read before)."""
        return VersionFigures(
            self.name,
            self.version,
            self.requests - earlier.requests,
            self.errors - earlier.errors,
            {bound: count - earlier.latency.get(bound, 0) for bound, count in self.latency.items()},
            self.latency_sum - earlier.latency_sum,
        )

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    def p99_seconds(self) -> float | None:
        return quantile(self.latency, 0.99)


def quantile(buckets: Mapping[str, int], q: float) -> float | None:
    """The ``q`` quantile of a histogram's bucket counts (bound -> count, not cumulative), as
    Prometheus's ``histogram_quantile`` estimates it: linear within the bucket it falls in (from
    0 for the first); in the ``+Inf`` bucket, the highest finite bound. None without counts."""
    ordered = sorted((_bound(bound), count) for bound, count in buckets.items())
    total = sum(count for _, count in ordered)
    if total <= 0:
        return None
    rank = q * total
    cumulative, lower = 0, 0.0
    for upper, count in ordered:
        if count > 0 and cumulative + count >= rank:
            if math.isinf(upper):
                return lower
            return lower + (upper - lower) * (rank - cumulative) / count
        cumulative += count
        if not math.isinf(upper):
            lower = upper
    return lower


def _bound(text: str) -> float:
    return math.inf if text == INF else float(text)


class FiguresStore:
    def __init__(self, engine: Engine) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def _session(self) -> AbstractContextManager[Session]:
        return transaction(self._sessions)

    def publish(self, replica: str, figures: Iterable[VersionFigures], *, forget_after: float) -> None:
        """Upsert this process's figures (since its start), one row per version, stamped with the
        database's clock; delete rows of any process not seen for ``forget_after`` seconds."""
        with self._session() as session:
            now = float(session.scalar(select(db_now())) or 0.0)
            rows = [
                {
                    "replica": replica,
                    "name": f.name,
                    "version": f.version,
                    "requests": f.requests,
                    "errors": f.errors,
                    "latency": dict(f.latency),
                    "latency_sum": f.latency_sum,
                    "seen_at": now,
                }
                for f in figures
            ]
            if rows:
                kept = ("requests", "errors", "latency", "latency_sum", "seen_at")
                session.execute(
                    upsert(
                        session,
                        VersionFiguresRow,
                        rows,
                        keys=["replica", "name", "version"],
                        update=lambda new: {c: new.excluded[c] for c in kept},
                    )
                )
            session.execute(delete(VersionFiguresRow).where(VersionFiguresRow.seen_at < now - forget_after))

    def by_process(self) -> dict[tuple[str, str, int], VersionFigures]:
        """Every process's last published figures, by (process, model, version)."""
        with self._session() as session:
            rows = session.scalars(select(VersionFiguresRow)).all()
        return {
            (r.replica, r.name, r.version): VersionFigures(
                r.name, r.version, r.requests, r.errors, {str(k): int(v) for k, v in r.latency.items()}, r.latency_sum
            )
            for r in rows
        }
