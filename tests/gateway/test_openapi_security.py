"""The OpenAPI description says which routes need a key, and what they answer without one."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from gateway.demo import IRIS
from gateway.settings import GatewaySettings
from tests.conftest import Registry, running_gateway

pytestmark = pytest.mark.anyio


async def test_keyed_routes_carry_the_schemes_and_their_401_is_what_the_gate_answers(
    sqlite_registry: Registry, make_settings: Callable[..., GatewaySettings]
) -> None:
    async with running_gateway(make_settings(auth="keys"), sqlite_registry.tracking_uri) as gateway:
        client = gateway.client
        spec = (await client.get("/openapi.json")).json()
        assert set(spec["components"]["securitySchemes"]) == {"bearer", "apiKey"}
        assert spec["components"]["securitySchemes"]["apiKey"]["name"] == "X-API-Key"
        keyed = {
            ("post", "/models/{name}/predict"),
            ("post", "/models/{name}/versions/{version}/predict"),
            ("get", "/models"),
            ("get", "/events"),
            ("post", "/admin/sync"),
        }
        for method, path in keyed:
            operation = spec["paths"][path][method]
            assert operation["security"] == [{"bearer": []}, {"apiKey": []}], (method, path)
            assert {"401", "403", "429"} <= set(operation["responses"]), (method, path)
        for open_path in ("/health/live", "/metrics"):
            for operation in spec["paths"][open_path].values():
                assert "security" not in operation and "401" not in operation["responses"], open_path
        assert "security" not in spec["paths"]["/webhooks/mlflow"]["post"]  # its own HMAC signature
        examples = spec["paths"]["/models"]["get"]["responses"]["401"]["content"]["application/json"]["examples"]
        answer = await client.get("/models")
        assert answer.status_code == 401 and answer.json() == examples["no_key"]["value"]
        wrong = await client.post(f"/models/{IRIS}/predict", json={}, headers={"X-API-Key": "not-a-key"})
        assert wrong.status_code == 401 and wrong.json() == examples["unknown_key"]["value"]
        limited = spec["paths"]["/models"]["get"]["responses"]["429"]["content"]["application/json"]["examples"]
        assert limited["key_rate"]["value"]["limit"] == "key_rate"


async def test_with_auth_off_the_schema_asks_for_no_key(
    sqlite_registry: Registry, make_settings: Callable[..., GatewaySettings]
) -> None:
    """No "Authorize" button and no lock icons in /docs: no route asks for a key."""
    async with running_gateway(make_settings(auth="off"), sqlite_registry.tracking_uri) as gateway:
        spec = (await gateway.client.get("/openapi.json")).json()
        assert "securitySchemes" not in spec.get("components", {})
        assert "security" not in spec
        for path, item in spec["paths"].items():
            for method, operation in item.items():
                assert "security" not in operation, (method, path)
                if path != "/admin/sync":  # declares its own, for GATEWAY_AUTH=keys
                    assert "403" not in operation["responses"], (method, path)  # no key, no scope
        # what the gate would answer with keys is not there; the routes' own answers are
        assert "401" not in spec["paths"]["/models"]["get"]["responses"]
        assert "401" in spec["paths"]["/admin/sync"]["post"]["responses"]  # its GATEWAY_ADMIN_TOKEN
        predict = await gateway.client.post(f"/models/{IRIS}/predict", json={})
        assert predict.status_code != 401, predict.text
