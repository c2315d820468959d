"""The recorder: takes records on the request path and has one writer thread turn them into
what its sink writes (CloudEvents, or rows of the inference tables) and write them.

The request path pays for a sampling draw and, for a sampled request, an append under a lock
that is never held for more than popping a batch (the writer takes what waits every
``FLUSH_SECONDS``, or at once when a batch's worth does): ``offer`` never waits for the sink, never
parses anything and never raises. Records wait in a queue bounded in bytes (their bodies plus
a constant), counting those being written: a slow or dead sink costs at most that much
memory, and what does not fit is dropped and counted (``gateway_records_dropped_total``).

With a table sink (``tables.py``) the recorder also takes labels (``offer_labels``: the
feedback code's, off the request path), in the same queue and within the same bound.
"""

from __future__ import annotations

import logging
import math
import random
import socket
import threading
import time
from collections import deque
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from gateway.observability.records.record import InferenceRecord, LabelRecord, SinkFailed
from gateway.observability.records.sinks import Sink, sink_for

if TYPE_CHECKING:
    from gateway.metrics import GatewayMetrics
    from gateway.settings import GatewaySettings

log = logging.getLogger("gateway.records")

# Beside its bodies, a queued record holds a dataclass, a handful of short strings and a
# slot in the queue: a few hundred bytes, rounded up so that a flood of tiny records is
# bounded too.
RECORD_OVERHEAD_BYTES = 512
# One write carries at most batch_size records and, past the first, this many bytes of
# bodies: their parsed form is several times larger, and a POST should stay a sensible size.
_WRITE_MAX_BYTES = 8 * 1024 * 1024
_FIRST_BACKOFF_SECONDS = 0.1
_MAX_BACKOFF_SECONDS = 5.0
_WARN_EVERY_SECONDS = 30.0
# The writer wakes this often, or when a batch's worth of records waits: not at every record.
# Waking it per record handed the GIL to it and back hundreds of times a second, which cost
# the event loop more than the writing itself (bench --only observability).
FLUSH_SECONDS = 0.2


def record_size(record: InferenceRecord) -> int:
    """What a record counts against the queue's bound."""
    return len(record.request) + len(record.response) + RECORD_OVERHEAD_BYTES


def label_size(label: LabelRecord) -> int:
    """What a label counts against the queue's bound (its JSON is not made yet: a guess by its
    text, bounded below like a record's)."""
    return len(label.request_id) + len(repr(label.label)) + RECORD_OVERHEAD_BYTES


class Recorder:
    """Inference records from the request path to a sink, off it. ``start`` starts the writer
    thread, ``close`` flushes what it can within its timeout and stops it."""

    def __init__(
        self,
        sink: Sink,
        *,
        metrics: GatewayMetrics,
        sample: float,
        redact: Collection[str],
        max_bytes: int,
        batch_size: int,
        source: str,
    ) -> None:
        self._sink = sink
        self._metrics = metrics
        self._sample = sample
        self._redact = frozenset(redact)
        self._max_bytes = max_bytes
        self._batch_size = batch_size
        self._source = source
        self._queue: deque[tuple[InferenceRecord | LabelRecord, int]] = deque()
        self._held = 0  # bytes of records queued or being written; changed under _lock
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._closed = False
        self._deadline = math.inf  # after close(): the writer takes no batch past it
        self._thread: threading.Thread | None = None
        self._backoff = 0.0
        self._sink_errors = _Complaint(f"the {sink.kind} sink failed")
        self._unreadable = _Complaint("a record could not be made into an event or a row")

    @property
    def tables(self) -> bool:
        """Whether the sink is the inference tables: it takes failed requests, shadows and labels."""
        return self._sink.tables

    @property
    def queued_bytes(self) -> int:
        """Bytes of records waiting for the sink, those being written included."""
        return self._held

    def sampled(self, override: float | None = None) -> bool:
        """Whether to record a request: with probability ``override`` (a version's
        ``gateway.records.sample`` tag) if given, else GATEWAY_RECORDS_SAMPLE."""
        ratio = self._sample if override is None else override
        if ratio >= 1.0:
            return True
        if ratio <= 0.0:
            return False
        return random.random() < ratio

    def offer_labels(self, labels: list[LabelRecord]) -> int:
        """Queue labels for the inference tables' ``labels``; how many were queued (the rest
        dropped and counted, as records are: ``queue_full``, ``shutdown``). None are taken
        without a table sink (0). Never blocks, never raises: for the feedback code, which
        keeps its own copy of each label (the state database) before calling this."""
        if not self._sink.tables:
            return 0
        return sum(self._offered(label, label_size(label)) for label in labels)

    def offer(self, record: InferenceRecord) -> None:
        """Queue a record for the writer, or drop it and count why. Never blocks, never raises."""
        try:
            size = record_size(record)
        except Exception:
            log.debug("inference record not queued", exc_info=True)
            self._metrics.records_were_dropped("unreadable")
            return
        self._offered(record, size)

    def _offered(self, record: InferenceRecord | LabelRecord, size: int) -> bool:
        try:
            wake = False
            with self._lock:
                if self._closed:
                    reason = "shutdown"
                elif self._held + size > self._max_bytes:
                    reason = "queue_full"
                else:
                    reason = ""
                    self._queue.append((record, size))
                    self._held += size
                    # A full batch is worth a wake-up; fewer wait for the writer's next round.
                    wake = len(self._queue) == self._batch_size
            if reason:
                self._metrics.records_were_dropped(reason)
                return False
            if wake:
                self._wake.set()
            return True
        except Exception:  # a record must never fail the request it describes
            log.debug("inference record not queued", exc_info=True)
            try:
                self._metrics.records_were_dropped("unreadable")
            except Exception:
                pass
            return False

    def start(self) -> None:
        """Start the writer thread (once; not after close)."""
        with self._lock:
            if self._thread is not None or self._closed:
                return
            self._thread = threading.Thread(target=self._run, name="records-writer", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop taking records, write what can be written within ``timeout`` seconds, then stop.
        Records still queued then are dropped (``shutdown``). A write still under way at the
        deadline (a sink that does not answer) is left to finish in its daemon thread, which
        closes the sink after it."""
        deadline = time.monotonic() + timeout
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._deadline = deadline
            thread = self._thread
        self._stopping.set()
        self._wake.set()
        if thread is None:
            self._drop_rest()
            self._close_sink()
            return
        thread.join(max(0.0, deadline - time.monotonic()))
        self._drop_rest()

    # --- the writer thread ---

    def _run(self) -> None:
        try:
            while True:
                self._wake.clear()  # before looking: an offer() after this wakes the wait below
                batch = self._take()
                if batch:
                    stopping = self._stopping.is_set()
                    if not self._write(batch) and stopping:
                        break  # the sink failed after close(): the rest would wait on it in vain
                    continue
                if self._stopping.is_set():
                    break
                self._tick()
                self._wake.wait(FLUSH_SECONDS)
        except Exception:  # a bug here must not end the thread silently with records held
            log.exception("the inference records writer stopped")
        finally:
            self._drop_rest()
            self._close_sink()

    def _tick(self) -> None:
        """The sink's time-based work (a table sink's files rolled by age), when idle."""
        try:
            self._sink.tick()
        except SinkFailed as exc:
            self._failed(exc, 0)
        except Exception as exc:
            self._failed(exc, 0)

    def _take(self) -> list[tuple[InferenceRecord | LabelRecord, int]]:
        if self._stopping.is_set() and time.monotonic() >= self._deadline:
            return []
        batch: list[tuple[InferenceRecord | LabelRecord, int]] = []
        total = 0
        with self._lock:
            while self._queue and len(batch) < self._batch_size and total < _WRITE_MAX_BYTES:
                item = self._queue.popleft()
                batch.append(item)
                total += item[1]
        return batch

    def _write(self, batch: list[tuple[InferenceRecord | LabelRecord, int]]) -> bool:
        """Convert and write one batch; False when the sink failed (after backing off)."""
        try:
            entries = self._entries(batch)
            failure, written = self._written(entries) if entries else (None, 0)
        finally:
            with self._lock:
                self._held -= sum(size for _, size in batch)
        if written:
            self._metrics.records_written_to(self._sink.kind, written)
        if failure is None:
            if self._backoff:
                self._sink_errors.recovered()
            self._backoff = 0.0
            return True
        self._failed(failure, len(entries) - written)
        return False

    def _failed(self, failure: Exception, unwritten: int) -> None:
        """Count what the sink's failure cost, and back off."""
        lost = unwritten + (failure.lost if isinstance(failure, SinkFailed) else 0)
        if lost:
            self._metrics.records_were_dropped("sink_error", lost)
        self._sink_errors.dropped(lost, failure)
        self._backoff = min(_MAX_BACKOFF_SECONDS, self._backoff * 2 or _FIRST_BACKOFF_SECONDS)
        # Records that arrive meanwhile queue up to the bound (the batch's bytes are already
        # released), then offer() drops them: the outage costs memory only up to the bound.
        self._stopping.wait(self._backoff)

    def _written(self, entries: list[Any]) -> tuple[Exception | None, int]:
        """(what failed or None, how many of the entries the sink took)."""
        try:
            self._sink.write(entries)
        except SinkFailed as exc:
            return exc, exc.written
        except Exception as exc:  # a sink must raise SinkFailed; one that does not keeps the thread
            return exc, 0
        return None, len(entries)

    def _entries(self, batch: list[tuple[InferenceRecord | LabelRecord, int]]) -> list[Any]:
        entries = []
        for record, _ in batch:
            try:
                entries.append(self._sink.entry(record, source=self._source, redact=self._redact))
            except Exception as exc:  # e.g. JSON nested past the recursion limit
                self._metrics.records_were_dropped("unreadable")
                self._unreadable.dropped(1, exc)
        return entries

    def _drop_rest(self) -> None:
        with self._lock:
            count = len(self._queue)
            self._held -= sum(size for _, size in self._queue)
            self._queue.clear()
        if count:
            self._metrics.records_were_dropped("shutdown", count)
            log.warning("inference records: %d dropped at shutdown, not written in time", count)

    def _close_sink(self) -> None:
        try:
            self._sink.close()
        except Exception:
            log.warning("inference records: closing the %s sink failed", self._sink.kind, exc_info=True)


class _Complaint:
    """A warning at most every 30 s, saying how many records were dropped since the last one."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._last = -math.inf
        self._unsaid = 0

    def dropped(self, count: int, cause: Exception) -> None:
        self._unsaid += count
        now = time.monotonic()
        if now - self._last >= _WARN_EVERY_SECONDS:
            log.warning(
                "inference records: %s (%s); %d dropped since the last warning", self._what, cause, self._unsaid
            )
            self._last, self._unsaid = now, 0

    def recovered(self) -> None:
        # Info, and the 30 s still run from the last warning: a flapping sink warns no more often.
        log.info("inference records: the sink writes again (%d dropped since the last warning)", self._unsaid)


def default_source() -> str:
    """The events' ``source``: this host, the same for every worker (``id`` tells events apart)."""
    return f"/registry-gateway/{socket.gethostname()}"


def recorder_for(settings: GatewaySettings, metrics: GatewayMetrics) -> Recorder | None:
    """The recorder GATEWAY_RECORDS_* describe, not started; None without GATEWAY_RECORDS_SINK.
    A sink URL that names no usable sink raises ``InvalidSinkUrl``."""
    if settings.records_sink is None:
        return None
    recorder = Recorder(
        sink_for(settings.records_sink, settings),
        metrics=metrics,
        sample=settings.records_sample,
        redact=settings.records_redact,
        max_bytes=settings.records_queue_bytes,
        batch_size=settings.records_batch_size,
        source=default_source(),
    )
    metrics.follow_records_queue(lambda: recorder.queued_bytes)
    return recorder
