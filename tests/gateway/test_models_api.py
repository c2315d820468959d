"""What operators and application teams read: /models, health, metrics, the OpenAPI page."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.demo import IRIS, TORCH, torch_available
from tests.conftest import IRIS_COLUMNS, Gateway, Registry, iris_split

pytestmark = pytest.mark.anyio

ROW = iris_split([[5.1, 3.5, 1.4, 0.2]])


async def test_models_lists_every_registered_model(gateway: Gateway, registry: Registry) -> None:
    response = await gateway.client.get("/models")
    assert response.status_code == 200
    models = {m["name"]: m for m in response.json()["models"]}
    assert set(registry.versions) <= set(models)
    iris = models[IRIS]
    assert iris["aliases"] == {"champion": 1, "challenger": 2}
    assert iris["versions"] == [1, 2] and iris["latest_version"] == 2
    assert iris["loaded_versions"] == []
    await gateway.client.post(f"/models/{IRIS}/versions/champion/predict", json=ROW)
    models = {m["name"]: m for m in (await gateway.client.get("/models")).json()["models"]}
    assert models[IRIS]["loaded_versions"] == [1]


async def test_model_detail_shows_versions_aliases_and_what_serves_by_default(gateway: Gateway) -> None:
    response = await gateway.client.get(f"/models/{IRIS}")
    assert response.status_code == 200
    body = response.json()
    assert body["default_version"] == 1  # the champion
    assert [v["version"] for v in body["versions"]] == [2, 1]
    assert {v["version"]: v["aliases"] for v in body["versions"]} == {1: ["champion"], 2: ["challenger"]}
    assert all(v["status"] == "READY" and v["loaded"] is None for v in body["versions"])


async def test_version_detail_has_signature_and_an_example_that_works(gateway: Gateway) -> None:
    response = await gateway.client.get(f"/models/{IRIS}/versions/challenger")
    assert response.status_code == 200, response.text
    detail = response.json()
    assert detail["version"] == 2 and detail["aliases"] == ["challenger"]
    assert "sklearn" in detail["flavors"]
    assert [col["name"] for col in detail["signature"]["inputs"]] == IRIS_COLUMNS
    assert detail["loaded"] is None  # reading metadata does not load the model
    # The logged example is a ready-made request body.
    answer = await gateway.client.post(f"/models/{IRIS}/versions/2/predict", json=detail["input_example"])
    assert answer.status_code == 200, answer.text
    detail = (await gateway.client.get(f"/models/{IRIS}/versions/2")).json()
    loaded = detail["loaded"]
    assert loaded["flavor"] == "sklearn" and loaded["size_bytes"] > 1000 and loaded["uses"] == 1
    assert loaded["in_use"] == 0 and loaded["last_used"] >= loaded["loaded_at"]


async def test_health(gateway: Gateway) -> None:
    assert (await gateway.client.get("/health/live")).json() == {
        "status": "ok",
        "loaded_models": None,
        "loaded_bytes": None,
    }
    ready = await gateway.client.get("/health/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ok"


async def test_metrics_count_requests_per_model_and_version(gateway: Gateway) -> None:
    for _ in range(3):
        await gateway.client.post(f"/models/{IRIS}/versions/1/predict", json=ROW)
    await gateway.client.post(f"/models/{IRIS}/versions/1/predict", json={"nope": 1})
    await gateway.client.post("/models/never-registered/predict", json=ROW)
    response = await gateway.client.get("/metrics")
    assert response.status_code == 200
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }

    def sample(name: str, **labels: str) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    assert sample("gateway_requests_total", model=IRIS, version="1", status="200") == 3
    assert sample("gateway_requests_total", model=IRIS, version="1", status="400") == 1
    assert sample("gateway_requests_total", model="_unknown", version="_unknown", status="404") == 1
    assert sample("gateway_request_duration_seconds_count", model=IRIS, version="1") == 4
    assert sample("gateway_cache_misses_total", model=IRIS) == 1
    assert sample("gateway_cache_hits_total", model=IRIS) == 3
    assert sample("gateway_model_loads_total", model=IRIS, version="1", outcome="success") == 1
    assert sample("gateway_model_load_seconds_count", model=IRIS) == 1
    assert sample("gateway_loaded_models") == 1
    assert sample("gateway_loaded_bytes") > 1000


async def test_openapi_examples_work_against_the_models_they_name(gateway: Gateway) -> None:
    spec = (await gateway.client.get("/openapi.json")).json()
    assert (await gateway.client.get("/docs")).status_code == 200
    operation = spec["paths"]["/models/{name}/versions/{version}/predict"]["post"]
    content = operation["requestBody"]["content"]
    # The predict routes read their parameters themselves; /docs must still show them.
    documented = {(p["in"], p["name"]) for p in operation["parameters"]}
    assert documented == {("path", "name"), ("path", "version"), ("header", "X-Model-Version")}
    default = spec["paths"]["/models/{name}/predict"]["post"]
    assert {(p["in"], p["name"]) for p in default["parameters"]} == {("path", "name"), ("header", "X-Model-Version")}
    tried = 0
    for key, example in content["application/json"]["examples"].items():
        model = TORCH if "torch" in example["summary"] else IRIS
        if model == TORCH and not torch_available():
            continue
        response = await gateway.client.post(f"/models/{model}/versions/champion/predict", json=example["value"])
        assert response.status_code == 200, (key, response.text)
        tried += 1
    assert tried >= 3
    csv = content["text/csv"]["example"]
    response = await gateway.client.post(
        f"/models/{IRIS}/versions/champion/predict", content=csv, headers={"content-type": "text/csv"}
    )
    assert response.status_code == 200, response.text


async def test_openapi_documents_the_400_invalid_parameters_really_get(gateway: Gateway) -> None:
    spec = (await gateway.client.get("/openapi.json")).json()
    error_body = {"$ref": "#/components/schemas/ErrorBody"}
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            assert "422" not in operation["responses"], (method, path)
            if "400" in operation["responses"]:
                assert operation["responses"]["400"]["content"]["application/json"]["schema"] == error_body
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    assert "400" in spec["paths"]["/events"]["get"]["responses"]
    response = await gateway.client.get("/events", params={"limit": 0})
    assert response.status_code == 400
    assert response.json()["error_code"] == "INVALID_PARAMETER_VALUE" and "limit" in response.json()["message"]
