"""Drain on SIGTERM (gateway.fleet.drain), on a whole gateway in this process, under the SIGTERM
handler of a real uvicorn server (the one ``serve`` runs; here it only records the exit it
was asked for): not ready at once, still serving with ``Connection: close``, uvicorn asked to
stop only when the delay is over, or at once on a second SIGTERM."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from gateway.settings import GatewaySettings
from tests.conftest import Registry, empty_registry, running_gateway, settings_under
from tests.support.models import Doubler, log_pyfunc
from tests.support.waiting import until

pytestmark = pytest.mark.anyio

X = {"dataframe_records": [{"x": 1.5}]}


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    return empty_registry(tmp_path_factory.mktemp("drain-registry"))


@pytest.fixture(scope="module")
def model(registry: Registry) -> str:
    name = "drain-doubler"
    version = registry.log(log_pyfunc, name, Doubler())
    registry.client.set_registered_model_alias(name, "champion", str(version))
    return name


@pytest.fixture
def uvicorn_server() -> Iterator[uvicorn.Server]:
    """A uvicorn server's SIGTERM handler in place, as while ``serve`` runs (restored after)."""

    async def app(scope: Any, receive: Any, send: Any) -> None:  # never served: only its handler is used
        raise NotImplementedError

    server = uvicorn.Server(uvicorn.Config(app=app))
    previous = signal.signal(signal.SIGTERM, server.handle_exit)
    try:
        yield server
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.fixture
def settings(tmp_path: Path) -> Callable[..., GatewaySettings]:
    def make(**overrides: Any) -> GatewaySettings:
        return settings_under(tmp_path, warm_aliases=["champion"], **overrides)

    return make


async def test_sigterm_turns_ready_off_at_once_and_serves_on_closing_connections_until_the_delay_ends(
    registry: Registry, model: str, uvicorn_server: uvicorn.Server, settings: Callable[..., GatewaySettings]
) -> None:
    async with running_gateway(settings(drain_seconds=600), registry.tracking_uri) as gateway:
        assert signal.getsignal(signal.SIGTERM) != uvicorn_server.handle_exit  # the drain defers it
        before = await gateway.client.post(f"/models/{model}/predict", json=X)
        assert before.status_code == 200 and "connection" not in before.headers

        os.kill(os.getpid(), signal.SIGTERM)
        await until(lambda: gateway.services.drain.draining, "the SIGTERM to be handled")
        ready = await gateway.client.get("/health/ready")
        assert ready.status_code == 503, ready.text
        assert ready.json()["status"] == "stopping" and ready.json()["reason"].startswith("draining")
        during = await gateway.client.post(f"/models/{model}/predict", json=X)
        assert during.status_code == 200 and during.headers["connection"] == "close"
        assert during.json() == before.json()
        assert not uvicorn_server.should_exit  # still accepting: 600 s of drain are not over

        os.kill(os.getpid(), signal.SIGTERM)  # a second SIGTERM stops at once
        await until(lambda: uvicorn_server.should_exit, "uvicorn to be asked to stop")


async def test_when_the_delay_is_over_uvicorn_is_asked_to_stop(
    registry: Registry, model: str, uvicorn_server: uvicorn.Server, settings: Callable[..., GatewaySettings]
) -> None:
    async with running_gateway(settings(drain_seconds=0.2), registry.tracking_uri) as gateway:
        os.kill(os.getpid(), signal.SIGTERM)
        await until(lambda: uvicorn_server.should_exit, "the drain delay to end", timeout=30)
        assert gateway.services.drain.draining
        assert gateway.services.membership.state == "draining"


async def test_without_a_delay_or_a_uvicorn_server_sigterm_is_left_alone(
    registry: Registry, model: str, uvicorn_server: uvicorn.Server, settings: Callable[..., GatewaySettings]
) -> None:
    async with running_gateway(settings(drain_seconds=0), registry.tracking_uri):
        assert signal.getsignal(signal.SIGTERM) == uvicorn_server.handle_exit
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # no server: nothing to defer (nor to wrap)
    async with running_gateway(settings(drain_seconds=5), registry.tracking_uri) as gateway:
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
        assert not gateway.services.drain.draining
