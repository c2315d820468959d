"""A version's reference profile: what its training data (and its outputs on it) looked like.

A profile keeps bins, never rows: per numeric column the interior cut points of its quantile
bins, the reference's share per bin, mean, standard deviation, range and missing share; per
categorical column the shares of its most frequent categories and of the rest ("other"). It
is pure NumPy/pandas and JSON-serialisable (:meth:`Profile.to_json`), so the sync leader
computes it once and every replica reads it from the state database
(``registry_sync/drift/references.py``); live traffic is binned on the same cut points
(``registry_sync/drift/statistics.py``).

Conventions both sides rely on:

- Numeric bins are ``np.searchsorted(edges, value, side="right")``: bin ``i`` holds values in
  ``[edges[i-1], edges[i])``, the first bin everything below ``edges[0]``, the last everything
  from ``edges[-1]`` up, so there are ``len(edges) + 1`` bins. Non-finite reference values
  (NaN, None, +-inf) count as missing.
- Categories are compared as ``str(value)`` (a bool is ``"True"``/``"False"`` whether it came
  from a pandas column or a JSON body). ``shares`` has one entry per named category plus a last
  one for "other": the categories beyond the ``max_categories`` most frequent, which were
  seen in the reference.
- Outputs are named by :func:`output_frame` (``prediction`` for one column).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pandas.api import types as pdtypes

DEFAULT_BINS = 10
DEFAULT_MAX_CATEGORIES = 50


@dataclass(frozen=True, slots=True)
class NumericColumn:
    name: str
    edges: tuple[float, ...]
    """Interior cut points, from the reference's quantiles, increasing, without duplicates."""
    shares: tuple[float, ...]
    """The reference's share of non-missing values per bin (``len(edges) + 1`` bins); all 0
    when the column had no value."""
    mean: float | None
    std: float | None
    """Population standard deviation (ddof 0)."""
    minimum: float | None
    maximum: float | None
    """The reference's range: a live value outside it is an outlier. None (with ``mean`` and
    ``std``) when the reference column had no finite value."""
    missing_share: float


@dataclass(frozen=True, slots=True)
class CategoricalColumn:
    name: str
    categories: tuple[str, ...]
    """The ``max_categories`` most frequent categories, most frequent first."""
    shares: tuple[float, ...]
    """Their shares of non-missing values, then one last share for the other categories
    (``len(categories) + 1`` entries; the last is 0 when every category is named)."""
    missing_share: float

    @property
    def other_seen(self) -> bool:
        """True when the reference lumped some categories into "other": a live value that is
        not named may then be one of them, so it is not an unseen category."""
        return self.shares[-1] > 0


Column = NumericColumn | CategoricalColumn


@dataclass(frozen=True, slots=True)
class Profile:
    inputs: tuple[Column, ...]
    outputs: tuple[Column, ...]
    rows: int
    """Rows profiled (after sampling)."""
    sampled_from: int
    """Rows the reference had before sampling."""

    def to_json(self) -> dict[str, Any]:
        return {
            "inputs": [column_to_json(column) for column in self.inputs],
            "outputs": [column_to_json(column) for column in self.outputs],
            "rows": self.rows,
            "sampled_from": self.sampled_from,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Profile:
        return cls(
            inputs=tuple(column_from_json(item) for item in data["inputs"]),
            outputs=tuple(column_from_json(item) for item in data["outputs"]),
            rows=int(data["rows"]),
            sampled_from=int(data["sampled_from"]),
        )


def column_to_json(column: Column) -> dict[str, Any]:
    if isinstance(column, NumericColumn):
        return {
            "kind": "numeric",
            "name": column.name,
            "edges": list(column.edges),
            "shares": list(column.shares),
            "mean": column.mean,
            "std": column.std,
            "minimum": column.minimum,
            "maximum": column.maximum,
            "missing_share": column.missing_share,
        }
    return {
        "kind": "categorical",
        "name": column.name,
        "categories": list(column.categories),
        "shares": list(column.shares),
        "missing_share": column.missing_share,
    }


def column_from_json(data: Mapping[str, Any]) -> Column:
    if data["kind"] == "numeric":
        return NumericColumn(
            name=str(data["name"]),
            edges=tuple(float(edge) for edge in data["edges"]),
            shares=tuple(float(share) for share in data["shares"]),
            mean=_optional_float(data["mean"]),
            std=_optional_float(data["std"]),
            minimum=_optional_float(data["minimum"]),
            maximum=_optional_float(data["maximum"]),
            missing_share=float(data["missing_share"]),
        )
    if data["kind"] == "categorical":
        return CategoricalColumn(
            name=str(data["name"]),
            categories=tuple(str(category) for category in data["categories"]),
            shares=tuple(float(share) for share in data["shares"]),
            missing_share=float(data["missing_share"]),
        )
    raise ValueError(f"unknown column kind {data['kind']!r}")


def _optional_float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def is_numeric(series: pd.Series) -> bool:
    """Numbers are profiled in bins; bools are categories (two values, not a scale)."""
    return pdtypes.is_numeric_dtype(series.dtype) and not pdtypes.is_bool_dtype(series.dtype)


def is_categorical(series: pd.Series) -> bool:
    dtype = series.dtype
    return (
        pdtypes.is_object_dtype(dtype)
        or pdtypes.is_string_dtype(dtype)
        or isinstance(dtype, pd.CategoricalDtype)
        or pdtypes.is_bool_dtype(dtype)
    )


def profile_columns(
    frame: pd.DataFrame, *, bins: int = DEFAULT_BINS, max_categories: int = DEFAULT_MAX_CATEGORIES
) -> tuple[Column, ...]:
    """Profile every numeric and categorical column of ``frame``, in its order. Columns of
    other types (datetimes, bytes) are not profiled: live traffic cannot be binned on them."""
    columns: list[Column] = []
    for position, name in enumerate(frame.columns):
        series = frame.iloc[:, position]
        if is_numeric(series):
            columns.append(profile_numeric(str(name), series, bins=bins))
        elif is_categorical(series):
            columns.append(profile_categorical(str(name), series, max_categories=max_categories))
    return tuple(columns)


def profile_numeric(name: str, series: pd.Series, *, bins: int = DEFAULT_BINS) -> NumericColumn:
    values = np.asarray(series, dtype=np.float64)
    finite = values[np.isfinite(values)]
    rows = len(values)
    missing_share = (rows - len(finite)) / rows if rows else 0.0
    if len(finite) == 0:
        return NumericColumn(name, (), (0.0,), None, None, None, None, missing_share)
    quantiles = np.quantile(finite, np.arange(1, bins) / bins) if bins > 1 else np.empty(0)
    edges = np.unique(quantiles)
    counts = np.bincount(np.searchsorted(edges, finite, side="right"), minlength=len(edges) + 1)
    return NumericColumn(
        name=name,
        edges=tuple(float(edge) for edge in edges),
        shares=tuple(float(share) for share in counts / len(finite)),
        mean=float(finite.mean()),
        std=float(finite.std()),
        minimum=float(finite.min()),
        maximum=float(finite.max()),
        missing_share=missing_share,
    )


def profile_categorical(
    name: str, series: pd.Series, *, max_categories: int = DEFAULT_MAX_CATEGORIES
) -> CategoricalColumn:
    rows = len(series)
    present = series[series.notna()]
    missing_share = (rows - len(present)) / rows if rows else 0.0
    if len(present) == 0:
        return CategoricalColumn(name, (), (0.0,), missing_share)
    counts = present.astype(str).value_counts(sort=True)
    named = counts.iloc[:max_categories]
    other = int(counts.iloc[max_categories:].sum())
    total = len(present)
    return CategoricalColumn(
        name=name,
        categories=tuple(str(category) for category in named.index),
        shares=tuple([float(count) / total for count in named.to_numpy()] + [other / total]),
        missing_share=missing_share,
    )


def output_frame(predictions: object) -> pd.DataFrame:
    """A version's predictions as the columns its output profile is made of: a DataFrame as
    it is; a mapping of arrays by key; a Series or 1-D array as one column ``prediction``; a
    2-D array as ``prediction_0`` .. ``prediction_<k-1>`` (``prediction`` when it has one
    column). Anything else (higher ranks, scalars) has no profile: an empty frame."""
    if isinstance(predictions, pd.DataFrame):
        return predictions
    if isinstance(predictions, pd.Series):
        return pd.DataFrame({"prediction": predictions.to_numpy()})
    if isinstance(predictions, Mapping):
        try:
            return pd.DataFrame({str(key): np.asarray(value).reshape(-1) for key, value in predictions.items()})
        except ValueError:
            return pd.DataFrame()
    try:
        array = np.asarray(predictions)
    except Exception:  # noqa: BLE001 - an odd object has no output profile, it never fails a caller
        return pd.DataFrame()
    if array.ndim == 1:
        return pd.DataFrame({"prediction": array})
    if array.ndim == 2:
        if array.shape[1] == 1:
            return pd.DataFrame({"prediction": array[:, 0]})
        return pd.DataFrame({f"prediction_{index}": array[:, index] for index in range(array.shape[1])})
    return pd.DataFrame()
