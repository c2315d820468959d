"""A lone ``serve`` answers predictions while its warm set warms: /health/ready stays 503 for a
balancer until every warm alias is warm, but a request that reaches the process anyway (one
host, no balancer) is served where it can be, here another model's version, loaded at once."""

from __future__ import annotations

from pathlib import Path

import anyio.to_thread
import httpx
import pytest

from gateway.app import create_app
from registry_sync.registry import RegistryReader
from tests.conftest import empty_registry, settings_under
from tests.support import models as fault_models
from tests.support.models import Doubler, GatedPredict, log_pyfunc
from tests.support.versions import loaded_keys
from tests.support.waiting import until

pytestmark = pytest.mark.anyio

X = {"dataframe_records": [{"x": 1.5}]}


async def test_during_the_warm_up_not_ready_yet_other_versions_are_served(tmp_path: Path) -> None:
    registry = empty_registry(tmp_path / "registry")
    warming = registry.log(log_pyfunc, "slow-champion", GatedPredict())
    registry.client.set_registered_model_alias("slow-champion", "champion", str(warming))
    other = registry.log(log_pyfunc, "quick", Doubler())
    settings = settings_under(tmp_path, warm_aliases=["champion"], warm_start="aliases")
    fault_models.PREDICT_GATE.clear()  # the champion's warm-up predict blocks until the test opens it
    app = create_app(settings, reader=RegistryReader(tracking_uri=registry.tracking_uri), start_in_background=True)
    async with app.router.lifespan_context(app):
        services = app.state.services
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://lone", timeout=60) as client:
            # the warm-up is inside the champion's predict, held there
            entered = await anyio.to_thread.run_sync(lambda: fault_models.PREDICT_ENTERED.wait(60))
            assert entered
            ready = await client.get("/health/ready")
            assert ready.status_code == 503 and ready.json()["reason"] == "warming slow-champion@champion"
            response = await client.post(f"/models/quick/versions/{other}/predict", json=X)
            assert response.status_code == 200, response.text
            assert response.json() == {"predictions": [3.0]}
            assert not services.ready  # served while still warming
            fault_models.PREDICT_GATE.set()
            await until(lambda: services.ready, "the warm-up to end")
            assert (await client.get("/health/ready")).status_code == 200
            assert set(loaded_keys(services.cache)) == {("slow-champion", warming), ("quick", other)}
