"""One real gateway under uvicorn for the protocol tests: real clients (tritonclient) speak
to it over loopback, on the session's sqlite registry. Started once per module: each test
uses it as a client would, and the models it loads stay loaded for the next test."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import uvicorn

from gateway.app import create_app
from gateway.settings import GatewaySettings
from registry_sync.registry import RegistryReader
from tests.conftest import Registry, settings_under
from tests.support.servers import free_port
from tests.support.waiting import wait_until


@contextmanager
def served(settings: GatewaySettings, registry: Registry) -> Iterator[str]:
    """A gateway on ``settings`` served by uvicorn in a thread of this process (and its gRPC
    server, if the settings ask for one); its HTTP address."""
    app = create_app(settings, reader=RegistryReader(tracking_uri=registry.tracking_uri))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="oip-gateway", daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), timeout=120, what="the gateway to start")
        assert server.started, "the gateway's server stopped while starting"
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="module")
def oip_url(sqlite_registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL of a gateway served by uvicorn in a thread of this process."""
    with served(settings_under(tmp_path_factory.mktemp("oip-gateway")), sqlite_registry) as url:
        yield url


@pytest.fixture(scope="session")
def agents_registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """A registry of the streaming tests' own: tests/support/agents' deterministic models, logged
    from code, one version each (``plain`` does not stream)."""
    from tests.conftest import empty_registry
    from tests.support import agents

    registry = empty_registry(tmp_path_factory.mktemp("agents-registry"))
    for name, code in agents.MODELS.items():
        registry.versions[name] = [registry.log(agents.log_model_from_code, name, code)]
    registry.client.set_registered_model_alias("agent", "champion", "1")
    return registry


@contextmanager
def served_app(settings: GatewaySettings, registry: Registry) -> Iterator[tuple[str, Any]]:
    """Like :func:`served`, with the app: ``(http://host:port, app)``."""
    app = create_app(settings, reader=RegistryReader(tracking_uri=registry.tracking_uri))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="stream-gateway", daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), timeout=120, what="the gateway to start")
        assert server.started, "the gateway's server stopped while starting"
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="module")
def traces_kept_here(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A tracking store of the module's own for MLflow's traces of the agents run in the test's
    process: a ResponsesAgent logs one per call, and with no tracking URI set (a fixture's
    ``using_registry`` unsets it, and turns MLflow's tracing back on) they would land in
    ./mlflow.db, in the checkout."""
    from tests.support.mlflow_db import new_mlflow_db

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", new_mlflow_db(tmp_path_factory.mktemp("traces") / "mlflow.db"))
        yield
