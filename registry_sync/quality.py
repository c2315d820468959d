"""Live quality of a version: its latest labels against the predictions they were joined to.

A label has the shape of one output row of the version's answer (``POST /feedback``):
:func:`label_problem` says why one does not. The task decides the figures: a classifier's
accuracy, macro precision, recall and F1 (per class over the classes seen in the window,
predicted or true, a class never predicted counting 0 precision, as scikit-learn's defaults)
and log loss where every answer in the window carried probabilities; a regressor's MAE and
RMSE. The task is the version tag ``gateway.quality.task`` if set, else what was recorded with
the predictions (the version's signature's output type, else the answer's JSON type: an
integer, a string or a boolean is a class, a float a value).

Pure functions of the rows: reading them from the state database is
:mod:`registry_sync.feedback`'s (its :func:`~registry_sync.feedback.live_quality` is what the sync
leader's MLflow write-back calls).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import orjson

Task = Literal["classification", "regression"]
CLASSIFICATION: Task = "classification"
REGRESSION: Task = "regression"
TASKS: tuple[Task, ...] = (CLASSIFICATION, REGRESSION)
TASK_TAG = "gateway.quality.task"
DEFAULT_WINDOW = 1000

CLASSIFIER_METRICS = ("accuracy", "precision_macro", "recall_macro", "f1_macro", "log_loss")
REGRESSOR_METRICS = ("mae", "rmse")


@dataclass(frozen=True, slots=True)
class QualityFigures:
    """A version's (and arm's) live quality over its latest ``window`` labels: ``labels`` of
    them were there; ``metrics`` by name (``accuracy``, ``precision_macro``, ``recall_macro``,
    ``f1_macro``, ``log_loss``; or ``mae``, ``rmse``), empty without labels."""

    task: Task | None
    labels: int
    metrics: dict[str, float] = field(default_factory=dict)
    window: int = DEFAULT_WINDOW


@dataclass(frozen=True, slots=True)
class Labelled:
    """One label with the answer it was joined to."""

    prediction: Any
    probabilities: Any
    label: Any


@dataclass(frozen=True, slots=True)
class Scored:
    """A window scored row by row: what the guard's tests need beside the figures (whether each
    answer was right, for a classifier; each absolute error, for a regressor)."""

    figures: QualityFigures
    correct: np.ndarray | None = None  # bool per label (classification)
    errors: np.ndarray | None = None  # |label - prediction| per label (regression)


def task_of_value(value: Any) -> Task | None:
    """What an answer's JSON value says of the task (None: neither a class nor a number)."""
    if isinstance(value, bool | int | str):
        return CLASSIFICATION
    if isinstance(value, float):
        return REGRESSION
    if isinstance(value, list) and len(value) == 1:
        return task_of_value(value[0])
    return None


def task_of_tag(tags: dict[str, str]) -> Task | None:
    value = tags.get(TASK_TAG, "").strip().lower()
    return value if value in TASKS else None  # type: ignore[return-value]


def label_problem(prediction: Any, label: Any) -> str | None:
    """Why ``label`` does not have the shape and type of the ``prediction`` it is for (None: it
    does). A number stands for a float, never a string for a number or a number for a string."""
    return _shape_problem(prediction, label, "the label")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _shape_problem(prediction: Any, label: Any, where: str) -> str | None:
    want, got = _kind(prediction), _kind(label)
    if want != got:
        return f"{where} is a {got}, the prediction a {want}"
    if want == "number" and isinstance(prediction, int) and not isinstance(label, int):
        return f"{where} is a fractional number, the prediction an integer class"
    if want == "number" and isinstance(label, float) and not math.isfinite(label):
        return f"{where} is not a finite number"
    if want == "array":
        if len(label) != len(prediction):
            return f"{where} has {len(label)} items, the prediction {len(prediction)}"
        for i, (p, v) in enumerate(zip(prediction, label, strict=True)):
            if (problem := _shape_problem(p, v, f"{where}[{i}]")) is not None:
                return problem
    if want == "object":
        if set(label) != set(prediction):
            return f"{where} has the fields {sorted(label)}, the prediction {sorted(prediction)}"
        for key in prediction:
            if (problem := _shape_problem(prediction[key], label[key], f"{where}.{key}")) is not None:
                return problem
    return None


def _class_key(value: Any) -> str:
    """A class as one comparable key, whatever its JSON type (2, "2" and [2] stay apart)."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def _scalar(value: Any) -> Any:
    return value[0] if isinstance(value, list) and len(value) == 1 else value


def score(rows: Sequence[Labelled], task: Task | None, *, window: int = DEFAULT_WINDOW) -> Scored:
    """The figures of one window of labels (newest first or not: order does not matter)."""
    if not rows or task is None:
        return Scored(QualityFigures(task, len(rows), {}, window))
    if task == REGRESSION:
        return _regression(rows, window)
    return _classification(rows, window)


def _regression(rows: Sequence[Labelled], window: int) -> Scored:
    try:
        predicted = np.array([float(_scalar(r.prediction)) for r in rows], dtype=np.float64)
        actual = np.array([float(_scalar(r.label)) for r in rows], dtype=np.float64)
    except (TypeError, ValueError):  # a task tag saying regression over classes that are not numbers
        return Scored(QualityFigures(REGRESSION, len(rows), {}, window))
    errors = np.abs(actual - predicted)
    metrics = {"mae": float(np.mean(errors)), "rmse": float(np.sqrt(np.mean((actual - predicted) ** 2)))}
    return Scored(QualityFigures(REGRESSION, len(rows), metrics, window), errors=errors)


def _classification(rows: Sequence[Labelled], window: int) -> Scored:
    predicted = [_class_key(_scalar(r.prediction)) for r in rows]
    actual = [_class_key(_scalar(r.label)) for r in rows]
    classes = sorted(set(predicted) | set(actual))
    index = {c: i for i, c in enumerate(classes)}
    p = np.array([index[c] for c in predicted])
    t = np.array([index[c] for c in actual])
    correct = p == t
    k = len(classes)
    tp = np.bincount(t[correct], minlength=k).astype(np.float64)
    predicted_count = np.bincount(p, minlength=k).astype(np.float64)
    true_count = np.bincount(t, minlength=k).astype(np.float64)
    precision = np.divide(tp, predicted_count, out=np.zeros(k), where=predicted_count > 0)
    recall = np.divide(tp, true_count, out=np.zeros(k), where=true_count > 0)
    f1_denominator = predicted_count + true_count  # 2tp + fp + fn
    f1 = np.divide(2 * tp, f1_denominator, out=np.zeros(k), where=f1_denominator > 0)
    metrics = {
        "accuracy": float(np.mean(correct)),
        "precision_macro": float(np.mean(precision)),
        "recall_macro": float(np.mean(recall)),
        "f1_macro": float(np.mean(f1)),
    }
    if (loss := _log_loss(rows)) is not None:
        metrics["log_loss"] = loss
    return Scored(QualityFigures(CLASSIFICATION, len(rows), metrics, window), correct=correct)


def _log_loss(rows: Sequence[Labelled]) -> float | None:
    """Mean negative log of the probability given to the true class (each answer's
    probabilities normalised to sum 1, clipped by the float64 epsilon, as scikit-learn's
    ``log_loss``); None unless every answer carried probabilities naming the label's class:
    an object by class (``{"setosa": 0.9, ...}``) or an array indexed by an integer class."""
    chosen: list[float] = []
    for row in rows:
        probabilities, label = row.probabilities, _scalar(row.label)
        if isinstance(probabilities, dict):
            values = [float(v) for v in probabilities.values()]
            mine = probabilities.get(label if isinstance(label, str) else _class_key(label))
        elif isinstance(probabilities, list) and isinstance(label, int) and 0 <= label < len(probabilities):
            values = [float(v) for v in probabilities]
            mine = probabilities[label]
        else:
            return None
        total = sum(values)
        if mine is None or not total > 0:
            return None
        chosen.append(float(mine) / total)
    eps = np.finfo(np.float64).eps
    return float(-np.mean(np.log(np.clip(np.array(chosen), eps, 1 - eps))))
