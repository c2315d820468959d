"""Labels in the state database and the live quality computed from them, on sqlite and
PostgreSQL: the figures are scikit-learn's on the same data, each label is answered for itself."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from registry_sync.feedback import FeedbackStore, KeptPrediction, LabelItem, live_quality
from registry_sync.identity import VersionId
from registry_sync.quality import (
    CLASSIFICATION,
    REGRESSION,
    Labelled,
    QualityFigures,
    label_problem,
    score,
)
from registry_sync.state import ModelVersionRow
from tests.support.numeric import gamma

HOUR = 3600.0
CLASSIFIER = VersionId("clf", 1, "models:/m-1", 1)
REGRESSOR = VersionId("reg", 2, "models:/m-2", 2)


def keep(store: FeedbackStore, version: VersionId, rows: list[tuple[object, object]], *, at: float, arm: str) -> None:
    task = CLASSIFICATION if version is CLASSIFIER else REGRESSION
    store.keep(
        [
            KeptPrediction(f"{version.name}-{arm}-{i}", version, arm, task, prediction, probabilities, at)
            for i, (prediction, probabilities) in enumerate(rows)
        ],
        retention_seconds=HOUR,
    )


def close(mine: float, theirs: float, terms: int) -> bool:
    """Equal but for the rounding of a sum of ``terms`` float64 terms added in another order."""
    return abs(mine - theirs) <= 2 * gamma(terms, np.float64) * max(abs(mine), abs(theirs), 1.0)


def test_live_quality_is_scikit_learns_on_the_labels_joined_to_their_answers(engine: Engine) -> None:
    store = FeedbackStore(engine)
    rng = np.random.default_rng(7)
    classes = ["setosa", "versicolor", "virginica"]
    n = 300
    truth = rng.integers(0, 3, n)
    predicted = np.where(rng.random(n) < 0.8, truth, rng.integers(0, 3, n))
    probabilities = rng.dirichlet(np.ones(3), n)
    answered = [
        (classes[p], dict(zip(classes, map(float, row), strict=True)))
        for p, row in zip(predicted, probabilities, strict=True)
    ]
    keep(store, CLASSIFIER, answered, at=1000.0, arm="default")
    values = rng.normal(10, 3, n)
    answers = values + rng.normal(0, 1, n)
    keep(store, REGRESSOR, [(float(a), None) for a in answers], at=1000.0, arm="canary")

    got = store.record_labels(
        [LabelItem(f"clf-default-{i}", classes[t]) for i, t in enumerate(truth)]
        + [LabelItem(f"reg-canary-{i}", float(v)) for i, v in enumerate(values)],
        now=1001.0,
    )
    assert {o.status for o in got} == {"accepted"}

    window = 250  # the latest 250 labels: all received together, so the order is by request id
    figures = store.scored(CLASSIFIER, arm="default", window=window).figures
    assert (figures.task, figures.labels, figures.window) == (CLASSIFICATION, window, window)
    rows, _ = store.window(CLASSIFIER, arm="default", window=window)
    y_true = [r.label for r in rows]
    y_pred = [r.prediction for r in rows]
    assert figures.metrics["accuracy"] == metrics.accuracy_score(y_true, y_pred)
    for name, reference in (
        ("precision_macro", metrics.precision_score(y_true, y_pred, average="macro")),
        ("recall_macro", metrics.recall_score(y_true, y_pred, average="macro")),
        ("f1_macro", metrics.f1_score(y_true, y_pred, average="macro")),
        ("log_loss", metrics.log_loss(y_true, [[r.probabilities[c] for c in classes] for r in rows], labels=classes)),
    ):
        assert close(figures.metrics[name], float(reference), window * 3), (name, figures.metrics[name], reference)

    assert store.scored(CLASSIFIER, arm="canary", window=window).figures.labels == 0  # another arm
    # What the sync leader's MLflow write-back reads: the version now under the number, by identity.
    with Session(engine) as session, session.begin():
        session.add(ModelVersionRow(name="clf", version=1, source=CLASSIFIER.source, created_ms=1, status="READY"))
    everything = store.scored(CLASSIFIER, arm="default", window=1000).figures
    assert live_quality(engine, "clf", "1", arm="default") == everything and everything.labels == n
    assert live_quality(engine, "clf", "1", arm="default", window=window) == figures
    assert live_quality(engine, "clf", "2") == QualityFigures(None, 0, {}, 1000)  # no such version
    regression = store.scored(REGRESSOR, arm=None, window=n).figures
    rows, _ = store.window(REGRESSOR, arm=None, window=n)
    y_true, y_pred = [r.label for r in rows], [r.prediction for r in rows]
    assert regression.task == REGRESSION and regression.labels == n
    assert close(regression.metrics["mae"], metrics.mean_absolute_error(y_true, y_pred), n)
    assert close(regression.metrics["rmse"], metrics.root_mean_squared_error(y_true, y_pred), n)
    # A re-created number is another version: none of these labels are its.
    assert store.scored(VersionId("reg", 2, "models:/m-9", 9), arm=None, window=n).figures.labels == 0


def test_integer_classes_with_probabilities_as_an_array() -> None:
    rows = [Labelled(0, [0.7, 0.2, 0.1], 0), Labelled(2, [0.1, 0.2, 0.7], 1), Labelled(1, [0.2, 0.5, 0.3], 1)]
    figures = score(rows, CLASSIFICATION).figures
    reference = metrics.log_loss([0, 1, 1], [r.probabilities for r in rows], labels=[0, 1, 2])
    assert close(figures.metrics["log_loss"], float(reference), 9)
    assert figures.metrics["accuracy"] == metrics.accuracy_score([0, 1, 1], [0, 2, 1])
    # one answer without probabilities: no log loss for the window, the rest stays
    assert "log_loss" not in score([*rows, Labelled(1, None, 1)], CLASSIFICATION).figures.metrics


def test_each_label_is_answered_for_itself_and_expired_rows_go(engine: Engine) -> None:
    store = FeedbackStore(engine)
    keep(store, CLASSIFIER, [("a", None), ("b", None), ("c", None)], at=0.0, arm="default")  # expires at 1 h
    keep(store, CLASSIFIER, [(1, None), ({"k": 1.5}, None)], at=2 * HOUR, arm="canary")
    now = 2 * HOUR + 10
    got = store.record_labels(
        [
            LabelItem("clf-canary-0", 2),
            LabelItem("clf-canary-0", 1),  # twice in one batch: the first counts
            LabelItem("nobody", 1),
            LabelItem("clf-default-0", "a"),  # its answer waited past the retention
            LabelItem("clf-canary-1", {"k": "x"}),
            LabelItem("clf-canary-1", {"k": 2.0}, model="other"),
            LabelItem("clf-canary-1", {"k": 2.0}, version=7),
            LabelItem("clf-canary-1", {"k": 2}),
        ],
        now=now,
    )
    assert [(o.status, o.reason is not None) for o in got] == [
        ("accepted", False),
        ("duplicate", True),
        ("unknown", True),
        ("expired", True),
        ("invalid", True),
        ("invalid", True),
        ("invalid", True),
        ("accepted", False),
    ]
    assert "string" in (got[4].reason or "") and "'clf'" in (got[5].reason or "") and "7" in (got[6].reason or "")
    assert (got[0].name, got[0].version, got[0].arm) == ("clf", 1, "canary")
    # later, or from another replica: the label is there already
    assert [o.status for o in store.record_labels([LabelItem("clf-canary-0", 2)], now=now)] == ["duplicate"]

    # a retention after they expired, the old predictions go; labels a retention after they came
    assert store.delete_expired(now=2 * HOUR + 1, retention_seconds=HOUR, batch=2) == 2
    assert store.delete_expired(now=2 * HOUR + 1, retention_seconds=HOUR, batch=2) == 1
    assert store.delete_expired(now=2 * HOUR + 1, retention_seconds=HOUR) == 0
    assert [o.status for o in store.record_labels([LabelItem("clf-default-1", "b")], now=now)] == ["unknown"]
    assert store.scored(CLASSIFIER, arm="canary", window=10).figures.labels == 2
    assert store.delete_expired(now=now + 2 * HOUR, retention_seconds=HOUR) == 4  # 2 predictions, 2 labels
    assert store.scored(CLASSIFIER, arm="canary", window=10).figures.labels == 0


@pytest.mark.parametrize(
    ("prediction", "label", "problem"),
    [
        (1, 2, None),
        (1, 2.5, "fractional"),
        (1, True, "boolean"),
        (1.5, 2, None),  # an integer is a number for a regressor
        ("a", 1, "number"),
        ([1, 2], [1], "1 items"),
        ({"a": 1}, {"b": 1}, "fields"),
        (1.5, None, "null"),
    ],
)
def test_a_label_has_the_shape_and_type_of_its_prediction(
    prediction: object, label: object, problem: str | None
) -> None:
    found = label_problem(prediction, label)
    assert (found is None) if problem is None else (found is not None and problem in found), found
