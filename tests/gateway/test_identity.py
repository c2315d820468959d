"""A version is what the registry names: name, number, source and creation time.

Real registries that reuse names and numbers: two registries on one host sharing one
artifact cache, and a model deleted and registered again under the same numbers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.settings import GatewaySettings
from tests.conftest import Gateway, empty_registry, running_gateway
from tests.support.models import Scaler, log_pyfunc
from tests.support.versions import loaded, loaded_keys

pytestmark = pytest.mark.anyio

X = {"dataframe_records": [{"x": 1.0}]}
ADMIN = {"Authorization": "Bearer t0ken"}
NAME = "twin"


async def answer(gateway: Gateway, path: str, **headers: str) -> tuple[int, Any, str | None]:
    response = await gateway.client.post(path, json=X, headers=headers)
    body = response.json()
    return response.status_code, body.get("predictions", body), response.headers.get("x-model-version")


async def admin_sync(gateway: Gateway, name: str) -> None:
    response = await gateway.client.post("/admin/sync", params={"model": name}, headers=ADMIN)
    assert response.status_code == 200, response.text


async def sha256(gateway: Gateway, name: str, version: int) -> str:
    """The digest pinned at the version's first fetch (the catalog follows within a second)."""
    await gateway.services.catalog.refresh()
    return (await gateway.client.get(f"/models/{name}/versions/{version}")).json()["sha256"]  # type: ignore[no-any-return]


def settings_for(make_settings: Callable[..., GatewaySettings], tmp_path: Path, label: str) -> GatewaySettings:
    """Its own state database; the artifact cache shared with every other gateway on the host."""
    return make_settings(
        database_url=f"sqlite:///{tmp_path / f'state-{label}.db'}",
        artifact_cache_dir=tmp_path / "shared-artifact-cache",
        admin_token="t0ken",
        warm_aliases=["champion"],
    )


async def test_two_registries_on_one_host_never_share_a_version(
    tmp_path: Path, make_settings: Callable[..., GatewaySettings]
) -> None:
    a, b = empty_registry(tmp_path / "registry-a"), empty_registry(tmp_path / "registry-b")
    assert a.log(log_pyfunc, NAME, Scaler(2.0)) == 1
    assert b.log(log_pyfunc, NAME, Scaler(-1.0)) == 1  # the same name and number, other bytes
    async with running_gateway(settings_for(make_settings, tmp_path, "a"), a.tracking_uri) as on_a:
        assert await answer(on_a, f"/models/{NAME}/versions/1/predict") == (200, [2.0], "1")
        pinned_a = await sha256(on_a, NAME, 1)
    # A new gateway, a new state database, the same artifact cache: B's version 1 is B's.
    async with running_gateway(settings_for(make_settings, tmp_path, "b"), b.tracking_uri) as on_b:
        assert await answer(on_b, f"/models/{NAME}/versions/1/predict") == (200, [-1.0], "1")
        pinned_b = await sha256(on_b, NAME, 1)
    assert pinned_a and pinned_b and pinned_a != pinned_b
    blobs = {p.name for p in (tmp_path / "shared-artifact-cache" / "blobs").iterdir()}
    assert {pinned_a, pinned_b} <= blobs  # each stored once, by its own digest


async def test_two_gateways_on_two_registries_share_one_cache_at_the_same_time(
    tmp_path: Path, make_settings: Callable[..., GatewaySettings]
) -> None:
    a, b = empty_registry(tmp_path / "registry-a"), empty_registry(tmp_path / "registry-b")
    for registry, factor in ((a, 3.0), (b, 5.0)):
        registry.log(log_pyfunc, NAME, Scaler(factor))
        registry.client.set_registered_model_alias(NAME, "champion", "1")
    async with (
        running_gateway(settings_for(make_settings, tmp_path, "a"), a.tracking_uri) as on_a,
        running_gateway(settings_for(make_settings, tmp_path, "b"), b.tracking_uri) as on_b,
    ):
        for _ in range(3):  # interleaved, concurrently: each answers with its own registry's model
            answers = await asyncio.gather(
                answer(on_a, f"/models/{NAME}/predict"),
                answer(on_b, f"/models/{NAME}/predict"),
                answer(on_a, f"/models/{NAME}/versions/champion/predict"),
                answer(on_b, f"/models/{NAME}/versions/1/predict"),
            )
            assert answers == [(200, [3.0], "1"), (200, [5.0], "1"), (200, [3.0], "1"), (200, [5.0], "1")]


async def test_a_model_deleted_and_registered_again_serves_the_new_versions(
    tmp_path: Path, make_settings: Callable[..., GatewaySettings]
) -> None:
    registry = empty_registry(tmp_path / "registry")
    registry.log(log_pyfunc, NAME, Scaler(2.0))
    registry.client.set_registered_model_alias(NAME, "champion", "1")
    async with running_gateway(settings_for(make_settings, tmp_path, "one"), registry.tracking_uri) as gateway:
        assert await answer(gateway, f"/models/{NAME}/predict") == (200, [2.0], "1")
        assert await answer(gateway, f"/models/{NAME}/versions/1/predict") == (200, [2.0], "1")
        old_pin = await sha256(gateway, NAME, 1)
        old = loaded(gateway.services.cache, NAME, 1)
        assert old is not None
        registry.client.delete_registered_model(NAME)
        assert registry.log(log_pyfunc, NAME, Scaler(7.0)) == 1  # numbers count from 1 again
        registry.client.set_registered_model_alias(NAME, "champion", "1")
        await admin_sync(gateway, NAME)  # what the next poll (or the webhook) does
        assert await answer(gateway, f"/models/{NAME}/versions/1/predict") == (200, [7.0], "1")
        assert await answer(gateway, f"/models/{NAME}/predict") == (200, [7.0], "1")
        assert await answer(gateway, f"/models/{NAME}/predict", **{"X-Model-Version": "champion"}) == (
            200,
            [7.0],
            "1",
        )
        new_pin = await sha256(gateway, NAME, 1)
        assert new_pin and new_pin != old_pin
        assert loaded_keys(gateway.services.cache).count((NAME, 1)) == 1  # the old one was unloaded
        held = gateway.services.catalog.held(NAME, "champion")
        assert held is not None and held.source == registry.client.get_model_version(NAME, "1").source
        events = (await gateway.client.get("/events", params={"model": NAME})).json()["events"]
        replaced = [e for e in events if e["kind"] == "replaced"]
        assert replaced and replaced[0]["version"] == 1, [e["kind"] for e in events]
        swapped = next(e for e in events if e["kind"] == "swapped")  # the newest first
        assert swapped["reason"] == "champion 1 -> 1 (a new version under the same number)"


async def test_a_deleted_version_stops_serving_at_once(
    tmp_path: Path, make_settings: Callable[..., GatewaySettings]
) -> None:
    registry = empty_registry(tmp_path / "registry")
    for factor in (2.0, 3.0):
        registry.log(log_pyfunc, NAME, Scaler(factor))
    async with running_gateway(settings_for(make_settings, tmp_path, "one"), registry.tracking_uri) as gateway:
        assert await answer(gateway, f"/models/{NAME}/versions/1/predict") == (200, [2.0], "1")
        registry.client.delete_model_version(NAME, "1")
        await admin_sync(gateway, NAME)
        status, body, _ = await answer(gateway, f"/models/{NAME}/versions/1/predict")
        assert status == 404 and body["error_code"] == "RESOURCE_DOES_NOT_EXIST", body
        assert loaded(gateway.services.cache, NAME, 1) is None  # its memory goes with it
        assert await answer(gateway, f"/models/{NAME}/predict") == (200, [3.0], "2")  # latest is 2 now
