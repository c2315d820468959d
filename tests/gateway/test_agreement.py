"""When the fast path's answer counts as pyfunc's: equal JSON, floats within a few ulps of
the answer's own dtype (gateway/dataplane/agreement.py)."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.dataplane.agreement import ULP_TOLERANCE, answer_dtype, compare, ulps_apart
from gateway.wire.mlflow_scoring import encode_predictions

F64 = np.dtype(np.float64)
F32 = np.dtype(np.float32)


def steps(value: float, count: int, dtype: np.dtype[Any] = F64) -> Any:
    """``value`` moved ``count`` representable values of ``dtype`` up."""
    x = np.array(value, dtype=dtype)
    for _ in range(count):
        x = np.nextafter(x, np.array(np.inf, dtype=dtype))
    return x


def answer(*values: Any) -> bytes:
    return encode_predictions(np.array(values))


@pytest.mark.parametrize("count", [0, 1, ULP_TOLERANCE])
def test_floats_up_to_the_tolerance_apart_agree(count: int) -> None:
    ours, theirs = answer(0.1, 2.5, -3.0), answer(0.1, float(steps(2.5, count)), -3.0)
    comparison = compare(ours, theirs, dtype=F64)
    assert comparison.agrees and comparison.ulps == count
    assert comparison.exact == (count == 0)


@pytest.mark.parametrize("count", [ULP_TOLERANCE + 1, 1000])
def test_floats_further_apart_disagree_saying_where_and_by_how_much(count: int) -> None:
    moved = float(steps(2.5, count))
    comparison = compare(answer(0.1, 2.5), answer(0.1, moved), dtype=F64)
    assert not comparison.agrees and comparison.ulps == count
    assert comparison.difference == (
        f"predictions[1] is 2.5, pyfunc's is {moved!r} ({count} ulps of float64 apart; at most {ULP_TOLERANCE} agree)"
    )


def test_ulps_are_counted_in_the_answers_own_dtype() -> None:
    # one float32 ulp is 2**29 float64 ulps: a float32 model is measured where it rounds
    near = float(steps(1.5, 1, F32))
    ours, theirs = encode_predictions(np.array([1.5], dtype=F32)), encode_predictions(np.array([near], dtype=F32))
    assert compare(ours, theirs, dtype=F32).ulps == 1
    assert not compare(ours, theirs, dtype=F64).agrees
    assert answer_dtype(np.array([1.5], dtype=F32)) == F32
    assert answer_dtype(np.array([1, 2])) == F64  # integers: any float in the answer is JSON's float64
    assert answer_dtype([0.5]) == F64


def test_zero_and_the_floats_around_it() -> None:
    assert ulps_apart(np.array([0.0]), np.array([-0.0]), F64) == [0]
    tiny = np.nextafter(0.0, 1.0)
    assert ulps_apart(np.array([-tiny]), np.array([tiny]), F64) == [2]
    assert ulps_apart(np.array([-1.0]), np.array([float(steps(-1.0, 1))]), F64) == [1]  # toward zero


@given(
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.integers(min_value=0, max_value=64),
    st.sampled_from([np.inf, -np.inf]),
)
@settings(deadline=None)  # a loaded CI machine may stall one example past Hypothesis' 200 ms
def test_ulps_count_the_steps_between_two_floats_as_numpy_does(value: float, count: int, toward: float) -> None:
    moved = np.array(value)
    for _ in range(count):
        if abs(moved) == np.finfo(F64).max:
            return  # no finite float past the largest
        moved = np.nextafter(moved, toward)
    a, b = np.array([value]), np.array([float(moved)])
    assert ulps_apart(a, b, F64) == [count]  # crossing zero too: +0.0 and -0.0 are one value
    assert int(np.testing.assert_array_max_ulp(a, b, maxulp=count).max()) == count


@pytest.mark.parametrize(
    ("ours", "theirs", "difference"),
    [
        ([1, 2], [1, 3], "predictions[1] is 2, pyfunc's is 3"),  # integers: exactly
        ([1.0], [1], "predictions[0] is 1.0, pyfunc's is 1"),  # a float is not an integer
        ([True], [1], "predictions[0] is True, pyfunc's is 1"),
        (["setosa"], ["virginica"], "predictions[0] is 'setosa', pyfunc's is 'virginica'"),
        ([None], [0.0], "predictions[0] is None, pyfunc's is 0.0"),
        ([1.0, 2.0], [1.0], "predictions has 2 items, pyfunc's 1"),
        ([{"a": 1.0}], [{"b": 1.0}], "predictions[0] has the keys ['a'], pyfunc's ['b']"),
        ([{"a": [1.0, 2.0]}], [{"a": [1.0, 2.5]}], "predictions[0].a[1] is 2.0, pyfunc's is 2.5"),
    ],
)
def test_everything_but_floats_must_be_equal(ours: Any, theirs: Any, difference: str) -> None:
    found = compare(orjson.dumps({"predictions": ours}), orjson.dumps({"predictions": theirs}))
    assert found.difference is not None and found.difference.startswith(difference), found.difference


def test_key_order_does_not_matter_and_records_compare_by_key() -> None:
    ours = orjson.dumps({"predictions": [{"a": 1.0, "b": "x"}]})
    theirs = orjson.dumps({"predictions": [{"b": "x", "a": float(steps(1.0, 1))}]})
    assert compare(ours, theirs).agrees


def test_non_finite_floats_agree_only_with_themselves() -> None:
    # what the encoder's fallback (the standard library) may write
    assert compare(b'{"predictions": [NaN, Infinity]}', b'{"predictions": [NaN, Infinity]}').agrees
    found = compare(b'{"predictions": [NaN]}', b'{"predictions": [1.0]}')
    assert found.difference == "predictions[0] is nan, pyfunc's is 1.0 (not both finite; at most 4 agree)"
    assert not compare(b'{"predictions": [Infinity]}', b'{"predictions": [-Infinity]}').agrees


def test_an_answer_that_is_not_json_disagrees() -> None:
    found = compare(b"{", b"{}")
    assert found.difference is not None and found.difference.startswith("an answer is not JSON")
