"""Answers kept for the labels that may come later, written to the state database off the
request path.

On the request path (:meth:`PredictionKeeper.offer`): a sampling draw (GATEWAY_FEEDBACK_SAMPLE)
and, for a kept answer, an append of its bytes under a lock held for no more than that. The
queue is bounded in bytes (GATEWAY_FEEDBACK_BUFFER_MB, the bodies plus a constant, those being
written included): past it an answer is dropped and counted (``gateway_feedback_dropped_total``
``{reason="buffer_full"}``), never waited for. A task on the event loop takes what waits every
``FLUSH_SECONDS`` and, in a thread, parses each answer (MLflow's scoring answer, of one row or
several: each row takes a label of its own; an answer it cannot read is counted
``unreadable``) and inserts the batch in one statement; a
failed write drops its batch and counts it (``write_error``): the requests were answered long
ago, and a label for one of them is answered ``unknown``. The same task deletes expired rows,
a batch at a time, every ``CLEAN_SECONDS``.

A label sent within ``FLUSH_SECONDS`` of its answer to another replica may find nothing yet
(``unknown``): labels come minutes or days later. The replica that answered writes what it holds
(:meth:`PredictionKeeper.flush`) before it answers a label ``unknown``
(:class:`gateway.quality.feedback.FeedbackService`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
import numpy as np
import orjson
from mlflow.models import Model
from mlflow.types.schema import ColSpec, DataType, TensorSpec

from gateway.metrics import GatewayMetrics
from gateway.settings import GatewaySettings
from registry_sync.errors import RegistryError
from registry_sync.feedback import FeedbackStore, KeptPrediction
from registry_sync.identity import VersionId
from registry_sync.periodic import Outage, Periodic
from registry_sync.quality import CLASSIFICATION, REGRESSION, Task, task_of_value

log = logging.getLogger(__name__)

FLUSH_SECONDS = 0.2
CLEAN_SECONDS = 60.0
BATCH = 1000  # answers per insert
OVERHEAD_BYTES = 256  # a queued answer's dataclass and strings, beside its body
_CLASS_TYPES = {DataType.integer, DataType.long, DataType.string, DataType.boolean}
_VALUE_TYPES = {DataType.float, DataType.double}


@dataclass(frozen=True, slots=True)
class Answered:
    """What the request path hands over: who answered, and the answer as sent."""

    request_id: str
    id: VersionId
    arm: str
    response: bytes
    answered_at: float


def task_of_signature(metadata: Model | None) -> Task | None:
    """The task a version's signature gives: one output of an integer, string or boolean type
    is a class, of a float type a value; None without a signature or with several outputs."""
    signature = metadata.signature if metadata is not None else None
    if signature is None or signature.outputs is None:
        return None
    specs = signature.outputs.inputs
    if len(specs) != 1:
        return None
    spec = specs[0]
    if isinstance(spec, ColSpec) and isinstance(spec.type, DataType):
        if spec.type in _CLASS_TYPES:
            return CLASSIFICATION
        return REGRESSION if spec.type in _VALUE_TYPES else None
    if isinstance(spec, TensorSpec):
        kind = np.dtype(spec.type).kind
        if kind in "iubUS":
            return CLASSIFICATION
        return REGRESSION if kind == "f" else None
    return None


def answer_rows(response: bytes) -> list[tuple[Any, Any]] | None:
    """(prediction, probabilities) of each row of MLflow's scoring answer, or None where it is
    not one (not JSON, no ``predictions`` list, no rows). A row that is an object with
    ``probabilities`` gives its ``prediction`` (or ``label``) field and those; any other row is
    the prediction itself."""
    try:
        body = orjson.loads(response)
    except orjson.JSONDecodeError:
        return None
    rows = body.get("predictions") if isinstance(body, dict) else None
    if not isinstance(rows, list) or not rows:
        return None
    return [_split(row) for row in rows]


def _split(row: Any) -> tuple[Any, Any]:
    if isinstance(row, dict) and "probabilities" in row:
        for field in ("prediction", "label"):
            if field in row:
                return row[field], row["probabilities"]
    return row, None


class PredictionKeeper:
    def __init__(
        self,
        store: FeedbackStore,
        metrics: GatewayMetrics,
        *,
        sample: float,
        max_bytes: int,
        retention_seconds: float,
        signature: Callable[[VersionId], Model | None],
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._sample = sample
        self._max_bytes = max_bytes
        self.retention_seconds = retention_seconds
        self._signature = signature  # a loaded version's MLmodel (None: not loaded here)
        self._tasks: dict[VersionId, Task | None] = {}
        self._queue: deque[Answered] = deque()
        self._held = 0  # bytes queued or being written
        self._lock = threading.Lock()
        self._loop = Periodic("writing the answers kept for feedback", FLUSH_SECONDS, self._pass, log=log)
        self._flushing = asyncio.Lock()
        self._cleaned_at = 0.0
        self._outage = Outage(
            log,
            "could not keep answers for feedback (dropped, counted; trying again)",
            "keeping answers for feedback again",
        )

    @property
    def queued_bytes(self) -> int:
        return self._held

    def offer(self, answered: Answered) -> None:
        """Keep this answer for a label, if sampled and it fits. Never blocks, never raises."""
        if self._sample <= 0.0 or (self._sample < 1.0 and random.random() >= self._sample):
            return
        size = len(answered.response) + OVERHEAD_BYTES
        with self._lock:
            if self._held + size > self._max_bytes:
                full = True
            else:
                full = False
                self._queue.append(answered)
                self._held += size
        if full:
            self._metrics.feedback_was_dropped("buffer_full")

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        """Write what waits (what it can), then stop."""
        await self._loop.stop()
        await self.flush()

    async def _pass(self) -> None:
        await self.flush()
        if time.monotonic() - self._cleaned_at >= CLEAN_SECONDS:
            self._cleaned_at = time.monotonic()
            await self.clean()

    async def flush(self) -> int:
        """Write every answer waiting now; the rows kept."""
        kept = 0
        async with self._flushing:
            while True:
                with self._lock:
                    batch = [self._queue.popleft() for _ in range(min(BATCH, len(self._queue)))]
                if not batch:
                    return kept
                try:
                    kept += await anyio.to_thread.run_sync(self._write, batch)
                finally:
                    with self._lock:
                        self._held -= sum(len(a.response) + OVERHEAD_BYTES for a in batch)

    def _write(self, batch: list[Answered]) -> int:
        rows = []
        for answered in batch:
            parsed = answer_rows(answered.response)
            task = self._task(answered.id, parsed[0][0] if parsed is not None else None)
            if parsed is None or task is None:
                self._metrics.feedback_was_dropped("unreadable")
                continue
            if len(parsed) == 1:  # kept as the row itself, as a label's row keeps it
                prediction, probabilities = parsed[0]
            else:
                prediction = [p for p, _ in parsed]
                # probabilities kept where every row has them (log loss needs them all)
                chances = [c for _, c in parsed]
                probabilities = chances if all(c is not None for c in chances) else None
            rows.append(
                KeptPrediction(
                    answered.request_id,
                    answered.id,
                    answered.arm,
                    task,
                    prediction,
                    probabilities,
                    answered.answered_at,
                    rows=len(parsed),
                )
            )
        try:
            self._store.keep(rows, retention_seconds=self.retention_seconds)
        except RegistryError as exc:
            self._metrics.feedback_was_dropped("write_error", len(rows))
            self._outage.failed(exc)
            return 0
        self._outage.passed()
        return len(rows)

    def _task(self, version: VersionId, prediction: Any) -> Task | None:
        if version not in self._tasks:
            metadata = self._signature(version)
            if metadata is None:  # not loaded here (any more): the answer's own type says
                return task_of_value(prediction)
            self._tasks[version] = task_of_signature(metadata)
        return self._tasks[version] or task_of_value(prediction)

    def _delete_expired(self) -> int:
        return self._store.delete_expired(now=time.time(), retention_seconds=self.retention_seconds)

    async def clean(self) -> int:
        """Delete what has expired, a batch at a time; the rows deleted."""
        deleted = 0
        while True:
            done = await anyio.to_thread.run_sync(self._delete_expired)
            deleted += done
            if done == 0:
                return deleted


def keeper_for(
    settings: GatewaySettings,
    store: FeedbackStore,
    metrics: GatewayMetrics,
    loaded: Callable[[VersionId], Any],
) -> PredictionKeeper | None:
    """The settings' keeper (None where no answer is kept: GATEWAY_FEEDBACK_SAMPLE=0, or a
    process that serves no models); ``loaded``: the cache's peek, for a version's signature."""
    if settings.feedback_sample <= 0 or not settings.serves_models:
        return None

    def signature(version: VersionId) -> Model | None:
        model = loaded(version)
        return model.metadata if model is not None else None

    return PredictionKeeper(
        store,
        metrics,
        sample=settings.feedback_sample,
        max_bytes=int(settings.feedback_buffer_mb * 2**20),
        retention_seconds=settings.feedback_retention_hours * 3600,
        signature=signature,
    )
