"""Answered requests sampled for drift, binned off the request path.

On the request path (:meth:`DriftSampler.offer`): a random draw (GATEWAY_DRIFT_SAMPLE) and, for
a sampled request, an append of its body and answer (bytes already in hand: nothing is parsed
or copied) under a lock held for no more than that. The queue is bounded in bytes
(GATEWAY_DRIFT_BUFFER_MB, bodies and answers plus a constant, those being binned included):
past it a request is dropped and counted (``gateway_drift_dropped_total{reason="buffer_full"}``),
never waited for.

Off it, every ``FLUSH_SECONDS`` a task takes what waits and, in a thread, groups it by version
identity; per version, each body and answer is read back as columns
(:mod:`gateway.wire.drift_rows`), the batch becomes one DataFrame, and
:func:`registry_sync.drift.statistics.bin_frame` bins it on the version's reference at once
(vectorised); the counts join the version's sliding window (:mod:`gateway.drift.window`).

Nothing here can fail a request: a body that is not a table is counted ``unreadable``; a request
whose columns are not the reference's (missing or extra) is counted ``mismatched`` (an outlier
of the version) and binned for the columns it has; a version without a ready reference is
dropped (``no_reference``), or, where the reference store says it has no source at all, its
rows go to the baseline (:class:`gateway.drift.baseline.Baselines`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass

import anyio.to_thread

from gateway.drift.baseline import Baselines
from gateway.drift.book import ReferenceBook
from gateway.drift.window import Windows
from gateway.metrics import GatewayMetrics
from gateway.wire.drift_rows import Columns, frame_of, input_columns, output_columns, row_count
from registry_sync.drift.profile import Profile
from registry_sync.drift.references import NONE, READY
from registry_sync.drift.statistics import bin_frame
from registry_sync.drift.windows import WindowCounts
from registry_sync.identity import VersionId
from registry_sync.periodic import Periodic

log = logging.getLogger(__name__)

FLUSH_SECONDS = 1.0
OVERHEAD_BYTES = 256  # a queued request's dataclass and strings, beside its bytes


@dataclass(frozen=True, slots=True)
class Sampled:
    """What the request path hands over: who answered, the body and the answer as they crossed
    the wire, and when."""

    id: VersionId
    protocol: str
    media_type: str
    request: bytes
    response: bytes
    at: float
    answer_json: Callable[[bytes], bytes] | None = None  # an answer not JSON as sent (OIP's binary extension)

    def answer(self) -> bytes:
        """The answer as JSON (off the request path)."""
        return self.answer_json(self.response) if self.answer_json is not None else self.response

    @property
    def size(self) -> int:
        return len(self.request) + len(self.response) + OVERHEAD_BYTES


@dataclass(slots=True)
class _Batch:
    inputs: list[Columns]
    outputs: list[Columns]
    mismatched: int = 0
    unreadable: int = 0


class DriftSampler:
    def __init__(
        self,
        metrics: GatewayMetrics,
        book: ReferenceBook,
        windows: Windows,
        baselines: Baselines,
        *,
        sample: float,
        max_bytes: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._metrics = metrics
        self._book = book
        self.windows = windows
        self.baselines = baselines
        self.sample = sample
        self._max_bytes = max_bytes
        self._clock = clock
        self._queue: deque[Sampled] = deque()
        self._held = 0
        self._lock = threading.Lock()
        self._flushing = asyncio.Lock()
        self._loop = Periodic("binning requests sampled for drift", FLUSH_SECONDS, self.flush, log=log)

    @property
    def queued_bytes(self) -> int:
        return self._held

    def offer(
        self,
        version: VersionId,
        *,
        protocol: str,
        media_type: str,
        request: bytes,
        response: bytes,
        answer_json: Callable[[bytes], bytes] | None = None,
    ) -> None:
        """Sample this answered request for drift, if drawn and it fits. Never blocks, never raises."""
        if self.drawn():
            self.append(Sampled(version, protocol, media_type, request, response, self._clock(), answer_json))

    def drawn(self) -> bool:
        """The sampling draw (GATEWAY_DRIFT_SAMPLE)."""
        return self.sample > 0.0 and (self.sample >= 1.0 or random.random() < self.sample)

    def append(self, sampled: Sampled) -> None:
        """Queue a drawn request if it fits (else drop and count it); never blocks."""
        size = sampled.size
        with self._lock:
            full = self._held + size > self._max_bytes
            if not full:
                self._queue.append(sampled)
                self._held += size
        if full:
            self._metrics.drift_was_dropped("buffer_full")

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def flush(self) -> int:
        """Bin everything waiting now (in a thread); the requests taken. One flush at a time:
        when it returns, what was queued before it is in the windows."""
        async with self._flushing:
            with self._lock:
                batch = list(self._queue)
                self._queue.clear()
            if not batch:
                return 0
            try:
                await anyio.to_thread.run_sync(self.bin, batch)
            finally:
                with self._lock:
                    self._held -= sum(s.size for s in batch)
            return len(batch)

    def bin(self, batch: list[Sampled]) -> None:
        """Group by version, read, bin and add to the windows (blocking)."""
        by_version: dict[VersionId, list[Sampled]] = defaultdict(list)
        for sampled in batch:
            by_version[sampled.id].append(sampled)
        now = self._clock()
        for version, items in by_version.items():
            try:
                self._bin_version(version, items, now)
            except Exception:  # one version's odd batch never stops the others'
                log.exception("binning %d sampled requests of %s for drift failed (dropped)", len(items), version)
                self._metrics.drift_was_dropped("error", len(items))

    def _bin_version(self, version: VersionId, items: list[Sampled], now: float) -> None:
        reference = self._book.get(version)
        if reference is not None and reference.status == READY and reference.profile is not None:
            profile = reference.profile
        elif reference is not None and reference.status == NONE and self.baselines.wants(version):
            profile = None
        else:
            self._metrics.drift_was_dropped("no_reference", len(items))
            return
        input_names = [c.name for c in profile.inputs] if profile is not None else self.baselines.names(version)
        output_names = [c.name for c in profile.outputs] if profile is not None else ["prediction"]
        batch = _read(items, input_names, output_names, checked=profile is not None)
        if profile is None:
            self.baselines.add(version, batch.inputs, batch.outputs)
            return
        counts = _counts(profile, batch)
        self.windows.add(version, counts, now, reference=(reference.source_kind, reference.computed_at))
        if batch.unreadable:
            self._metrics.drift_was_dropped("unreadable", batch.unreadable)


def _read(items: list[Sampled], input_names: list[str], output_names: list[str], *, checked: bool) -> _Batch:
    batch = _Batch([], [])
    expected = set(input_names)
    for sampled in items:
        inputs = input_columns(
            sampled.request, media_type=sampled.media_type, protocol=sampled.protocol, names=input_names
        )
        try:
            answer = sampled.answer()
        except Exception:  # an answer drift cannot read: its inputs still count
            answer = b""
        outputs = output_columns(answer, protocol=sampled.protocol, names=output_names)
        rows = row_count(inputs)
        if inputs is None or rows is None:
            batch.unreadable += 1
            continue
        if checked and set(inputs) != expected:
            batch.mismatched += 1
        batch.inputs.append(inputs)
        # Outputs join only when they have a row per input row; else the inputs count alone.
        batch.outputs.append(outputs if outputs is not None and row_count(outputs) == rows else {"": [None] * rows})
    return batch


def _counts(profile: Profile, batch: _Batch) -> WindowCounts:
    inputs = frame_of(batch.inputs, [c.name for c in profile.inputs])
    outputs = frame_of(batch.outputs, [c.name for c in profile.outputs])
    return WindowCounts(
        bin_frame(profile.inputs, inputs),
        bin_frame(profile.outputs, outputs) if len(outputs) else {},
        rows=len(inputs),
        requests=len(batch.inputs) + batch.unreadable,
        mismatched=batch.mismatched,
        unreadable=batch.unreadable,
    )
