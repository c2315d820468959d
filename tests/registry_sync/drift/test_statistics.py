"""The drift maths: profiles, live counts on their bins, and the figures."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from registry_sync.drift.profile import (
    CategoricalColumn,
    NumericColumn,
    Profile,
    output_frame,
    profile_columns,
)
from registry_sync.drift.statistics import ColumnCounts, bin_frame, compare

# PSI's usual reading: under 0.1 no shift, over 0.25 a large one.
STABLE_PSI = 0.1
LARGE_PSI = 0.25
SIGNIFICANT = 0.001


def rows(seed: int, n: int, *, shift: float = 0.0) -> pd.DataFrame:
    generator = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "x": generator.normal(0.0, 1.0, n) + shift,
            "y": generator.normal(10.0, 2.0, n),
            "colour": generator.choice(["red", "green", "blue"], n, p=[0.5, 0.3, 0.2]),
        }
    )


def columns_by_name(frame: pd.DataFrame) -> dict[str, NumericColumn | CategoricalColumn]:
    return {column.name: column for column in profile_columns(frame)}


def test_a_profile_round_trips_through_json_exactly() -> None:
    frame = rows(1, 5_000)
    frame.loc[::7, "x"] = np.nan
    frame["flag"] = frame["x"] > 0
    frame["empty"] = np.nan
    outputs = profile_columns(output_frame(np.arange(5_000) % 3))
    profile = Profile(profile_columns(frame), outputs, rows=5_000, sampled_from=1_000_000)

    assert Profile.from_json(json.loads(json.dumps(profile.to_json(), allow_nan=False))) == profile
    kinds = {column.name: type(column) for column in profile.inputs}
    assert kinds == {
        "x": NumericColumn,
        "y": NumericColumn,
        "colour": CategoricalColumn,
        "flag": CategoricalColumn,
        "empty": NumericColumn,
    }
    assert [column.name for column in profile.outputs] == ["prediction"]


def test_numeric_bins_are_quantiles_without_duplicate_edges_and_shares_sum_to_one() -> None:
    frame = pd.DataFrame({"x": np.repeat([1.0, 2.0, 3.0, 4.0], 250), "z": np.arange(1_000, dtype=np.int64)})
    frame.loc[:99, "x"] = None
    columns = columns_by_name(frame)
    x, z = columns["x"], columns["z"]
    assert isinstance(x, NumericColumn) and isinstance(z, NumericColumn)

    assert list(x.edges) == sorted(set(x.edges))
    assert len(x.shares) == len(x.edges) + 1
    tolerance = len(x.shares) * np.finfo(np.float64).eps
    assert sum(x.shares) == pytest.approx(1.0, abs=tolerance)
    assert x.missing_share == 100 / 1_000
    assert (x.minimum, x.maximum) == (1.0, 4.0)
    # Ten equal-frequency bins of 0..999: a tenth of the values in each.
    assert z.shares == pytest.approx([0.1] * 10, abs=len(z.shares) * np.finfo(np.float64).eps)


def test_the_same_distribution_shows_no_drift() -> None:
    reference = columns_by_name(rows(1, 100_000))
    live = bin_frame(list(reference.values()), rows(2, 10_000))

    for name, column in reference.items():
        drift = compare(column, live[name])
        assert drift.psi is not None and drift.psi < STABLE_PSI, name
        assert drift.p_value is not None and drift.p_value > SIGNIFICANT, name
        assert drift.outlier_share <= 0.01 and drift.missing_share == 0.0
    assert compare(reference["x"], live["x"]).test == "ks"
    assert compare(reference["colour"], live["colour"]).test == "chi2"


def test_a_two_sigma_shift_is_large_on_that_feature_only() -> None:
    reference = columns_by_name(rows(1, 100_000))
    live = bin_frame(list(reference.values()), rows(2, 2_000, shift=2.0))

    shifted = compare(reference["x"], live["x"])
    assert shifted.psi is not None and shifted.psi > LARGE_PSI
    assert shifted.p_value is not None and shifted.p_value < SIGNIFICANT
    assert shifted.outlier_share > 0  # values beyond the reference's maximum
    for name in ("y", "colour"):
        steady = compare(reference[name], live[name])
        assert steady.psi is not None and steady.psi < STABLE_PSI, name


def test_chi_square_catches_an_unseen_category_and_shifted_shares() -> None:
    reference = columns_by_name(rows(1, 10_000))["colour"]
    assert isinstance(reference, CategoricalColumn) and not reference.other_seen
    unseen = pd.DataFrame({"colour": ["red"] * 50 + ["green"] * 30 + ["purple"] * 20})
    counts = bin_frame([reference], unseen)["colour"]
    assert counts.outliers == 20 and counts.counts[-1] == 20
    drift = compare(reference, counts)
    assert drift.outlier_share == 0.2
    assert drift.p_value is not None and drift.p_value < SIGNIFICANT

    shifted = bin_frame([reference], pd.DataFrame({"colour": ["blue"] * 100}))["colour"]
    assert shifted.outliers == 0
    drift = compare(reference, shifted)
    assert drift.psi is not None and drift.psi > LARGE_PSI
    assert drift.p_value is not None and drift.p_value < SIGNIFICANT


def test_categories_lumped_into_other_are_seen_not_outliers() -> None:
    frame = pd.DataFrame({"c": [f"k{i}" for i in range(10)] * 10})
    (column,) = profile_columns(frame, max_categories=4)
    assert isinstance(column, CategoricalColumn)
    assert len(column.categories) == 4 and column.shares[-1] == pytest.approx(0.6)
    counts = bin_frame([column], pd.DataFrame({"c": ["k9", "never"]}))["c"]
    assert counts.outliers == 0 and counts.counts[-1] == 2


def test_a_missing_column_counts_every_row_missing() -> None:
    reference = profile_columns(rows(1, 1_000))
    counts = bin_frame(reference, pd.DataFrame({"x": [0.1, 0.2, None], "extra": [1, 2, 3]}))
    assert counts["y"].missing == 3 and counts["y"].rows == 3 and counts["y"].counts.sum() == 0
    assert counts["colour"].missing == 3
    assert counts["x"].missing == 1 and counts["x"].counts.sum() == 2
    assert "extra" not in counts
    drift = compare(reference[1], counts["y"])
    assert drift.missing_share == 1.0 and drift.psi is None and drift.p_value is None


def test_garbage_values_are_outliers_and_never_raise() -> None:
    reference = profile_columns(rows(1, 1_000))
    garbage = pd.DataFrame(
        {
            "x": ["abc", [1, 2], {"a": 1}, None, "0.5", np.inf, 1e12, b"\x00"],
            "y": [10.0] * 8,
            "colour": [["red"], None, {"x": 1}, "red", 3, True, object(), "green"],
        }
    )
    counts = bin_frame(reference, garbage)
    x = counts["x"]
    # Unreadable: "abc", the list, the dict, the bytes; outside the range: inf and 1e12.
    assert (x.missing, x.outliers, x.counts.sum(), x.rows) == (1, 6, 3, 8)
    colour = counts["colour"]
    assert (colour.missing, colour.outliers, colour.rows) == (1, 5, 8)
    assert colour.counts.sum() == 7
    for column in reference:
        compare(column, counts[column.name])


@pytest.mark.parametrize(
    "frame",
    [
        pd.DataFrame(),
        pd.DataFrame({"x": []}),
        pd.DataFrame([[1.0, 2.0]], columns=["x", "x"]),
        pd.DataFrame({"x": pd.Series([1, 2], dtype="Int64"), "colour": pd.Categorical(["red", "teal"])}),
    ],
)
def test_odd_frames_bin_without_raising(frame: pd.DataFrame) -> None:
    reference = profile_columns(rows(1, 100))
    counts = bin_frame(reference, frame)
    assert {name: c.rows for name, c in counts.items()} == {"x": len(frame), "y": len(frame), "colour": len(frame)}
    for column in reference:
        compare(column, counts[column.name])


def test_counts_add_up_and_round_trip() -> None:
    reference = profile_columns(rows(1, 1_000))
    first = bin_frame(reference, rows(2, 100))
    second = bin_frame(reference, rows(3, 50))
    whole = bin_frame(reference, pd.concat([rows(2, 100), rows(3, 50)], ignore_index=True))
    for name in whole:
        assert first[name] + second[name] == whole[name]
        assert ColumnCounts.from_json(json.loads(json.dumps(whole[name].to_json()))) == whole[name]
    with pytest.raises(ValueError):
        first["x"] + first["colour"]


def test_an_all_missing_reference_column_makes_every_live_value_an_outlier() -> None:
    (column,) = profile_columns(pd.DataFrame({"x": [np.nan, np.nan]}))
    assert isinstance(column, NumericColumn) and column.minimum is None and column.missing_share == 1.0
    counts = bin_frame([column], pd.DataFrame({"x": [1.0, None]}))["x"]
    assert (counts.outliers, counts.missing) == (1, 1)
    assert compare(column, counts).psi is None


@pytest.mark.parametrize(
    ("predictions", "names"),
    [
        (np.array([0, 1, 2]), ["prediction"]),
        (np.array([[0.1], [0.2]]), ["prediction"]),
        (np.array([[0.1, 0.9], [0.2, 0.8]]), ["prediction_0", "prediction_1"]),
        (pd.Series([1, 2]), ["prediction"]),
        (pd.DataFrame({"a": [1], "b": ["x"]}), ["a", "b"]),
        ({"label": [1, 2], "score": [0.5, 0.6]}, ["label", "score"]),
        ({"label": [1, 2], "score": [0.5]}, []),
        (np.zeros((2, 2, 2)), []),
    ],
)
def test_outputs_are_named_the_same_way_for_reference_and_live(predictions: object, names: list[str]) -> None:
    assert list(output_frame(predictions).columns) == names


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no text")


def test_a_value_that_breaks_binning_makes_its_column_outliers_not_an_error() -> None:
    reference = profile_columns(rows(1, 100))
    counts = bin_frame(reference, pd.DataFrame({"x": [0.0, 0.1], "colour": ["red", Unprintable()]}))
    assert (counts["colour"].outliers, counts["colour"].rows) == (2, 2)
    assert counts["x"].outliers == 0 and counts["x"].counts.sum() == 2
