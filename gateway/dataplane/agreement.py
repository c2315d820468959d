"""Whether the fast path's answer is pyfunc's: the same JSON, floats to within a few ulps.

The two paths hand the flavor's predict the same numbers in different memory: the fast
path a C-ordered array read from the JSON, pyfunc a pandas frame, which scikit-learn turns
into a Fortran-ordered array. BLAS picks its kernel by layout (a matrix-vector product
sums each row's dot product in a different order), and a float sum taken in another order
rounds differently: a Ridge regression's predictions come out a bit or two apart in their
last place. That is not a second answer, but comparing bytes called it one and switched
the fast path off.

So answers agree when they are equal as JSON (the same keys, lengths, integers, strings,
booleans and nulls) and every pair of floats is within :data:`ULP_TOLERANCE` units in the
last place (ulps) of the answer's own float dtype: a float32 model is measured in float32
ulps, where its kernels round. Four ulps covers a reordered sum whose result is not much
smaller than its terms. A result near zero after cancellation can move by many more ulps
while moving by almost nothing; such a warm-up keeps the version on pyfunc, the safe side,
and the reason says by how many ulps.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

ULP_TOLERANCE = 4
"""The most ulps (of the answer's float dtype) two floats may differ by and still agree."""

_MAX_SHOWN = 80  # characters of a value quoted in a difference


@dataclass(frozen=True, slots=True)
class Comparison:
    """How two answers compare: ``difference`` says, in words, the first thing past the
    tolerance (None when they agree); ``ulps`` is the largest distance between two floats."""

    ulps: int
    dtype: np.dtype[Any]
    difference: str | None = None

    @property
    def agrees(self) -> bool:
        return self.difference is None

    @property
    def exact(self) -> bool:
        return self.agrees and self.ulps == 0


def answer_dtype(raw: Any) -> np.dtype[Any]:
    """The float dtype a prediction's floats are measured in: its own, for a float16, 32 or
    64 array; else float64, what JSON's numbers are read as."""
    dtype = getattr(raw, "dtype", None)
    if isinstance(dtype, np.dtype) and dtype.kind == "f" and dtype.itemsize in (2, 4, 8):
        return dtype
    return np.dtype(np.float64)


def compare(
    fast: bytes, pyfunc: bytes, *, dtype: np.dtype[Any] | None = None, max_ulps: int = ULP_TOLERANCE
) -> Comparison:
    """Compare two JSON answers (``fast``'s and ``pyfunc``'s), their floats in ``dtype`` ulps."""
    dtype = np.dtype(np.float64) if dtype is None else dtype
    if fast == pyfunc:
        return Comparison(0, dtype)
    try:
        # the standard library's reader: it takes what the encoder's fallback may write (NaN,
        # integers past 64 bits), which orjson refuses
        ours, theirs = json.loads(fast), json.loads(pyfunc)
    except ValueError as exc:
        return Comparison(0, dtype, f"an answer is not JSON ({exc})")
    floats: list[tuple[str, float, float]] = []
    difference = _walk(ours, theirs, "", floats)
    if difference is not None:
        return Comparison(0, dtype, difference)
    if not floats:
        return Comparison(0, dtype)
    distances = ulps_apart(
        np.array([a for _, a, _ in floats], dtype=np.float64),
        np.array([b for _, _, b in floats], dtype=np.float64),
        dtype,
    )
    worst = max(range(len(floats)), key=distances.__getitem__)
    ulps = distances[worst]
    if ulps <= max_ulps:
        return Comparison(ulps, dtype)
    where, a, b = floats[worst]
    apart = "not both finite" if ulps == _INFINITELY else f"{ulps} ulps of {dtype.name} apart"
    return Comparison(
        ulps, dtype, f"{where} is {_shown(a)}, pyfunc's is {_shown(b)} ({apart}; at most {max_ulps} agree)"
    )


_INFINITELY = 2**64  # ulps between a NaN or an infinity and anything but itself


def ulps_apart(a: np.ndarray, b: np.ndarray, dtype: np.dtype[Any]) -> list[int]:
    """How many values of ``dtype`` lie between each pair, once both are rounded to it: 0 when
    equal (+0.0 and -0.0 too), 1 for neighbours (``np.nextafter``); :data:`_INFINITELY` for a
    NaN or an infinity against anything but the same."""
    x, y = a.astype(dtype), b.astype(dtype)
    bits = np.dtype(f"i{dtype.itemsize}")
    smallest = int(np.iinfo(bits).min)

    def ordered(values: np.ndarray) -> list[int]:
        # The bits of a float, read as a signed integer, count up from +0.0; a negative float's
        # count down from -0.0 in the same order when mirrored around the smallest integer.
        return [i if i >= 0 else smallest - i for i in values.view(bits).tolist()]

    found = []
    for p, q, i, j in zip(x.tolist(), y.tolist(), ordered(x), ordered(y), strict=True):
        if math.isfinite(p) and math.isfinite(q):
            found.append(abs(i - j))
        else:
            same = p == q or (math.isnan(p) and math.isnan(q))
            found.append(0 if same else _INFINITELY)
    return found


def _walk(ours: Any, theirs: Any, where: str, floats: list[tuple[str, float, float]]) -> str | None:
    """The first structural difference (keys, lengths, types, exact values), or None; the
    pairs of floats it passes go into ``floats`` for the ulp check."""
    at = where or "the answer"
    if type(ours) is not type(theirs):  # 1 and 1.0, True and 1: different answers
        return f"{at} is {_shown(ours)}, pyfunc's is {_shown(theirs)}"
    if isinstance(ours, dict):
        if ours.keys() != theirs.keys():
            return f"{at} has the keys {sorted(ours)}, pyfunc's {sorted(theirs)}"
        for key in ours:
            found = _walk(ours[key], theirs[key], f"{where}.{key}" if where else key, floats)
            if found is not None:
                return found
        return None
    if isinstance(ours, list):
        if len(ours) != len(theirs):
            return f"{at} has {len(ours)} items, pyfunc's {len(theirs)}"
        for index, (mine, other) in enumerate(zip(ours, theirs, strict=True)):
            found = _walk(mine, other, f"{where}[{index}]", floats)
            if found is not None:
                return found
        return None
    if isinstance(ours, float):
        floats.append((at, ours, theirs))
        return None
    return None if ours == theirs else f"{at} is {_shown(ours)}, pyfunc's is {_shown(theirs)}"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."
