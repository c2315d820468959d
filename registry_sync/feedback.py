"""Ground truth in the state database: the answers that may get a label, and the labels.

A serving process keeps what a label needs to be joined (request id to the version identity
and arm that answered, its prediction and probabilities) for a sampled share of its answers,
in batches (:meth:`FeedbackStore.keep`): a request id seen twice keeps its first answer. An
answer of several rows is kept whole (``rows``; its prediction and probabilities are then
lists, one element per row), and each row takes a label of its own, named by its index
(``row``): a label is one output row, as SageMaker's ground truth is one per captured record.
A label (:meth:`FeedbackStore.record_labels`) is looked up, checked against its row's
prediction and inserted in one transaction, so that two replicas given the same label at once
accept it once (the other answers ``duplicate``); it is in the database before
``POST /feedback`` answers.
Each label row carries a copy of what it was joined to: live quality reads one table, and a
label outlives its prediction's row. On PostgreSQL every replica sees every other's rows.

Rows past their time are deleted in batches (:meth:`FeedbackStore.delete_expired`): a
prediction a retention after it expired (until then its label is answered ``expired``, after
that ``unknown``), a label a retention after it was received.

Which (version identity, arm) pairs have labels is kept beside them (``feedback_arms``), written
with the labels at most every ``ANNOUNCE_SECONDS`` per pair and process: live quality reads that
small table each interval, where a DISTINCT over the labels grew with the backlog.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Literal, cast

import orjson
from sqlalchemy import Engine, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from registry_sync.identity import VersionId
from registry_sync.quality import (
    DEFAULT_WINDOW,
    Labelled,
    QualityFigures,
    Scored,
    Task,
    label_problem,
    score,
    task_of_tag,
)
from registry_sync.repository import StateUnavailable, transaction
from registry_sync.state import FeedbackArmRow, FeedbackLabelRow, FeedbackPredictionRow, ModelVersionRow

ANNOUNCE_SECONDS = 60.0  # a pair's last_label_at is refreshed at most this often per process
NO_CREATION_TIME = -1  # feedback_arms.created_ms where the registry gave none (a key is never null)

Status = Literal["accepted", "unknown", "expired", "duplicate", "invalid"]
ACCEPTED: Status = "accepted"
UNKNOWN: Status = "unknown"
EXPIRED: Status = "expired"
DUPLICATE: Status = "duplicate"
INVALID: Status = "invalid"


@dataclass(frozen=True, slots=True)
class KeptPrediction:
    """An answer that may get a label: who answered it and what it said."""

    request_id: str
    id: VersionId
    arm: str
    task: Task
    prediction: Any
    probabilities: Any
    answered_at: float
    rows: int = 1
    """The answer's rows: past 1, ``prediction`` and ``probabilities`` hold one element per row."""


@dataclass(frozen=True, slots=True)
class LabelItem:
    """One label as a caller sent it; ``model`` and ``version``, if given, must be those that
    answered; ``row``: which row of the answer it is for (None: the answer's only row)."""

    request_id: str
    label: Any
    model: str | None = None
    version: int | None = None
    row: int | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one label: its status, the reason when it was not accepted, and for an
    accepted one, the version that answered it."""

    request_id: str
    status: Status
    reason: str | None = None
    name: str | None = None
    version: int | None = None
    arm: str | None = None
    row: int | None = None


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _insert(session: Session, table: type[Any]) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING, for executemany: one statement compiled once and
    cached, whatever the number of rows (a multi-row VALUES is compiled anew each time, and
    cost 20 ms a batch of 100)."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table.__table__).on_conflict_do_nothing()
    if dialect == "sqlite":
        return sqlite.insert(table.__table__).on_conflict_do_nothing()
    raise StateUnavailable(f"cannot insert into {table.__tablename__} on {dialect}")  # pragma: no cover


_PREDICTION_COLUMNS = [
    FeedbackPredictionRow.request_id,
    FeedbackPredictionRow.name,
    FeedbackPredictionRow.version,
    FeedbackPredictionRow.source,
    FeedbackPredictionRow.created_ms,
    FeedbackPredictionRow.arm,
    FeedbackPredictionRow.task,
    FeedbackPredictionRow.prediction,
    FeedbackPredictionRow.probabilities,
    FeedbackPredictionRow.rows,
    FeedbackPredictionRow.expires_at,
]


def _upsert_arms(session: Session) -> Any:
    """INSERT ... ON CONFLICT (the pair) DO UPDATE last_label_at, for executemany."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        statement: Any = postgresql.insert(FeedbackArmRow)
    elif dialect == "sqlite":
        statement = sqlite.insert(FeedbackArmRow)
    else:  # pragma: no cover
        raise StateUnavailable(f"cannot insert into feedback_arms on {dialect}")
    keys = ["name", "version", "source", "created_ms", "arm"]
    return statement.on_conflict_do_update(
        index_elements=keys, set_={"last_label_at": statement.excluded.last_label_at}
    )


Pair = tuple[str, int, str, int, str]  # name, version, source, created_ms (or -1), arm


class FeedbackStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._announced: dict[Pair, float] = {}  # pair -> when this process last wrote it

    def _session(self) -> AbstractContextManager[Session]:
        return transaction(self._sessions)

    def keep(self, predictions: Sequence[KeptPrediction], *, retention_seconds: float) -> None:
        """Insert these predictions; a request id already kept keeps its first answer."""
        if not predictions:
            return
        rows = [
            {
                "request_id": p.request_id,
                "name": p.id.name,
                "version": p.id.version,
                "source": p.id.source,
                "created_ms": p.id.created_ms,
                "arm": p.arm,
                "task": p.task,
                "prediction": _json(p.prediction),
                "probabilities": None if p.probabilities is None else _json(p.probabilities),
                "rows": p.rows,
                "answered_at": p.answered_at,
                "expires_at": p.answered_at + retention_seconds,
            }
            for p in predictions
        ]
        with self._session() as session:
            session.connection().execute(_insert(session, FeedbackPredictionRow), rows)

    def record_labels(self, items: Sequence[LabelItem], *, now: float) -> list[Outcome]:
        """Join each label to its prediction, check it and insert the accepted ones, in one
        transaction; an outcome per item, in order."""
        ids = list(dict.fromkeys(item.request_id for item in items))
        with self._session() as session:
            found = select(*_PREDICTION_COLUMNS).where(FeedbackPredictionRow.request_id.in_(ids))
            kept = {row.request_id: row for row in session.connection().execute(found)}
            outcomes: list[Outcome] = []
            accepted: dict[tuple[str, int], dict[str, Any]] = {}
            for item in items:
                outcomes.append(self._judge(item, kept.get(item.request_id), accepted, now))
            if accepted:
                statement = _insert(session, FeedbackLabelRow).returning(
                    FeedbackLabelRow.request_id, FeedbackLabelRow.row
                )
                inserted = {(rid, row) for rid, row in session.connection().execute(statement, list(accepted.values()))}
                outcomes = [
                    Outcome(o.request_id, DUPLICATE, "a label for this request and row was received before", row=o.row)
                    if o.status == ACCEPTED and (o.request_id, o.row or 0) not in inserted
                    else o
                    for o in outcomes
                ]
                self._announce(session, [accepted[key] for key in inserted], now)
            return outcomes

    def _announce(self, session: Session, rows: Sequence[dict[str, Any]], now: float) -> None:
        """The pairs these labels belong to, written where this process has not in a while."""
        due = {}
        for row in rows:
            created = row["created_ms"] if row["created_ms"] is not None else NO_CREATION_TIME
            pair: Pair = (row["name"], row["version"], row["source"], created, row["arm"])
            if pair not in due and now - self._announced.get(pair, float("-inf")) >= ANNOUNCE_SECONDS:
                due[pair] = now
        if not due:
            return
        keys = ("name", "version", "source", "created_ms", "arm")
        values = [dict(zip(keys, pair, strict=True)) | {"last_label_at": at} for pair, at in due.items()]
        session.connection().execute(_upsert_arms(session), values)
        if len(self._announced) > 10_000:  # pairs of versions long gone: start again
            self._announced.clear()
        self._announced.update(due)

    @staticmethod
    def _judge(item: LabelItem, kept: Any, accepted: dict[tuple[str, int], dict[str, Any]], now: float) -> Outcome:
        rid, index = item.request_id, item.row
        if kept is None:
            return Outcome(rid, UNKNOWN, "no answer with this request id was kept for feedback", row=index)
        if kept.expires_at < now:
            reason = "the answer waited for its label longer than GATEWAY_FEEDBACK_RETENTION_HOURS"
            return Outcome(rid, EXPIRED, reason, row=index)
        if item.model is not None and item.model != kept.name:
            reason = f"the request was answered by model '{kept.name}', not '{item.model}'"
            return Outcome(rid, INVALID, reason, row=index)
        if item.version is not None and item.version != kept.version:
            reason = f"the request was answered by version {kept.version}, not {item.version}"
            return Outcome(rid, INVALID, reason, row=index)
        rows = kept.rows or 1  # rows kept before the column existed were one-row answers
        if index is None and rows > 1:
            reason = f"the answer has {rows} rows: say which this label is for with row (0 to {rows - 1})"
            return Outcome(rid, INVALID, reason)
        position = index or 0
        if position >= rows:
            reason = f"row {position} is out of range: the answer has {rows} row{'s' if rows > 1 else ''}"
            return Outcome(rid, INVALID, reason, row=index)
        prediction, probabilities = kept.prediction, kept.probabilities
        if rows > 1:  # the row's own prediction, as its label's row keeps it
            prediction = _json(orjson.loads(prediction)[position])
            if probabilities is not None:
                probabilities = _json(orjson.loads(probabilities)[position])
        if (problem := label_problem(orjson.loads(prediction), item.label)) is not None:
            return Outcome(rid, INVALID, problem, row=index)
        if (rid, position) in accepted:
            reason = "this request id and row came twice in the batch; the first label counts"
            return Outcome(rid, DUPLICATE, reason, row=index)
        accepted[(rid, position)] = {
            "request_id": rid,
            "row": position,
            "name": kept.name,
            "version": kept.version,
            "source": kept.source,
            "created_ms": kept.created_ms,
            "arm": kept.arm,
            "task": kept.task,
            "prediction": prediction,
            "probabilities": probabilities,
            "label": _json(item.label),
            "received_at": now,
        }
        return Outcome(rid, ACCEPTED, None, kept.name, kept.version, kept.arm, index)

    def delete_expired(self, *, now: float, retention_seconds: float, batch: int = 1000) -> int:
        """Delete up to ``batch`` predictions that expired a retention ago and as many labels
        received a retention ago; the rows deleted (call again until it returns 0)."""
        deleted = 0
        with self._session() as session:
            for table, column in (
                (FeedbackPredictionRow, FeedbackPredictionRow.expires_at),
                (FeedbackLabelRow, FeedbackLabelRow.received_at),
            ):
                cutoff = now - retention_seconds
                ids = select(table.request_id).where(column < cutoff).limit(batch)
                result = session.execute(
                    delete(table).where(table.request_id.in_(ids)).execution_options(synchronize_session=False)
                )
                deleted += int(result.rowcount or 0)  # type: ignore[attr-defined]
            # a pair none of whose labels is left (its last_label_at lags by up to ANNOUNCE_SECONDS)
            gone = FeedbackArmRow.last_label_at < now - retention_seconds - ANNOUNCE_SECONDS
            session.execute(delete(FeedbackArmRow).where(gone))
        return deleted

    def version_identity(self, name: str, version: int) -> tuple[VersionId, dict[str, str]] | None:
        """The version now under this number (by identity) and its tags; None if unknown or deleted."""
        with self._session() as session:
            row = session.get(ModelVersionRow, (name, version))
            if row is None or row.deleted:
                return None
            return VersionId(row.name, row.version, row.source, row.created_ms), dict(row.tags or {})

    def labelled(self) -> list[tuple[VersionId, str]]:
        """Every (version identity, arm) that has labels (for up to ``ANNOUNCE_SECONDS`` after
        its last label is deleted, one whose window is empty)."""
        with self._session() as session:
            found = session.execute(
                select(
                    FeedbackArmRow.name,
                    FeedbackArmRow.version,
                    FeedbackArmRow.source,
                    FeedbackArmRow.created_ms,
                    FeedbackArmRow.arm,
                )
            ).all()
        return [(VersionId(n, v, s, None if c == NO_CREATION_TIME else c), arm) for n, v, s, c, arm in found]

    def window(self, identity: VersionId, *, arm: str | None, window: int) -> tuple[list[Labelled], Task | None]:
        """The latest ``window`` labels of a version (and arm), and the task their answers recorded."""
        query = select(
            FeedbackLabelRow.prediction, FeedbackLabelRow.probabilities, FeedbackLabelRow.label, FeedbackLabelRow.task
        ).where(
            FeedbackLabelRow.name == identity.name,
            FeedbackLabelRow.version == identity.version,
            FeedbackLabelRow.source == identity.source,
        )
        if identity.created_ms is not None:
            query = query.where(FeedbackLabelRow.created_ms == identity.created_ms)
        if arm is not None:
            query = query.where(FeedbackLabelRow.arm == arm)
        query = query.order_by(FeedbackLabelRow.received_at.desc(), FeedbackLabelRow.request_id).limit(window)
        with self._session() as session:
            rows = session.execute(query).all()
        task = cast(Task | None, rows[0][3] if rows else None)  # written by keep() as a Task
        labelled = [
            Labelled(orjson.loads(p), orjson.loads(chances) if chances is not None else None, orjson.loads(label))
            for p, chances, label, _ in rows
        ]
        return labelled, task

    def scored(self, identity: VersionId, *, arm: str | None, window: int, task: Task | None = None) -> Scored:
        """The window scored; ``task`` (a version's tag) overrides the one recorded."""
        rows, recorded = self.window(identity, arm=arm, window=window)
        return score(rows, task or recorded, window=window)


def live_quality(
    store_or_engine: Any, model: str, version: str, *, arm: str | None = None, window: int = DEFAULT_WINDOW
) -> QualityFigures:
    """The live quality of ``model``'s version ``version`` (its number, as text: the version now
    under that number, by identity) over its latest ``window`` labels (GATEWAY_QUALITY_WINDOW,
    to agree with the gateways' figures), of one arm (``default``, ``canary``, ``named``...) or
    all. A version without labels has ``labels`` 0 and no metrics. Reads the state database (a
    :class:`~registry_sync.repository.StateStore` or an engine);
    :class:`~registry_sync.repository.StateUnavailable` when it cannot."""
    engine: Engine = store_or_engine if isinstance(store_or_engine, Engine) else store_or_engine.engine
    feedback = FeedbackStore(engine)
    found = feedback.version_identity(model, int(version))
    if found is None:
        return QualityFigures(None, 0, {}, window)
    identity, tags = found
    return feedback.scored(identity, arm=arm, window=window, task=task_of_tag(tags)).figures
