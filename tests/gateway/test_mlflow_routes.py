"""`mlflow models serve`'s own routes, so its clients switch by changing the host: POST
/invocations (GATEWAY_DEFAULT_MODEL), /models/{name}[/versions/{v}]/invocations, and the probes
/ping, /health and /version (issue 25)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import mlflow
import pytest

from gateway.demo import IRIS
from gateway.settings import GatewaySettings, SettingsError, load_settings
from tests.conformance import harness
from tests.conformance import models as kinds
from tests.conformance.corpus import corpus
from tests.conftest import Gateway, Registry, iris_split

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def registry(sqlite_registry: Registry) -> Registry:
    return sqlite_registry


async def test_the_probes_answer_as_mlflow_models_serve_does(gateway: Gateway) -> None:
    for path in ("/ping", "/health"):
        response = await gateway.client.get(path)
        assert response.status_code == 200 and response.text == "\n"
    version = await gateway.client.get("/version")
    assert version.status_code == 200 and version.text == mlflow.__version__


async def test_invocations_without_a_default_model_says_which_setting(gateway: Gateway) -> None:
    response = await gateway.client.post("/invocations", json={"inputs": [[1.0, 2.0, 3.0, 4.0]]})
    assert response.status_code == 404
    assert response.json()["error_code"] == "ENDPOINT_NOT_FOUND"
    assert "GATEWAY_DEFAULT_MODEL" in response.json()["message"]


async def test_every_invocations_path_answers_the_corpus_as_predict_does(
    make_gateway: Callable[..., AbstractAsyncContextManager[Gateway]], registry: Registry
) -> None:
    """The conformance corpus (tests/conformance: the gateway's /predict answers as MLflow's
    scoring server does) through each of MLflow's paths: the same status, code and body."""
    first, second = registry.versions[IRIS]
    cases = corpus(kinds.IRIS)
    forms = {
        f"iris/{second}": "/invocations",
        "iris@challenger": "/invocations",
        "iris": "/invocations",  # the default route: champion
    }
    for default_model, path in forms.items():
        async with make_gateway(default_model=default_model) as gw:
            reference_url = {
                f"iris/{second}": f"/models/{IRIS}/versions/{second}/predict",
                "iris@challenger": f"/models/{IRIS}/versions/challenger/predict",
                "iris": f"/models/{IRIS}/predict",
            }[default_model]
            reference = await harness.alone(gw.client, reference_url, cases)
            assert await harness.alone(gw.client, path, cases) == reference, default_model
            assert await harness.alone(gw.client, f"/models/{IRIS}/versions/{second}/invocations", cases) == (
                await harness.alone(gw.client, f"/models/{IRIS}/versions/{second}/predict", cases)
            )
            assert await harness.alone(gw.client, f"/models/{IRIS}/invocations", cases) == (
                await harness.alone(gw.client, f"/models/{IRIS}/predict", cases)
            )
        assert sum(a.status == 200 for a in reference.values()) > 10  # most cases answer
    async with make_gateway(default_model=f"iris/{first}") as gw:
        served = await gw.client.post("/invocations", json=iris_split([[5.1, 3.5, 1.4, 0.2]]))
        assert served.status_code == 200, served.text
        assert served.headers["X-Model-Name"] == IRIS and served.headers["X-Model-Version"] == str(first)


@pytest.mark.parametrize("value", ["@champion", "iris@", "iris/", "iris/-1 x", "/1"])
def test_a_default_model_that_names_nothing_stops_the_settings(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_DEFAULT_MODEL", value)
    with pytest.raises(SettingsError, match="GATEWAY_DEFAULT_MODEL"):
        load_settings()


def test_the_default_model_forms() -> None:
    forms: dict[str, Any] = {"iris": ("iris", None), "iris@champion": ("iris", "champion"), "a/b/3": ("a/b", "3")}
    for value, target in forms.items():
        assert GatewaySettings(default_model=value).default_target == target
    assert GatewaySettings().default_target is None
