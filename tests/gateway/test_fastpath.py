"""The fast path either declines a body or answers what pyfunc answers: exactly, for the
classifiers and the torch network here; for a regression, to within a few ulps (the end of
this file, and tests/gateway/test_agreement.py).

Property tests: hypothesis generates request bodies (every JSON form, any column order,
ints and floats of any size, and near-misses: bools, strings, nulls, missing or extra
columns, ragged rows) and each one goes through both paths of a real loaded version.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.dataplane import fastpath
from gateway.dataplane.agreement import ULP_TOLERANCE
from gateway.dataplane.batching import Stages
from gateway.dataplane.inference import check_fast_path, score, score_batch
from gateway.dataplane.loader import FAST_PATH_TAG, LoadedModel, flavor_of
from gateway.demo import IRIS, TORCH, torch_available
from tests.conftest import IRIS_COLUMNS, Registry, empty_registry, running_gateway, settings_under
from tests.support.ci import missing
from tests.support.numeric import assert_far_from_ties, assert_within, mlp_error_bound
from tests.support.versions import vid

JSON = "application/json"


def loaded(registry: Registry, name: str, version: int) -> LoadedModel:
    pyfunc = registry.pyfunc(name, version)
    flavor = flavor_of(pyfunc.metadata)
    return LoadedModel(
        id=vid(name, version),
        pyfunc=pyfunc,
        metadata=pyfunc.metadata,
        path=Path("."),
        size_bytes=0,
        load_seconds=0.0,
        flavor=flavor,
        fast=fastpath.build(pyfunc, pyfunc.metadata, flavor),
        batching=True,
    )


@pytest.fixture(scope="module")
def iris(sqlite_registry: Registry) -> LoadedModel:
    model = loaded(sqlite_registry, IRIS, 2)
    assert model.fast is not None, "the demo's sklearn model should take the fast path"
    return model


@pytest.fixture(scope="module")
def tiny_torch(sqlite_registry: Registry) -> LoadedModel:
    if not torch_available():
        missing("torch is not installed (pip install '.[torch]')")
    model = loaded(sqlite_registry, TORCH, 1)
    assert model.fast is not None, "the demo's torch model should take the fast path"
    return model


def both_paths(model: LoadedModel, body: bytes) -> tuple[bytes | None, bytes | Exception]:
    """The fast path's answer (None if it declines) and pyfunc's answer or error."""
    assert model.fast is not None
    array = model.fast.decode(body, JSON)
    fast = None if array is None else _encode_fast(model, array)
    try:
        slow: bytes | Exception = score(model, body, JSON)
    except Exception as exc:
        slow = exc
    return fast, slow


def _encode_fast(model: LoadedModel, array: np.ndarray) -> bytes:
    from gateway.wire.mlflow_scoring import encode_predictions

    return encode_predictions(model.predict_fast(array))


def agree(model: LoadedModel, body: bytes) -> bool:
    """True when the fast path answered (and the test checked it matched pyfunc).

    Exactly, to the byte, because for these models exactness holds by construction: for
    torch both paths hand the same predict an array of the same values, dtype and shape, so
    the same kernel runs on the same numbers; for sklearn the answers are class labels, which
    float rounding could only change for a row within rounding of a tie between two classes."""
    fast, slow = both_paths(model, body)
    if fast is None:
        return False
    assert not isinstance(slow, Exception), f"fast path answered a body pyfunc rejects: {body!r} -> {slow}"
    assert fast == slow, body
    return True


# --- generated bodies ----------------------------------------------------------------------

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
numbers = st.one_of(finite, st.integers(min_value=-(2**70), max_value=2**70))
# What a client might put where a number belongs.
near_misses = st.one_of(
    st.booleans(), st.none(), st.text(max_size=4), st.just("1.5"), st.lists(finite, max_size=2), st.just(float("inf"))
)
values = st.one_of(numbers, numbers, numbers, near_misses)


@st.composite
def iris_bodies(draw: st.DrawFn) -> bytes:
    rows = draw(st.integers(min_value=1, max_value=5))
    columns = draw(st.permutations(IRIS_COLUMNS))
    if draw(st.booleans()):  # sometimes a column short, or one too many
        columns = draw(st.sampled_from([columns[:-1], [*columns, "extra"], columns]))
    data = [[draw(values) for _ in columns] for _ in range(rows)]
    form = draw(st.sampled_from(["dataframe_split", "dataframe_records", "instances", "inputs"]))
    if form == "dataframe_split":
        if data and draw(st.integers(0, 9)) == 0:
            data[0] = data[0][:-1]  # ragged
        document: dict[str, Any] = {form: {"columns": columns, "data": data}}
    else:
        document = {form: [dict(zip(columns, row, strict=True)) for row in data]}
    if draw(st.integers(0, 9)) == 0:
        document["params"] = {}
    return json.dumps(document).encode()  # the standard library writes ints past 64 bits too


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=iris_bodies())
def test_sklearn_fast_path_declines_or_matches_pyfunc(iris: LoadedModel, body: bytes) -> None:
    agree(iris, body)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.lists(finite.filter(lambda x: abs(x) < 1e30), min_size=4, max_size=4), min_size=1, max_size=8))
def test_sklearn_fast_path_takes_plain_numeric_rows(iris: LoadedModel, rows: list[list[float]]) -> None:
    body = orjson.dumps({"dataframe_split": {"columns": IRIS_COLUMNS, "data": rows}})
    assert agree(iris, body), "a plain numeric body must take the fast path"


@st.composite
def tensor_bodies(draw: st.DrawFn) -> bytes:
    rows = draw(st.integers(min_value=1, max_value=6))
    width = draw(st.sampled_from([4, 4, 4, 3, 5]))
    element = st.one_of(finite.filter(lambda x: abs(x) < 1e30), st.integers(-1000, 1000), near_misses)
    data = [[draw(element) for _ in range(width)] for _ in range(rows)]
    key = draw(st.sampled_from(["inputs", "instances"]))
    return orjson.dumps({key: data})


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=tensor_bodies())
@pytest.mark.torch
def test_pytorch_fast_path_declines_or_matches_pyfunc(tiny_torch: LoadedModel, body: bytes) -> None:
    agree(tiny_torch, body)


@pytest.mark.torch
def test_pytorch_plain_tensor_takes_the_fast_path(tiny_torch: LoadedModel) -> None:
    assert agree(tiny_torch, orjson.dumps({"inputs": [[0.1, 0.2, 0.3, 0.4], [1, 2, 3, 4]]}))


# --- batches -------------------------------------------------------------------------------


def test_a_batch_answers_each_request_as_it_would_alone(iris: LoadedModel) -> None:
    good = [
        orjson.dumps({"dataframe_split": {"columns": IRIS_COLUMNS, "data": [[5.1, 3.5, 1.4, 0.2]]}}),
        orjson.dumps({"dataframe_records": [dict(zip(IRIS_COLUMNS, [6.7, 3.0, 5.2, 2.3], strict=True))] * 3}),
        orjson.dumps({"instances": [dict(zip(IRIS_COLUMNS, [5.9, 3.0, 4.2, 1.5], strict=True))]}),
    ]
    bad = [b"{not json", orjson.dumps({"dataframe_split": {"columns": ["nope"], "data": [[1.0]]}})]
    csv = ",".join(IRIS_COLUMNS).encode() + b"\n5.1,3.5,1.4,0.2\n"
    requests = [(good[0], JSON), (bad[0], JSON), (good[1], JSON), (csv, "text/csv"), (bad[1], JSON), (good[2], JSON)]
    outcomes, fast = score_batch(iris, requests, Stages())
    assert fast == 3  # the three good JSON bodies shared one predict call
    # Labels from one call of four rows and from calls of one row compare exactly: no row is
    # within rounding of a tie between two classes.
    assert_far_from_ties(
        iris.pyfunc.get_raw_model(), [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
    )
    for (body, media_type), outcome in zip(requests, outcomes, strict=True):
        try:
            alone: bytes | Exception = score(iris, body, media_type)
        except Exception as exc:
            alone = exc
        if isinstance(alone, Exception):
            assert type(outcome) is type(alone) and str(outcome) == str(alone)
        else:
            assert outcome == alone


@pytest.mark.torch
def test_a_torch_batch_matches_single_requests_to_float_precision(tiny_torch: LoadedModel) -> None:
    rows = [[0.1 * i, 0.2, -0.3 * i, 0.4] for i in range(6)]
    requests = [(orjson.dumps({"inputs": [row]}), JSON) for row in rows]
    outcomes, fast = score_batch(tiny_torch, requests, Stages())
    assert fast == len(rows)
    network = tiny_torch.pyfunc.get_raw_model()
    for row, (body, _), outcome in zip(rows, requests, outcomes, strict=True):
        assert isinstance(outcome, bytes)
        alone = float32_predictions(score(tiny_torch, body, JSON))
        # One row alone and six rows together run different kernels, which sum in other
        # orders: equal only to within the float32 rounding bound of the network's sums.
        bound = 2 * mlp_error_bound(network, np.asarray([row], dtype=np.float32))
        assert_within(float32_predictions(outcome), alone, bound)


@pytest.mark.torch
def test_the_same_torch_batch_twice_gives_the_same_bits(tiny_torch: LoadedModel) -> None:
    # Same rows, same shape, same kernel: nothing may differ, not even the last bit.
    requests = [(orjson.dumps({"inputs": [[0.1 * i, 0.2, -0.3 * i, 0.4]]}), JSON) for i in range(6)]
    first, _ = score_batch(tiny_torch, requests, Stages())
    second, _ = score_batch(tiny_torch, requests, Stages())
    assert first == second


def float32_predictions(answer: bytes) -> np.ndarray:
    # The JSON holds each float32 in its shortest decimal form, which reads back exactly as float32.
    return np.asarray(orjson.loads(answer)["predictions"], dtype=np.float32)


def test_a_frame_of_no_rows_fails_in_a_batch_as_it_does_alone(iris: LoadedModel) -> None:
    """Joined to other frames it was an empty slice of their answer: 200 where alone is 400."""
    from gateway.errors import ModelRaised

    pyfunc_only = LoadedModel(**{**iris.__dict__, "queue": None, "fast": None})
    good = orjson.dumps({"dataframe_split": {"columns": IRIS_COLUMNS, "data": [[5.1, 3.5, 1.4, 0.2]]}})
    empty = orjson.dumps({"dataframe_split": {"columns": IRIS_COLUMNS, "data": []}})
    with pytest.raises(ModelRaised):
        score(pyfunc_only, empty, JSON)
    outcomes, _ = score_batch(pyfunc_only, [(good, JSON), (empty, JSON), (good, JSON)], Stages())
    assert isinstance(outcomes[0], bytes) and isinstance(outcomes[2], bytes)
    assert isinstance(outcomes[1], ModelRaised)


def test_a_pyfunc_model_tagged_for_batching_concatenates_frames(sqlite_registry: Registry) -> None:
    from tests.support.models import Doubler, log_pyfunc

    version = sqlite_registry.log(log_pyfunc, "batched-doubler", Doubler())
    model = loaded(sqlite_registry, "batched-doubler", version)
    assert model.fast is None  # generic pyfunc: no fast path
    requests = [(orjson.dumps({"dataframe_records": [{"x": float(i)}] * (i + 1)}), JSON) for i in range(4)]
    requests.append((b"{not json", JSON))
    outcomes, fast = score_batch(model, requests, Stages())
    assert fast == 0
    for i in range(4):
        assert orjson.loads(outcomes[i]) == {"predictions": [2.0 * i] * (i + 1)}  # type: ignore[arg-type]
    assert isinstance(outcomes[4], Exception) and "JSON" in str(outcomes[4])


def test_a_fast_path_that_disagrees_on_the_warm_up_is_switched_off(iris: LoadedModel) -> None:
    assert iris.fast is not None
    wrong = LoadedModel(**{**iris.__dict__, "queue": None})
    wrong.fast = fastpath.FastPath(iris.fast._decode, lambda array: np.zeros(len(array), dtype=np.int64) + 7)
    assert check_fast_path(wrong).fast is None
    assert wrong.fast_reason == (
        "pyfunc: the fast path disagreed with pyfunc on the warm-up request: predictions[0] is 7, pyfunc's is 0"
    )
    right = LoadedModel(**{**iris.__dict__, "queue": None})
    assert check_fast_path(right).fast is iris.fast
    assert right.fast_reason.endswith("; the warm-up request answered as through pyfunc"), right.fast_reason


def test_models_the_fast_path_cannot_read_safely_get_none(sqlite_registry: Registry) -> None:
    from tests.support.models import Doubler, log_pyfunc

    version = sqlite_registry.log(log_pyfunc, "plain-pyfunc", Doubler())
    pyfunc = sqlite_registry.pyfunc("plain-pyfunc", version)
    assert fastpath.build(pyfunc, pyfunc.metadata, "python_function") is None


def test_the_sklearn_fast_path_predicts_arrays_without_feature_name_warnings(iris: LoadedModel) -> None:
    # The estimator was fitted on a frame with names; the fast path hands it arrays. sklearn
    # warns about that on every call unless the fast path's estimator takes arrays by design.
    body = orjson.dumps({"dataframe_split": {"columns": IRIS_COLUMNS, "data": [[5.1, 3.5, 1.4, 0.2]]}})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert agree(iris, body)
    assert hasattr(iris.pyfunc.get_raw_model(), "feature_names_in_"), "the loaded model itself is left as it was"


def _log_scaled_iris() -> int:
    import mlflow.sklearn
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from gateway.demo import iris_frame

    features, target = iris_frame()
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(features, target)
    info = mlflow.sklearn.log_model(
        pipeline,
        name="model",
        registered_model_name="scaled-iris",
        input_example=features.head(2),
        pip_requirements=["scikit-learn"],
    )
    return int(info.registered_model_version)


def test_a_pipeline_fitted_with_names_takes_the_fast_path_without_warnings(sqlite_registry: Registry) -> None:
    model = loaded(sqlite_registry, "scaled-iris", sqlite_registry.log(_log_scaled_iris))
    assert model.fast is not None
    rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert agree(model, orjson.dumps({"dataframe_split": {"columns": IRIS_COLUMNS, "data": rows}}))


# --- floats: the same answer to within a few ulps ------------------------------------------
# A regression's answers are floats, and the two paths give sklearn the same numbers in two
# memory layouts (a C-ordered array, a frame's Fortran-ordered one): BLAS sums each row in
# another order and may round the last bit differently (gateway/dataplane/agreement.py).

RIDGE = "ridge"
RIDGE_COLUMNS = [f"x{i}" for i in range(13)]


def _log_ridge(model: Any, example: np.ndarray) -> int:
    import mlflow.sklearn

    info = mlflow.sklearn.log_model(
        model,
        name="model",
        registered_model_name=RIDGE,
        input_example=pd.DataFrame(example, columns=RIDGE_COLUMNS),
        pip_requirements=["scikit-learn"],
    )
    return int(info.registered_model_version)


def _ulps_between_paths(model: LoadedModel, rows: np.ndarray) -> int:
    assert model.fast is not None
    body = orjson.dumps({"dataframe_split": {"columns": RIDGE_COLUMNS, "data": rows.tolist()}})
    array = model.fast.decode(body, JSON)
    assert array is not None
    fast = np.asarray(model.predict_fast(array), dtype=np.float64).ravel()
    pyfunc = np.asarray(orjson.loads(score(model, body, JSON))["predictions"], dtype=np.float64).ravel()
    return ulps_apart(fast, pyfunc)


def ulps_apart(a: np.ndarray, b: np.ndarray) -> int:
    """The most float64 steps between two answers, counted here, not by the gateway's own
    comparison (the expectation it is checked against): on the bit patterns, made monotonic so
    that both signs count through zero."""

    def ordered(x: np.ndarray) -> np.ndarray:
        bits = x.astype(np.float64).view(np.int64).astype(object)  # Python ints: no overflow
        return np.array([b if b >= 0 else -(b & 0x7FFFFFFFFFFFFFFF) for b in bits], dtype=object)

    assert a.shape == b.shape
    return int(max((abs(x - y) for x, y in zip(ordered(a), ordered(b), strict=True)), default=0))


@dataclass(frozen=True)
class Ridges:
    registry: Registry
    ulps: int  # how far apart the two paths answer version 2's serving example here (1 where the BLAS lets it),
    # counted by ulps_apart, not by the gateway

    @property
    def one_ulp(self) -> bool:
        return self.ulps == 1


@pytest.fixture(scope="module")
def ridges(tmp_path_factory: pytest.TempPathFactory) -> Ridges:
    """A registry of its own holding one fitted Ridge regression three times: version 1 with
    any serving example, version 2 with two rows on which this machine's BLAS answers the two
    paths exactly one ulp apart (where it does: not every BLAS build orders the two kernels'
    sums differently; elsewhere two rows of the training set), version 3 tagged
    gateway.fast_path=false; and a plain pyfunc model, "doubler"."""
    from sklearn.linear_model import Ridge

    from tests.support.models import Doubler, log_pyfunc

    registry = empty_registry(tmp_path_factory.mktemp("ridge-registry"))
    rng = np.random.default_rng(7)
    features = rng.normal(size=(200, len(RIDGE_COLUMNS)))
    target = features @ rng.normal(size=len(RIDGE_COLUMNS)) + 3.0
    ridge = Ridge().fit(pd.DataFrame(features, columns=RIDGE_COLUMNS), target)
    first = registry.log(_log_ridge, ridge, features[:2])
    model = loaded(registry, RIDGE, first)
    # Rows whose answers differ by an ulp between the paths (a third of random pairs do here).
    one_ulp = next(
        (rows for rows in rng.normal(size=(300, 2, len(RIDGE_COLUMNS))) if _ulps_between_paths(model, rows) == 1), None
    )
    example = one_ulp if one_ulp is not None else features[2:4]
    ulps = _ulps_between_paths(model, example)
    assert registry.log(_log_ridge, ridge, example) == 2
    assert registry.log(_log_ridge, ridge, example) == 3
    registry.client.set_model_version_tag(RIDGE, "3", FAST_PATH_TAG, "false")
    registry.log(log_pyfunc, "doubler", Doubler())
    return Ridges(registry, ulps)


def loaded_with_files(registry: Registry, name: str, version: int, where: Path) -> LoadedModel:
    """:func:`loaded`, with its files on disk: the warm-up request is its serving example."""
    import mlflow.artifacts

    from gateway.demo import using_registry

    with using_registry(registry.tracking_uri):
        files = mlflow.artifacts.download_artifacts(f"models:/{name}/{version}", dst_path=str(where))
    return LoadedModel(**{**loaded(registry, name, version).__dict__, "path": Path(files)})


def test_a_ridge_whose_paths_answer_an_ulp_apart_keeps_the_fast_path(ridges: Ridges, tmp_path: Path) -> None:
    if not ridges.one_ulp:  # a property of the BLAS build, not a tool CI could install
        pytest.skip("this machine's BLAS sums both layouts alike: no rows whose answers are an ulp apart")
    model = loaded_with_files(ridges.registry, RIDGE, 2, tmp_path)
    fast = model.fast
    assert fast is not None and _ulps_between_paths(model, np.array(_serving_rows(model))) == 1
    assert check_fast_path(model).fast is fast
    assert model.fast_reason == (
        "fast path; the warm-up request answered within 1 ulp (float64) of pyfunc, at most 4 agree"
    )


def test_a_fast_path_further_off_than_the_tolerance_is_switched_off_saying_by_how_much(
    ridges: Ridges, tmp_path: Path
) -> None:
    model = loaded_with_files(ridges.registry, RIDGE, 2, tmp_path)
    assert model.fast is not None
    predict = model.fast.predict
    model.fast.predict = lambda array: predict(array) * (1 + 2**-40)  # a fast path that is wrong by ~4096 ulps
    assert check_fast_path(model).fast is None
    # the worst float is named, with both values and how far apart they are
    assert re.fullmatch(
        r"pyfunc: the fast path disagreed with pyfunc on the warm-up request: predictions\[[01]\] is \S+, "
        r"pyfunc's is \S+ \(\d{4} ulps of float64 apart; at most 4 agree\)",
        model.fast_reason,
    ), model.fast_reason


def _serving_rows(model: LoadedModel) -> list[list[float]]:
    from gateway.dataplane.warmup import warmup_request

    request = warmup_request(model)
    assert request is not None
    return orjson.loads(request[0])["dataframe_split"]["data"]  # type: ignore[no-any-return]


@pytest.mark.anyio
async def test_the_version_says_which_path_serves_it_and_why(ridges: Ridges, tmp_path: Path) -> None:
    n = ridges.ulps
    agreed = f"within {n} ulp{'s' if n > 1 else ''} (float64) of pyfunc, at most {ULP_TOLERANCE} agree"
    agreed = agreed if n else "as through pyfunc"
    async with running_gateway(settings_under(tmp_path), ridges.registry.tracking_uri) as gateway:
        client = gateway.client
        expected = {
            (RIDGE, 2): ("fast", f"fast path: sklearn on double columns; the warm-up request answered {agreed}"),
            (RIDGE, 3): ("pyfunc", "pyfunc: tagged gateway.fast_path=false"),
            ("doubler", 1): (
                "pyfunc",
                "pyfunc: no fast path for pyfunc.model models "
                "(only sklearn, xgboost, lightgbm, catboost and pytorch have one)",
            ),
        }
        for (name, version), (path, reason) in expected.items():
            body = {"dataframe_split": {"columns": RIDGE_COLUMNS, "data": [[0.5] * len(RIDGE_COLUMNS)]}}
            if name == "doubler":
                body = {"dataframe_split": {"columns": ["x"], "data": [[0.5]]}}
            answer = await client.post(f"/models/{name}/versions/{version}/predict", json=body)
            assert answer.status_code == 200, answer.text
            loaded_state = (await client.get(f"/models/{name}/versions/{version}")).json()["loaded"]
            assert (loaded_state["path"], loaded_state["path_reason"]) == (path, reason), (name, version)
