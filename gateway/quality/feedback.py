"""``POST /feedback``: labels joined to the answers kept for them, answered per item.

Each label is looked up, checked against the prediction it is for and inserted in one
transaction of the state database (:meth:`registry_sync.feedback.FeedbackStore.record_labels`)
before the answer: an accepted label survives a restart, and any replica's labels count on
every replica (PostgreSQL). The database down is 503 (nothing accepted, try again); no item
makes the batch fail: each is answered ``accepted``, ``unknown``, ``expired``, ``duplicate`` or
``invalid`` with its reason. An item found ``unknown`` is looked up once more after this
process's kept answers still queued are written (``written``, the keeper's flush): a label sent
a moment after its answer, to the replica that answered, finds it.

Accepted labels also go to the inference tables, when they are on (:class:`LabelSink`), so that
an offline join needs no gateway.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import anyio.to_thread

from gateway.metrics import UNKNOWN, GatewayMetrics
from gateway.observability.records.record import LabelRecord
from gateway.wire.feedback_body import BadItem, parse_feedback
from registry_sync.feedback import ACCEPTED, INVALID, FeedbackStore, LabelItem, Outcome
from registry_sync.feedback import UNKNOWN as NOT_KEPT


class LabelSink(Protocol):
    """Where accepted labels go besides the state database: the inference tables' recorder
    (:meth:`gateway.observability.records.recorder.Recorder.offer_labels`)."""

    def offer_labels(self, labels: list[LabelRecord]) -> int: ...


class FeedbackService:
    def __init__(
        self,
        store: FeedbackStore,
        metrics: GatewayMetrics,
        *,
        max_items: int,
        tables: LabelSink | None = None,
        written: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._max_items = max_items
        self.tables = tables
        self._written = written  # waits until this process's kept answers are in the database

    async def receive(self, body: bytes) -> dict[str, Any]:
        """The answer to one feedback body: a result per item, in order, and counts by status."""
        items = parse_feedback(body, max_items=self._max_items)
        labels = [item for item in items if isinstance(item, LabelItem)]
        now = time.time()
        recorded = iter(await self._record(labels, now))
        outcomes = [
            Outcome(item.request_id or "", INVALID, item.reason) if isinstance(item, BadItem) else next(recorded)
            for item in items
        ]
        self._count(outcomes)
        accepted = [(o, item) for o, item in zip(outcomes, items, strict=True) if o.status == ACCEPTED]
        if accepted and self.tables is not None:
            # The one call site of the inference tables for labels.
            self.tables.offer_labels(
                [
                    LabelRecord(o.request_id, o.name or "", str(o.version or 0), item.label, now, o.row or 0)
                    for o, item in accepted
                    if isinstance(item, LabelItem)
                ]
            )
        statuses: dict[str, int] = {}
        for outcome in outcomes:
            statuses[outcome.status] = statuses.get(outcome.status, 0) + 1
        return {"counts": statuses, "results": [_result(o) for o in outcomes]}

    async def _record(self, labels: list[LabelItem], now: float) -> list[Outcome]:
        outcomes = await anyio.to_thread.run_sync(lambda: self._store.record_labels(labels, now=now))
        late = [i for i, outcome in enumerate(outcomes) if outcome.status == NOT_KEPT]
        if late and self._written is not None:
            # Every item of an unknown request id is unknown, so these ids' items are all here:
            # recorded apart, their duplicates within the batch are still found.
            await self._written()
            again = [labels[i] for i in late]
            retried = await anyio.to_thread.run_sync(lambda: self._store.record_labels(again, now=now))
            for i, outcome in zip(late, retried, strict=True):
                outcomes[i] = outcome
        return outcomes

    def _count(self, outcomes: list[Outcome]) -> None:
        counted: dict[tuple[str, str, str, str], int] = {}  # one increment per series, not per label
        for outcome in outcomes:
            if outcome.status == ACCEPTED:
                key = (outcome.name or UNKNOWN, str(outcome.version), outcome.arm or UNKNOWN, ACCEPTED)
            else:
                key = (UNKNOWN, UNKNOWN, UNKNOWN, outcome.status)
            counted[key] = counted.get(key, 0) + 1
        for (model, version, arm, status), count in counted.items():
            self._metrics.labels_received(model=model, version=version, arm=arm, status=status, count=count)


def _result(outcome: Outcome) -> dict[str, Any]:
    result: dict[str, Any] = {"request_id": outcome.request_id, "status": outcome.status}
    if outcome.row is not None:
        result["row"] = outcome.row
    if outcome.reason is not None:
        result["reason"] = outcome.reason
    if outcome.name is not None:
        result |= {"model": outcome.name, "version": outcome.version, "arm": outcome.arm}
    return result
