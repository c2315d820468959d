"""A load that fails is one WARNING, whoever asked for it (issue 49: the first failure of a
load logged up to three, from the loader, the cache and the reconciler). The loader's own
line, with the files' path, stays at INFO; a failure alike again is INFO too."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import Registry
from tests.support import models as fault_models
from tests.support.models import Doubler, FlakyLoad, log_pyfunc

pytestmark = pytest.mark.anyio

X = {"dataframe_records": [{"x": 1.5}]}
ADMIN = {"Authorization": "Bearer t0ken"}
_names = itertools.count()


@pytest.fixture(scope="session")
def registry(sqlite_registry: Registry) -> Registry:
    return sqlite_registry


@pytest.fixture
def name() -> str:
    return f"told-once-{next(_names)}"


@pytest.fixture
def failing_loads() -> Iterator[None]:
    fault_models.FAIL_LOADS.set()
    yield
    fault_models.FAIL_LOADS.clear()


def warnings(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    return [
        f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.WARNING and name in r.getMessage()
    ]


async def test_a_request_whose_load_fails_is_one_warning(
    registry: Registry,
    make_gateway: Callable[..., Any],
    name: str,
    failing_loads: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    version = registry.log(log_pyfunc, name, FlakyLoad())
    async with make_gateway() as gateway:
        with caplog.at_level(logging.INFO):
            answer = await gateway.client.post(f"/models/{name}/versions/{version}/predict", json=X)
            assert answer.status_code == 503, answer.text
        told = warnings(caplog, name)
        assert len(told) == 1 and "corrupt" in told[0], told
        assert any("failed to load from" in r.getMessage() for r in caplog.records if name in r.getMessage())


async def test_a_swap_whose_load_fails_is_one_warning(
    registry: Registry, make_gateway: Callable[..., Any], name: str, caplog: pytest.LogCaptureFixture
) -> None:
    old = registry.log(log_pyfunc, name, Doubler())
    new = registry.log(log_pyfunc, name, FlakyLoad())
    registry.client.set_registered_model_alias(name, "champion", str(old))
    async with make_gateway(warm_aliases=["champion"], admin_token="t0ken") as gateway:
        fault_models.FAIL_LOADS.set()
        try:
            registry.client.set_registered_model_alias(name, "champion", str(new))
            with caplog.at_level(logging.INFO):
                synced = await gateway.client.post("/admin/sync", params={"model": name}, headers=ADMIN)
                assert synced.status_code == 200, synced.text
        finally:
            fault_models.FAIL_LOADS.clear()
        told = warnings(caplog, name)
        assert len(told) == 1 and "keeps serving" in told[0] and "corrupt" in told[0], told
