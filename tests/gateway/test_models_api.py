"""What operators and application teams read: /models, health, metrics, the OpenAPI page."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.demo import IRIS
from tests.conftest import IRIS_COLUMNS, Gateway, Registry, iris_split
from tests.support.waiting import eventually

pytestmark = pytest.mark.anyio

ROW = iris_split([[5.1, 3.5, 1.4, 0.2]])
CSV = {"content-type": "text/csv"}


async def test_models_lists_every_registered_model(gateway: Gateway, registry: Registry) -> None:
    response = await gateway.client.get("/models")
    assert response.status_code == 200
    models = {m["name"]: m for m in response.json()["models"]}
    assert set(registry.versions) <= set(models)
    assert (response.json()["registry"], response.json()["note"]) == (registry.tracking_uri, None)
    iris = models[IRIS]
    assert iris["aliases"] == {"champion": 1, "challenger": 2}
    assert iris["versions"] == [2, 1] and iris["latest_version"] == 2  # newest first, as in /models/{name}
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
    assert loaded["in_use"] == 0
    # Timestamps are ISO 8601 in UTC, as everywhere else in the answers.
    loaded_at, last_used, first_seen = (
        datetime.fromisoformat(detail[key] if key == "first_seen" else loaded[key])
        for key in ("loaded_at", "last_used", "first_seen")
    )
    assert all(moment.utcoffset() == timedelta(0) for moment in (loaded_at, last_used, first_seen))
    assert first_seen <= loaded_at <= last_used <= datetime.now(UTC)


async def test_health(gateway: Gateway, registry: Registry) -> None:
    assert (await gateway.client.get("/health/live")).json() == {"status": "ok"}
    ready = await gateway.client.get("/health/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ok"
    assert ready.json()["registered_models"] >= len(registry.versions) and ready.json()["note"] is None


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


def _example(parameter: dict[str, Any]) -> str:
    """The value /docs fills in for a parameter: its first example."""
    return str(next(iter(parameter["examples"].values()))["value"])


PREDICT_PATHS = ("/models/{name}/versions/{version}/predict", "/models/{name}/predict")


async def test_openapi_examples_run_as_they_are(gateway: Gateway) -> None:
    spec = (await gateway.client.get("/openapi.json")).json()
    assert (await gateway.client.get("/docs")).status_code == 200
    operation = spec["paths"]["/models/{name}/versions/{version}/predict"]["post"]
    # The predict routes read their parameters themselves; /docs must still show them.
    documented = {(p["in"], p["name"]) for p in operation["parameters"]}
    assert documented == {("path", "name"), ("path", "version"), ("header", "X-Model-Version")}
    default = spec["paths"]["/models/{name}/predict"]["post"]
    assert {(p["in"], p["name"]) for p in default["parameters"]} == {("path", "name"), ("header", "X-Model-Version")}
    tried = 0
    for template in PREDICT_PATHS:
        operation = spec["paths"][template]["post"]
        # Every body example, sent with the parameters /docs fills in beside it, as it is.
        path = template
        for parameter in operation["parameters"]:
            if parameter["in"] == "path":
                path = path.replace("{" + parameter["name"] + "}", _example(parameter))
        content = operation["requestBody"]["content"]
        for key, example in content["application/json"]["examples"].items():
            response = await gateway.client.post(path, json=example["value"])
            assert response.status_code == 200, (path, key, response.text)
            tried += 1
        response = await gateway.client.post(path, content=content["text/csv"]["example"], headers=CSV)
        assert response.status_code == 200, (path, response.text)
    assert tried >= 8
    for template in ("/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer"):
        operation = spec["paths"][template]["post"]
        path = template
        for parameter in operation["parameters"]:
            path = path.replace("{" + parameter["name"] + "}", _example(parameter))
        for key, example in operation["requestBody"]["content"]["application/json"]["examples"].items():
            response = await gateway.client.post(path, json=example["value"])
            assert response.status_code == 200, (path, key, response.text)
            assert [len(output["data"]) for output in response.json()["outputs"]] == [2]  # its two rows
    for template in ("/models/{name}", "/models/{name}/versions/{version}"):
        path = template
        for parameter in spec["paths"][template]["get"]["parameters"]:
            path = path.replace("{" + parameter["name"] + "}", _example(parameter))
        assert (await gateway.client.get(path)).status_code == 200, path
    for template in ("/models/{name}/jobs", "/models/{name}/versions/{version}/jobs"):
        # The inline job's example is queued and succeeds (the files' one names S3 buckets).
        operation = spec["paths"][template]["post"]
        path = template
        for parameter in operation["parameters"]:
            path = path.replace("{" + parameter["name"] + "}", _example(parameter))
        inline = operation["requestBody"]["content"]["application/json"]["examples"]["inline"]["value"]
        submitted = await gateway.client.post(path, json=inline)
        assert submitted.status_code == 202, (path, submitted.text)
        job = submitted.headers["location"]

        async def ended(job: str = job) -> dict[str, Any] | None:
            document: dict[str, Any] = (await gateway.client.get(job)).json()
            return document if document["state"] not in ("queued", "running") else None

        assert (await eventually(ended, f"the job {path}'s example queued"))["state"] == "succeeded", path
        assert (await gateway.client.get(f"{job}/result")).json() == {"predictions": [0]}


# How to provoke the documented errors that a client can provoke; the rest (a refused version,
# a failed load, a full queue, a timeout) are the gateway's own errors, worded by http_errors.
PROVOKED: dict[str, dict[str, Any]] = {
    "not_json": {"content": b"{rows: 1}"},
    "no_input_key": {"content": b'{"rows": [[5.1, 3.5, 1.4, 0.2]]}'},
    "missing_column": {"json": {"dataframe_split": {"columns": IRIS_COLUMNS[:3], "data": [[5.1, 3.5, 1.4]]}}},
    "bad_selector": {"url": f"/models/{IRIS}/versions/best!/predict"},
    "negative_version": {"url": f"/models/{IRIS}/versions/-1/predict"},
    "selector_conflict": {"headers": {"X-Model-Version": "2"}},
    "unknown_model": {"url": "/models/no-such-model/predict"},
    "unknown_version": {"url": f"/models/{IRIS}/versions/99/predict"},
    "unknown_alias": {"url": f"/models/{IRIS}/versions/gold/predict"},
    "too_large_body": {"content": b" " * (10 * 1024 * 1024 + 1)},
    "unsupported_type": {"headers": {"content-type": "application/xml"}},
}


async def test_each_error_status_shows_what_the_gateway_answers(gateway: Gateway) -> None:
    spec = (await gateway.client.get("/openapi.json")).json()
    for template in PREDICT_PATHS:
        responses = spec["paths"][template]["post"]["responses"]
        assert {"400", "404", "409", "413", "415", "500", "503", "504"} <= set(responses)
        shown: dict[str, tuple[str, dict[str, str]]] = {}
        for status, response in responses.items():
            if status.startswith("2"):
                continue
            examples = response["content"]["application/json"]["examples"]
            assert examples, f"{template} {status} has no example"
            for key, example in examples.items():
                assert {"error_code", "message"} <= set(example["value"]) <= {"error_code", "message", "limit"}
                assert key not in shown, f"{key} is shown under two statuses"
                shown[key] = (status, example["value"])
    assert set(PROVOKED) <= set(shown)
    for key, how in PROVOKED.items():
        status, body = shown[key]
        headers = {"content-type": "application/json", **how.get("headers", {})}
        url = how.get("url", f"/models/{IRIS}/versions/champion/predict")
        if "json" in how:
            response = await gateway.client.post(url, json=how["json"], headers=headers)
        else:
            response = await gateway.client.post(url, content=how.get("content", b"{}"), headers=headers)
        assert (str(response.status_code), response.json()) == (status, body), key
    model = spec["paths"]["/models/{name}"]["get"]["responses"]["404"]["content"]["application/json"]["examples"]
    response = await gateway.client.get("/models/no-such-model")
    assert [response.json()] == [e["value"] for e in model.values()]


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
