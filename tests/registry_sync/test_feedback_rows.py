"""Answers of several rows in the state database: kept whole, each row labelled on its own and
scored as one label, on sqlite and PostgreSQL; the migration that keys labels by request and
row keeps the labels already received (each for row 0) and takes a second row's label after."""

from __future__ import annotations

from sqlalchemy import Engine, column, insert, select, table

from registry_sync.database import make_engine
from registry_sync.feedback import FeedbackStore, KeptPrediction, LabelItem
from registry_sync.identity import VersionId
from registry_sync.quality import CLASSIFICATION
from registry_sync.state import FeedbackLabelRow
from tests.support.migrations import migrate

HOUR = 3600.0
CLF = VersionId("clf", 1, "models:/m-1", 1234)


def test_each_row_of_a_kept_answer_takes_its_own_label_scored_against_its_own_prediction(engine: Engine) -> None:
    store = FeedbackStore(engine)
    predicted = [0, 1, 2, 1]
    chances = [[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.2, 0.6, 0.2]]
    store.keep(
        [KeptPrediction("batch", CLF, "default", CLASSIFICATION, predicted, chances, 0.0, rows=len(predicted))],
        retention_seconds=HOUR,
    )
    outcomes = store.record_labels(
        [LabelItem("batch", 0, row=0), LabelItem("batch", 2, row=1), LabelItem("batch", 2, row=2)], now=1.0
    )
    assert [(o.status, o.row) for o in outcomes] == [("accepted", 0), ("accepted", 1), ("accepted", 2)]
    window, task = store.window(CLF, arm=None, window=10)
    assert task == CLASSIFICATION
    # each label beside its own row's prediction and probabilities, not the answer's
    assert sorted((w.prediction, w.label, tuple(w.probabilities)) for w in window) == sorted(
        (predicted[r], label, tuple(chances[r])) for r, label in ((0, 0), (1, 2), (2, 2))
    )
    figures = store.scored(CLF, arm=None, window=10).figures
    assert (figures.labels, figures.metrics["accuracy"]) == (3, 2 / 3)

    again = store.record_labels([LabelItem("batch", 1, row=1), LabelItem("batch", 1, row=3)], now=2.0)
    assert [o.status for o in again] == ["duplicate", "accepted"]  # a row labelled twice: the first counts
    wrong = store.record_labels([LabelItem("batch", 1), LabelItem("batch", 1, row=4)], now=3.0)
    assert [o.status for o in wrong] == ["invalid", "invalid"]
    assert "4 rows" in (wrong[0].reason or "") and "row 4 is out of range" in (wrong[1].reason or "")


def test_the_migration_keys_labels_by_request_and_row_keeping_those_received(state_url: str) -> None:
    engine = make_engine(state_url)
    try:
        migrate(engine, "0013")  # before labels had rows
        old = {
            "request_id": "r",
            "name": CLF.name,
            "version": CLF.version,
            "source": CLF.source,
            "created_ms": CLF.created_ms,
            "arm": "default",
            "task": CLASSIFICATION,
            "prediction": "1",
            "probabilities": None,
            "label": "1",
            "received_at": 5.0,
        }
        with engine.begin() as connection:  # a label as 0013's code wrote it
            connection.execute(insert(table("feedback_labels", *(column(name) for name in old))), [old])
        migrate(engine, "head")
        with engine.begin() as connection:
            assert connection.execute(select(FeedbackLabelRow.request_id, FeedbackLabelRow.row)).all() == [("r", 0)]
            connection.execute(insert(FeedbackLabelRow), [old | {"row": 1}])  # the key is (request, row) now
            assert connection.execute(select(FeedbackLabelRow.row).order_by(FeedbackLabelRow.row)).scalars().all() == [
                0,
                1,
            ]
    finally:
        engine.dispose()
