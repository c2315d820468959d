"""Each version's sliding window of binned traffic in this process: by time and by count.

A window is ``SLICES`` slices of ``GATEWAY_DRIFT_WINDOW_SECONDS / SLICES`` seconds each, every
slice a :class:`WindowCounts` (counts per reference bin, never rows). Binned rows join the
newest slice; a slice older than the window leaves it whole, and the oldest slices leave while
the rest still hold ``GATEWAY_DRIFT_WINDOW_ROWS`` rows, so the window holds the latest rows up
to that many (give or take its oldest slice) and nothing older than the window's time.

Memory per version is bounded by its reference, whatever the traffic: ``SLICES`` times, per
input and output column, an int64 per bin (a numeric column's 10 bins, a categorical column's
categories plus "other") and a few counters (:func:`window_bytes`, an upper bound that
tests/gateway/drift/test_window.py checks with tracemalloc).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

from registry_sync.drift.profile import CategoricalColumn, NumericColumn, Profile
from registry_sync.drift.windows import WindowCounts
from registry_sync.identity import VersionId

SLICES = 12
COLUMN_OVERHEAD_BYTES = 320  # a ColumnCounts, its array's header and its dict entry, beside the counts
SLICE_OVERHEAD_BYTES = 480  # a slice, its WindowCounts and their two dicts


def window_bytes(profile: Profile) -> int:
    """An upper bound of one version's window in memory, from its reference's columns."""
    per_slice = 0
    for column in (*profile.inputs, *profile.outputs):
        bins = len(column.edges) + 1 if isinstance(column, NumericColumn) else len(column.categories) + 1
        assert isinstance(column, NumericColumn | CategoricalColumn)
        per_slice += 8 * bins + COLUMN_OVERHEAD_BYTES
    return SLICES * (per_slice + SLICE_OVERHEAD_BYTES)


@dataclass(slots=True)
class _Slice:
    start: float
    counts: WindowCounts


class SlidingWindow:
    def __init__(self, *, seconds: float, max_rows: int) -> None:
        self.seconds = seconds
        self.max_rows = max_rows
        self._step = seconds / SLICES
        self._slices: deque[_Slice] = deque()
        self.reference: object = None  # what its counts were binned on (Windows.add)

    def add(self, counts: WindowCounts, now: float) -> None:
        if not self._slices or now - self._slices[-1].start >= self._step:
            self._slices.append(_Slice(now, counts))
        else:
            self._slices[-1].counts = self._slices[-1].counts + counts
        self._expire(now)

    def _expire(self, now: float) -> None:
        slices = self._slices
        while slices and slices[0].start <= now - self.seconds:
            slices.popleft()
        rows = sum(s.counts.rows for s in slices)
        while len(slices) > 1 and rows - slices[0].counts.rows >= self.max_rows:
            rows -= slices.popleft().counts.rows

    def total(self, now: float) -> WindowCounts:
        self._expire(now)
        total = WindowCounts()
        for s in self._slices:
            total = total + s.counts
        return total

    def __len__(self) -> int:
        return len(self._slices)


class Windows:
    """Every version's window in this process; the binning thread adds, the publisher reads."""

    def __init__(self, *, seconds: float, max_rows: int) -> None:
        self._seconds = seconds
        self._max_rows = max_rows
        self._windows: dict[VersionId, SlidingWindow] = {}
        self._lock = threading.Lock()

    def add(self, version: VersionId, counts: WindowCounts, now: float, *, reference: object = None) -> None:
        """Add binned rows; ``reference`` says which reference they were binned on: when it
        changes (a baseline replaced, tags that recomputed it), the window starts again, since
        counts on other bins do not add up."""
        with self._lock:
            window = self._windows.get(version)
            if window is None or window.reference != reference:
                window = self._windows[version] = SlidingWindow(seconds=self._seconds, max_rows=self._max_rows)
                window.reference = reference
            window.add(counts, now)

    def totals(self, now: float) -> dict[VersionId, WindowCounts]:
        """Each version's window now; a version whose window emptied is forgotten (after this
        one publication of its empty window, so the fleet's sum loses it at once)."""
        with self._lock:
            found = {version: window.total(now) for version, window in self._windows.items()}
            for version, window in list(self._windows.items()):
                if len(window) == 0:
                    del self._windows[version]
        return found
