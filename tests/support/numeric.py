"""How far apart two correct floating-point answers may be, derived from the arithmetic.

Two evaluations of the same network on the same rows may differ in the last bits: BLAS and
oneDNN choose kernels by CPU (AVX2, AVX-512, NEON...), by shape (a batch of six rows is not
one row six times) and by alignment, and those kernels add the same products in other orders,
with or without fused multiply-adds. No fixed ``rtol`` holds on every CPU: an output near
zero that cancels larger terms has a large relative error and is still correct.

What does hold is the rounding-error bound of a dot product (Higham, *Accuracy and Stability
of Numerical Algorithms*, 2nd ed., section 3.1): however a sum of ``n`` products is ordered,
``|computed - exact| <= gamma(n) * sum(|w_i| * |x_i|)`` with ``gamma(n) = n*u / (1 - n*u)``
and ``u = eps / 2`` the unit roundoff of the dtype. Carried through a network layer by
layer, it bounds each output; two correct evaluations are within twice that of each other.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def gamma(terms: int, dtype: Any) -> float:
    """Higham's gamma_n: the relative bound on a sum of ``terms`` rounded products in ``dtype``."""
    unit_roundoff = float(np.finfo(dtype).eps) / 2
    return terms * unit_roundoff / (1 - terms * unit_roundoff)


def mlp_error_bound(module: Any, rows: np.ndarray) -> np.ndarray:
    """For a network of linear layers and ReLUs (the demo's ``tiny-torch``), an upper bound on
    ``|computed - exact|`` of each output for ``rows``, whatever kernel computes it.

    Each linear layer ``y = W x + b`` sums ``n + 1`` terms (``n`` inputs and the bias), so it
    adds at most ``gamma(n + 1) * (|W| |x| + |b|)`` of its own and carries the error it was
    given through ``|W|``; a ReLU is exact and never grows an error.
    """
    parameters = [p.detach().double().numpy() for p in module.parameters()]
    magnitude = np.abs(rows.astype(np.float64))
    error = np.zeros_like(magnitude)
    for layer in _layers(module):
        if layer == "relu":
            continue
        assert layer == "linear", f"no rounding bound worked out for a {layer} layer"
        weight, bias = parameters.pop(0), parameters.pop(0)
        dtype = np.float32  # torch's default, and what the demo's model computes in
        # |x| as computed may exceed the exact |x| by the error carried in.
        magnitude = (magnitude + error) @ np.abs(weight).T + np.abs(bias)
        error = gamma(weight.shape[1] + 1, dtype) * magnitude + error @ np.abs(weight).T
    assert not parameters, "parameters left over: the network is not a plain stack of linear layers"
    return error


def _layers(module: Any) -> list[str]:
    graph = getattr(module, "graph", None)
    if graph is not None:  # torch.export'ed, as MLflow 3 logs PyTorch models
        # call_function targets read like "aten.linear.default"
        return [str(node.target).split(".")[1] for node in graph.nodes if node.op == "call_function"]
    return [type(child).__name__.lower() for child in module.children()]  # an nn.Sequential


def assert_within(actual: Any, desired: Any, bound: np.ndarray) -> None:
    """Every element of ``actual`` within ``bound`` of ``desired``, the message saying by how much."""
    actual_array, desired_array = np.asarray(actual, dtype=np.float64), np.asarray(desired, dtype=np.float64)
    assert actual_array.shape == desired_array.shape, (actual_array.shape, desired_array.shape)
    difference = np.abs(actual_array - desired_array)
    worst = np.unravel_index(np.argmax(difference - bound), difference.shape)
    assert np.all(difference <= bound), (
        f"{actual_array[worst]!r} and {desired_array[worst]!r} differ by {difference[worst]:.3g}, "
        f"more than rounding can explain ({np.broadcast_to(bound, difference.shape)[worst]:.3g})"
    )


def assert_far_from_ties(estimator: Any, rows: Any) -> None:
    """Class labels of a linear classifier compare exactly across kernels only if no row's two
    best scores are within rounding of each other: check that, so exact label comparisons hold
    by construction rather than by luck. Each score sums ``n`` products and the intercept."""
    features = np.asarray(rows, dtype=np.float64)
    named = pd.DataFrame(features, columns=getattr(estimator, "feature_names_in_", None))  # as it was fitted
    scores = np.asarray(estimator.decision_function(named))
    if scores.ndim == 1:  # two classes: one score against zero
        scores = np.stack([np.zeros_like(scores), scores], axis=1)
    slack = gamma(features.shape[1] + 1, np.float64) * (
        np.abs(features) @ np.abs(np.atleast_2d(estimator.coef_)).T + np.abs(estimator.intercept_)
    )
    ranked = np.sort(scores, axis=1)
    margin = ranked[:, -1] - ranked[:, -2]
    # each of the two scores may move by its own bound
    assert np.all(margin > 2 * slack.max(axis=1)), "a row sits within rounding of a tie between two classes"
