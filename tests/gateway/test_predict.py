"""Predictions through the gateway, on both a sqlite registry and a real `mlflow server`."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from gateway.demo import IRIS, TORCH, iris_frame, torch_available
from tests.conftest import IRIS_COLUMNS, Gateway, Registry, iris_split
from tests.support.ci import needs
from tests.support.numeric import assert_far_from_ties, assert_within, mlp_error_bound

pytestmark = pytest.mark.anyio

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]


def _bodies(rows: list[list[float]]) -> dict[str, tuple[str, bytes | str | dict[str, object]]]:
    frame = pd.DataFrame(rows, columns=IRIS_COLUMNS)
    return {
        "dataframe_split": ("application/json", iris_split(rows)),
        "dataframe_records": ("application/json", {"dataframe_records": frame.to_dict(orient="records")}),
        "instances": ("application/json", {"instances": frame.to_dict(orient="records")}),
        "inputs": ("application/json", {"inputs": frame.to_dict(orient="list")}),
        "csv": ("text/csv", frame.to_csv(index=False)),
    }


@pytest.mark.parametrize("form", ["dataframe_split", "dataframe_records", "instances", "inputs", "csv"])
async def test_every_input_form_predicts_what_pyfunc_predicts(gateway: Gateway, registry: Registry, form: str) -> None:
    expected = registry.pyfunc(IRIS, 2).predict(pd.DataFrame(ROWS, columns=IRIS_COLUMNS))
    content_type, body = _bodies(ROWS)[form]
    if isinstance(body, dict):
        response = await gateway.client.post(f"/models/{IRIS}/versions/2/predict", json=body)
    else:
        response = await gateway.client.post(
            f"/models/{IRIS}/versions/2/predict", content=body, headers={"content-type": content_type}
        )
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": np.asarray(expected).tolist()}


async def test_the_whole_dataset_matches_pyfunc_row_for_row(gateway: Gateway, registry: Registry) -> None:
    features, _ = iris_frame()
    for version in registry.versions[IRIS]:
        reference = registry.pyfunc(IRIS, version)
        # 150 rows through the fast path against pyfunc's frame: other memory layouts, maybe other
        # kernels; the labels still agree exactly because no row is within rounding of a tie.
        assert_far_from_ties(reference.get_raw_model(), features)
        expected = reference.predict(features)
        body = {"dataframe_split": features.to_dict(orient="split", index=False)}
        response = await gateway.client.post(f"/models/{IRIS}/versions/{version}/predict", json=body)
        assert response.status_code == 200, response.text
        assert response.json()["predictions"] == expected.tolist()
    # The two versions really are different models, so routing to the wrong one would show.
    first, second = (registry.pyfunc(IRIS, v).predict(features) for v in registry.versions[IRIS])
    assert (first != second).any()


async def test_ints_are_accepted_for_double_columns_like_mlflow_serve(gateway: Gateway) -> None:
    response = await gateway.client.post(f"/models/{IRIS}/versions/1/predict", json=iris_split([[5, 3, 1, 0]]))
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 1


@needs(torch_available(), "torch is not installed (the [torch] extra)")
async def test_torch_model_predicts_what_pyfunc_predicts(gateway: Gateway, registry: Registry) -> None:
    rows = np.random.default_rng(7).random((5, 4), dtype=np.float32)
    reference = registry.pyfunc(TORCH, 1)
    expected = reference.predict(rows)
    response = await gateway.client.post(f"/models/{TORCH}/versions/champion/predict", json={"inputs": rows.tolist()})
    assert response.status_code == 200, response.text
    assert response.headers["x-model-alias"] == "champion"
    # Another loaded copy of the model, on arrays allocated elsewhere: equal to within the
    # float32 rounding bound of the network's sums (tests/support/numeric.py), not bit for bit.
    # The JSON holds each float32 in its shortest form, which reads back exactly as float32.
    served = np.asarray(response.json()["predictions"], dtype=np.float32)
    assert_within(served, expected, 2 * mlp_error_bound(reference.get_raw_model(), rows))


@pytest.mark.parametrize(
    ("selector", "version", "alias"),
    [("1", 1, None), ("2", 2, None), ("champion", 1, "champion"), ("challenger", 2, "challenger"), ("latest", 2, None)],
)
async def test_path_selector_picks_the_version_and_says_so(
    gateway: Gateway, selector: str, version: int, alias: str | None
) -> None:
    response = await gateway.client.post(f"/models/{IRIS}/versions/{selector}/predict", json=iris_split(ROWS[:1]))
    assert response.status_code == 200, response.text
    assert response.headers["x-model-name"] == IRIS
    assert response.headers["x-model-version"] == str(version)
    assert response.headers.get("x-model-alias") == alias


@pytest.mark.parametrize(("header", "version"), [("2", 2), ("challenger", 2), ("LATEST", 2), ("champion", 1)])
async def test_header_picks_the_version(gateway: Gateway, header: str, version: int) -> None:
    response = await gateway.client.post(
        f"/models/{IRIS}/predict", json=iris_split(ROWS[:1]), headers={"X-Model-Version": header}
    )
    assert response.status_code == 200, response.text
    assert response.headers["x-model-version"] == str(version)


async def test_without_header_the_default_alias_serves(gateway: Gateway) -> None:
    response = await gateway.client.post(f"/models/{IRIS}/predict", json=iris_split(ROWS[:1]))
    assert response.status_code == 200
    assert (response.headers["x-model-version"], response.headers["x-model-alias"]) == ("1", "champion")


async def test_default_alias_is_a_setting(make_gateway) -> None:  # type: ignore[no-untyped-def]
    async with make_gateway(default_alias="challenger") as gateway:
        response = await gateway.client.post(f"/models/{IRIS}/predict", json=iris_split(ROWS[:1]))
    assert (response.headers["x-model-version"], response.headers["x-model-alias"]) == ("2", "challenger")


async def test_without_the_default_alias_latest_serves(gateway: Gateway, registry: Registry) -> None:
    response = await gateway.client.post("/models/doubler/predict", json={"dataframe_records": [{"x": 1.5}]})
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": [3.0]}
    assert response.headers["x-model-version"] == str(max(registry.versions["doubler"]))
    assert "x-model-alias" not in response.headers


async def test_path_and_header_that_agree_are_fine(gateway: Gateway) -> None:
    response = await gateway.client.post(
        f"/models/{IRIS}/versions/champion/predict", json=iris_split(ROWS[:1]), headers={"X-Model-Version": "1"}
    )
    assert response.status_code == 200
    assert response.headers["x-model-version"] == "1"


async def test_path_and_header_that_disagree_are_refused(gateway: Gateway) -> None:
    response = await gateway.client.post(
        f"/models/{IRIS}/versions/1/predict", json=iris_split(ROWS[:1]), headers={"X-Model-Version": "challenger"}
    )
    assert response.status_code == 400
    body = response.json()
    assert body["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "challenger" in body["message"] and "X-Model-Version" in body["message"]


async def test_a_version_registered_after_start_is_found_without_waiting_for_the_ttl(
    gateway: Gateway, registry: Registry
) -> None:
    from tests.support.models import Doubler, log_pyfunc

    name = f"late-{registry.kind}"
    first = registry.log(log_pyfunc, name, Doubler())
    response = await gateway.client.post(f"/models/{name}/versions/{first}/predict", json={"inputs": {"x": [1.0]}})
    assert response.status_code == 200, response.text
    second = registry.log(log_pyfunc, name, Doubler())
    registry.client.set_registered_model_alias(name, "champion", str(second))
    response = await gateway.client.post(f"/models/{name}/versions/{second}/predict", json={"inputs": {"x": [2.0]}})
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": [4.0]}
    assert response.headers["x-model-version"] == str(second)


async def test_csv_with_charset_is_accepted(gateway: Gateway) -> None:
    buffer = io.StringIO()
    pd.DataFrame(ROWS, columns=IRIS_COLUMNS).to_csv(buffer, index=False)
    response = await gateway.client.post(
        f"/models/{IRIS}/versions/1/predict",
        content=buffer.getvalue(),
        headers={"content-type": "text/csv; charset=utf-8"},
    )
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 3
