"""Which (version identity, arm) pairs have labels, read by live quality each interval, comes
from a small table written with the labels (feedback_arms), not from a DISTINCT over every
label: a scan that grew with the backlog (0.25 s a replica per interval at a million labels
on PostgreSQL). On sqlite and PostgreSQL; the migration fills it from the labels already there."""

from __future__ import annotations

from sqlalchemy import Engine, column, func, insert, select, table

from registry_sync.database import make_engine
from registry_sync.feedback import ANNOUNCE_SECONDS, FeedbackStore, KeptPrediction, LabelItem
from registry_sync.identity import VersionId
from registry_sync.quality import CLASSIFICATION
from registry_sync.state import FeedbackArmRow
from tests.support.migrations import migrate

HOUR = 3600.0
OLD = VersionId("clf", 1, "models:/m-1", None)  # a registry that gave no creation time
NEW = VersionId("clf", 2, "models:/m-2", 1234)


def kept(version: VersionId, arm: str, count: int, at: float) -> list[KeptPrediction]:
    return [
        KeptPrediction(f"{version.version}-{arm}-{i}", version, arm, CLASSIFICATION, 1, None, at) for i in range(count)
    ]


def label(store: FeedbackStore, version: VersionId, arm: str, ids: range, now: float) -> None:
    outcomes = store.record_labels([LabelItem(f"{version.version}-{arm}-{i}", 1) for i in ids], now=now)
    assert {o.status for o in outcomes} == {"accepted"}


def pairs(store: FeedbackStore) -> set[tuple[VersionId, str]]:
    return set(store.labelled())


def test_the_pairs_with_labels_are_kept_beside_them(engine: Engine) -> None:
    store = FeedbackStore(engine)
    store.keep(
        kept(OLD, "default", 4, 0.0) + kept(NEW, "canary", 3, 0.0) + kept(NEW, "default", 2, 0.0),
        retention_seconds=HOUR,
    )
    assert pairs(store) == set()  # answers kept, no label yet
    label(store, OLD, "default", range(2), now=10.0)
    label(store, NEW, "canary", range(3), now=20.0)
    assert pairs(store) == {(OLD, "default"), (NEW, "canary")}  # identity whole: no creation time stays None
    assert FeedbackStore(engine).labelled() == store.labelled()  # another replica reads the same

    # one write per pair and process within ANNOUNCE_SECONDS; another process writes its own
    with engine.connect() as connection:
        written = connection.execute(select(FeedbackArmRow.last_label_at).where(FeedbackArmRow.version == 1)).scalar()
    assert ANNOUNCE_SECONDS > 1
    label(store, OLD, "default", range(2, 4), now=11.0)
    with engine.connect() as connection:
        assert (
            connection.execute(select(FeedbackArmRow.last_label_at).where(FeedbackArmRow.version == 1)).scalar()
            == written
        )

    # a pair goes once its labels went, a retention (and the announcement's lag) later
    assert store.delete_expired(now=20.0 + HOUR + ANNOUNCE_SECONDS + 1, retention_seconds=HOUR) > 0
    while store.delete_expired(now=20.0 + HOUR + ANNOUNCE_SECONDS + 1, retention_seconds=HOUR):
        pass
    assert pairs(store) == set()


def test_the_migration_fills_the_pairs_from_the_labels_already_received(state_url: str) -> None:
    engine = make_engine(state_url)
    try:
        migrate(engine, "0012")  # before the pairs had a table of their own
        rows = [
            {
                "request_id": f"{version.version}-{arm}-{i}",
                "name": version.name,
                "version": version.version,
                "source": version.source,
                "created_ms": version.created_ms,
                "arm": arm,
                "task": CLASSIFICATION,
                "prediction": "1",
                "probabilities": None,
                "label": "1",
                "received_at": 5.0 + i,
            }
            for version, arm, count in ((OLD, "default", 2), (NEW, "canary", 1))
            for i in range(count)
        ]
        with engine.begin() as connection:  # labels as 0012's code wrote them: no pairs
            # (0012's columns: the model's own table has columns added since)
            connection.execute(insert(table("feedback_labels", *(column(name) for name in rows[0]))), rows)
        migrate(engine, "head")
        store = FeedbackStore(engine)
        assert pairs(store) == {(OLD, "default"), (NEW, "canary")}
        with engine.connect() as connection:
            latest = connection.execute(select(func.max(FeedbackArmRow.last_label_at))).scalar()
        assert latest == 6.0  # the latest label of a pair, as received
    finally:
        engine.dispose()
