"""The sync leader's drift events: one when a version starts to drift, one when it recovers,
never one per interval, and a new leader that does not say again what was said."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from gateway.drift.book import ReferenceBook
from gateway.drift.monitor import DriftMonitor
from gateway.metrics import GatewayMetrics
from registry_sync.database import make_engine, upgrade
from registry_sync.drift.profile import Profile, profile_columns
from registry_sync.drift.references import ReferenceStore
from registry_sync.drift.statistics import bin_frame
from registry_sync.drift.verdict import Thresholds, VersionDrift, judge
from registry_sync.drift.windows import WindowCounts, WindowStore
from registry_sync.identity import VersionId
from registry_sync.repository import StateStore

VERSION = VersionId("alarmed", 3, "models:/m-3", 3)
TRAIN = pd.DataFrame({"x": [float(i % 100) for i in range(2000)]})
PROFILE = Profile(profile_columns(TRAIN), (), len(TRAIN), len(TRAIN))
THRESHOLDS = Thresholds(min_rows=100)


def drift_of(frame: pd.DataFrame) -> VersionDrift:
    counts = WindowCounts(bin_frame(PROFILE.inputs, frame), {}, len(frame), len(frame))
    return judge(VERSION, PROFILE, counts, THRESHOLDS)


def monitor(store: StateStore) -> DriftMonitor:
    engine = store.engine
    return DriftMonitor(
        WindowStore(engine),
        ReferenceBook(ReferenceStore(engine)),
        store,
        GatewayMetrics(),
        states=store.version,
        windows=None,
        baselines=None,
        replica="leader",
        interval_seconds=10,
        thresholds=THRESHOLDS,
        leading=lambda: True,
        actor="test",
    )


def kinds(store: StateStore) -> list[str]:
    return [e.kind for e in reversed(store.events(name=VERSION.name))]


def test_one_event_to_cross_one_to_recover_and_a_new_leader_does_not_repeat_them(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'state.db'}")
    upgrade(engine)
    store = StateStore(engine)
    calm, shifted = drift_of(TRAIN.iloc[:500]), drift_of(TRAIN.iloc[:500] + 60.0)
    assert not calm.drifting and shifted.drifting
    leader = monitor(store)
    for _ in range(3):
        leader._alarms({VERSION: shifted})
    assert kinds(store) == ["drifted"]
    assert "x" in store.events(name=VERSION.name)[0].reason
    for _ in range(3):
        leader._alarms({VERSION: calm})
    assert kinds(store) == ["drifted", "drift_recovered"]
    # Too few rows say nothing either way.
    leader._alarms({VERSION: drift_of(TRAIN.iloc[:50] + 60.0)})
    assert kinds(store) == ["drifted", "drift_recovered"]
    leader._alarms({VERSION: shifted})
    # A new leader reads what was said last: the version drifts, and that was said.
    successor = monitor(store)
    successor._alarms({VERSION: shifted})
    assert kinds(store) == ["drifted", "drift_recovered", "drifted"]
    successor._alarms({VERSION: calm})
    assert kinds(store) == ["drifted", "drift_recovered", "drifted", "drift_recovered"]
