"""Live values binned on a reference profile, and how far they are from it.

:func:`bin_frame` turns a batch of live rows into :class:`ColumnCounts` on the reference's
own bins (vectorised: ``np.searchsorted`` for numbers, a pandas Index's hash lookup for
categories); counts add up (``+``) over batches, windows and processes, and are all a window
keeps, so memory per version is bins, not rows. :func:`compare` reads one column's counts
against its reference as a :class:`FeatureDrift`.

Nothing here raises on odd input: live traffic is whatever clients sent. A column the batch
lacks counts every row missing; a value that cannot be read as the column's type counts as
an outlier (and in no bin); extra columns are ignored here (the caller counts them).
Outliers are, for numbers, values outside the reference's ``[minimum, maximum]`` (still
binned, in an end bin) and unreadable ones; for categories, values the reference never had
(binned in "other"), which can only be told when the reference named all its categories
(:attr:`CategoricalColumn.other_seen` false).

The figures:

- PSI, ``sum((live - ref) * ln(live / ref))`` over the bins' shares of non-missing values,
  each share floored at :data:`EPSILON` (1e-4) so that an empty bin on either side gives a
  large but finite term. Usual reading: under 0.1 stable, 0.1-0.25 moderate, over 0.25 large.
- Numbers: a Kolmogorov-Smirnov statistic, the largest gap between the reference's and the
  live window's cumulative shares at the bins' edges, with the one-sample p-value
  (``scipy.stats.kstwo``, n = the live values binned). On bins the gap can only be smaller
  than on raw values, so the test errs towards no alarm; it is not thrown by one nearly empty
  bin, where a binned chi-square is (its expected count near 0 blows the statistic up).
- Categories: Pearson's chi-square goodness of fit of the live counts to the reference's
  shares (floored at EPSILON), over the slots either side has, with ``slots - 1`` degrees of
  freedom.

Both tests treat the reference's shares as the truth (the reference is the larger sample).
``psi``, ``statistic`` and ``p_value`` are None when the window has no value to compare.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from registry_sync.drift.profile import CategoricalColumn, Column, NumericColumn

EPSILON = 1e-4
"""The floor under a bin's share in PSI and in the chi-square's expected counts."""


@dataclass(frozen=True, slots=True)
class ColumnCounts:
    name: str
    counts: np.ndarray[Any, np.dtype[np.int64]]
    """Values per bin (numbers: ``len(edges) + 1``) or per category (``len(categories)``, then
    one for "other")."""
    missing: int
    outliers: int
    rows: int
    """Rows seen, binned or not: ``counts.sum() + missing + unreadable == rows``."""

    def __add__(self, other: ColumnCounts) -> ColumnCounts:
        if self.counts.shape != other.counts.shape:
            raise ValueError(f"counts of {self.name!r} have {len(self.counts)} bins, not {len(other.counts)}")
        return ColumnCounts(
            self.name,
            self.counts + other.counts,
            self.missing + other.missing,
            self.outliers + other.outliers,
            self.rows + other.rows,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ColumnCounts):
            return NotImplemented
        return (self.name, self.missing, self.outliers, self.rows) == (
            other.name,
            other.missing,
            other.outliers,
            other.rows,
        ) and np.array_equal(self.counts, other.counts)

    __hash__ = None  # type: ignore[assignment]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "counts": [int(count) for count in self.counts],
            "missing": self.missing,
            "outliers": self.outliers,
            "rows": self.rows,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ColumnCounts:
        return cls(
            name=str(data["name"]),
            counts=np.asarray(data["counts"], dtype=np.int64),
            missing=int(data["missing"]),
            outliers=int(data["outliers"]),
            rows=int(data["rows"]),
        )

    @classmethod
    def empty(cls, column: Column) -> ColumnCounts:
        return cls(column.name, np.zeros(_slots(column), dtype=np.int64), 0, 0, 0)


@dataclass(frozen=True, slots=True)
class FeatureDrift:
    name: str
    psi: float | None
    test: Literal["ks", "chi2"]
    statistic: float | None
    p_value: float | None
    missing_share: float
    outlier_share: float
    rows: int


def _slots(column: Column) -> int:
    if isinstance(column, NumericColumn):
        return len(column.edges) + 1
    return len(column.categories) + 1


def bin_frame(columns: Sequence[Column], frame: pd.DataFrame) -> dict[str, ColumnCounts]:
    """Each reference column's counts in ``frame`` (see the module's docstring)."""
    result: dict[str, ColumnCounts] = {}
    rows = len(frame)
    for column in columns:
        series = _column_of(frame, column.name)
        try:
            if series is None:
                counts = ColumnCounts(column.name, np.zeros(_slots(column), dtype=np.int64), rows, 0, rows)
            elif isinstance(column, NumericColumn):
                counts = _bin_numeric(column, series)
            else:
                counts = _bin_categorical(column, series)
        except Exception:  # noqa: BLE001 - live values never fail their request: unreadable = outliers
            counts = ColumnCounts(column.name, np.zeros(_slots(column), dtype=np.int64), 0, rows, rows)
        result[column.name] = counts
    return result


def _column_of(frame: pd.DataFrame, name: str) -> pd.Series | None:
    if name not in frame.columns:
        return None
    selected = frame[name]
    if isinstance(selected, pd.DataFrame):  # a name given twice: the first one
        return selected.iloc[:, 0]
    return selected


def _as_float(series: pd.Series) -> np.ndarray[Any, np.dtype[np.float64]]:
    """``series`` as floats, NaN where a value is not a number (a string that reads as one is)."""
    if pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype):
        return np.asarray(series, dtype=np.float64)
    try:
        return np.asarray(pd.to_numeric(series, errors="coerce"), dtype=np.float64)
    except (TypeError, ValueError):  # lists, dicts: one value at a time
        return np.fromiter((_one_float(value) for value in series), dtype=np.float64, count=len(series))


def _one_float(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str | np.number):
        return float("nan")
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _bin_numeric(column: NumericColumn, series: pd.Series) -> ColumnCounts:
    missing = np.asarray(series.isna(), dtype=bool)
    values = _as_float(series)
    unreadable = np.isnan(values) & ~missing
    readable = values[~np.isnan(values)]
    bins = np.searchsorted(np.asarray(column.edges, dtype=np.float64), readable, side="right")
    counts = np.bincount(bins, minlength=len(column.edges) + 1).astype(np.int64)
    if column.minimum is None or column.maximum is None:
        outside = len(readable)  # the reference had no value: every live one is unlike it
    else:
        outside = int(np.count_nonzero((readable < column.minimum) | (readable > column.maximum)))
    return ColumnCounts(column.name, counts, int(missing.sum()), outside + int(unreadable.sum()), len(series))


def _bin_categorical(column: CategoricalColumn, series: pd.Series) -> ColumnCounts:
    missing = np.asarray(series.isna(), dtype=bool)
    present = series[~missing]
    codes = pd.Index(column.categories, dtype=object).get_indexer(present.astype(str))
    named = codes[codes >= 0]
    other = int(np.count_nonzero(codes < 0))
    counts = np.append(np.bincount(named, minlength=len(column.categories)), other).astype(np.int64)
    outliers = 0 if column.other_seen else other
    return ColumnCounts(column.name, counts, int(missing.sum()), outliers, len(series))


def compare(column: Column, counts: ColumnCounts) -> FeatureDrift:
    """How far ``counts`` (a live window) is from ``column`` (its reference)."""
    rows = counts.rows
    missing_share = counts.missing / rows if rows else 0.0
    outlier_share = counts.outliers / rows if rows else 0.0
    test: Literal["ks", "chi2"] = "ks" if isinstance(column, NumericColumn) else "chi2"
    observed = counts.counts.astype(np.float64)
    expected = np.asarray(column.shares, dtype=np.float64)
    binned = observed.sum()
    if binned == 0 or expected.shape != observed.shape or expected.sum() == 0:
        return FeatureDrift(column.name, None, test, None, None, missing_share, outlier_share, rows)
    live = np.maximum(observed / binned, EPSILON)
    reference = np.maximum(expected, EPSILON)
    psi = float(np.sum((live - reference) * np.log(live / reference)))
    if test == "ks":
        statistic, p_value = _ks(expected, observed / binned, int(binned))
    else:
        statistic, p_value = _chi_square(expected, observed)
    return FeatureDrift(column.name, psi, test, statistic, p_value, missing_share, outlier_share, rows)


def _ks(expected: np.ndarray[Any, Any], live: np.ndarray[Any, Any], n: int) -> tuple[float, float]:
    # imported where a test runs, not with the module: scipy.stats costs about 0.5 s of CPU, and
    # every gateway and sync process imported it at start (through the drift window)
    from scipy import stats

    gap = float(np.max(np.abs(np.cumsum(expected) - np.cumsum(live))[:-1], initial=0.0))
    return gap, float(stats.kstwo.sf(gap, n))


def _chi_square(expected: np.ndarray[Any, Any], observed: np.ndarray[Any, Any]) -> tuple[float, float]:
    from scipy import stats  # imported here, as in _ks

    used = (expected > 0) | (observed > 0)
    shares = np.maximum(expected[used], EPSILON)
    wanted = shares / shares.sum() * observed[used].sum()
    statistic = float(np.sum((observed[used] - wanted) ** 2 / wanted))
    freedom = int(used.sum()) - 1
    if freedom < 1:
        return statistic, 1.0
    return statistic, float(stats.chi2.sf(statistic, freedom))
