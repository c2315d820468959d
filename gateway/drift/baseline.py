"""A baseline reference: the first requests a version served, where nothing else can be one.

When the sync leader found no source for a version's reference (no training dataset, no tag,
no artifact: its status ``none``), each serving process keeps the first
GATEWAY_DRIFT_BASELINE_ROWS rows it samples for that version (their values: the only rows
drift ever holds, bounded by that setting, and dropped once profiled), profiles them
(:func:`registry_sync.drift.profile.profile_columns`, inputs and outputs) and saves the profile
through the reference store with source kind ``baseline``. It is weaker than a training
dataset (it only says whether traffic moved since the version began serving, not whether it
ever looked like what the version learned from), and every surface says so.

Several replicas may finish a baseline at about the same time: the last one saved stands,
and every replica reads it from the state database at the next interval. A version whose
signature is not tabular (no column names) gets no baseline: its drift page says why.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pandas as pd

from gateway.wire.drift_rows import Columns, frame_of
from registry_sync.drift.profile import Profile, profile_columns
from registry_sync.identity import VersionId


class _Collecting:
    __slots__ = ("inputs", "outputs", "rows")

    def __init__(self) -> None:
        self.inputs: list[Columns] = []
        self.outputs: list[Columns] = []
        self.rows = 0


class Baselines:
    def __init__(self, *, rows: int, columns: Callable[[VersionId], list[str] | None]) -> None:
        self._rows = rows
        self._columns = columns  # a loaded version's signature's input names (None: not tabular, or not loaded)
        self._collecting: dict[VersionId, _Collecting] = {}
        self._finished: dict[VersionId, Profile] = {}
        self._lock = threading.Lock()

    def wants(self, version: VersionId) -> bool:
        return self._rows > 0 and version not in self._finished and bool(self._columns(version))

    def names(self, version: VersionId) -> list[str]:
        return self._columns(version) or []

    def add(self, version: VersionId, inputs: list[Columns], outputs: list[Columns]) -> None:
        """Rows sampled for ``version`` (in the binning thread); profiled once there are enough."""
        with self._lock:
            collecting = self._collecting.setdefault(version, _Collecting())
            for part_in, part_out in zip(inputs, outputs, strict=True):
                if collecting.rows >= self._rows:
                    break
                collecting.inputs.append(part_in)
                collecting.outputs.append(part_out)
                collecting.rows += len(next(iter(part_in.values()), []))
            if collecting.rows < self._rows:
                return
            del self._collecting[version]
        self._finished[version] = profile_of(collecting.inputs, collecting.outputs, self.names(version))

    def finished(self) -> dict[VersionId, Profile]:
        """Baselines profiled and not yet saved."""
        return dict(self._finished)

    def saved(self, version: VersionId) -> None:
        self._finished.pop(version, None)


def profile_of(inputs: list[Columns], outputs: list[Columns], names: list[str]) -> Profile:
    frame = frame_of(inputs, names)
    output_names = sorted({name for part in outputs for name in part if name})
    answers = frame_of(outputs, output_names)
    frame = frame.infer_objects()
    answers = answers.infer_objects() if len(answers.columns) else pd.DataFrame()
    return Profile(
        inputs=profile_columns(frame),
        outputs=profile_columns(answers) if len(answers.columns) else (),
        rows=len(frame),
        sampled_from=len(frame),
    )
