"""Which registry is followed is always said; an empty one is ready, and says so."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from gateway.app import create_app
from gateway.registry_source import hide_password
from gateway.settings import GatewaySettings
from registry_sync.registry import RegistryReader
from tests.support.servers import free_port

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def client_of(settings: GatewaySettings, reader: RegistryReader | None) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, reader=reader)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client:
            yield client


async def test_without_mlflow_tracking_uri_the_default_registry_is_named_and_its_emptiness_shown(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    make_settings: Callable[..., GatewaySettings],
    caplog: pytest.LogCaptureFixture,
) -> None:
    import mlflow.tracking._model_registry.utils as registry_uris
    import mlflow.tracking._tracking_service.utils as tracking_uris

    for variable in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(variable, raising=False)
    # MLflow keeps a URI given to mlflow.set_tracking_uri/set_registry_uri in module globals: a
    # test that ran before this one in the same process (another file on the same xdist worker)
    # may have left one there, and this test would see that registry, not the default.
    monkeypatch.setattr(tracking_uris, "_tracking_uri", None)
    monkeypatch.setattr(registry_uris, "_registry_uri", None)
    monkeypatch.chdir(tmp_path)  # MLflow's default registry is ./mlflow.db
    default = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with caplog.at_level(logging.INFO, logger="gateway.process"):
        async with client_of(make_settings(), None) as client:
            ready = await client.get("/health/ready")
            models = await client.get("/models")
    assert ready.status_code == 200, ready.text  # an empty registry may be new: still ready
    health = ready.json()
    assert (health["registry"], health["registered_models"]) == (default, 0)
    assert "has no registered models" in health["note"] and "MLFLOW_TRACKING_URI is not set" in health["note"]
    assert models.json() == {"models": [], "registry": default, "note": health["note"]}
    logged = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "gateway.process"]
    assert any(f"following the MLflow registry {default}" in message for _, message in logged), logged
    assert any(level == logging.WARNING and "MLFLOW_TRACKING_URI is not set" in m for level, m in logged), logged


async def test_a_registry_never_read_is_not_called_empty(make_settings: Callable[..., GatewaySettings]) -> None:
    unreachable = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    async with client_of(make_settings(), RegistryReader(tracking_uri=unreachable)) as client:
        health = (await client.get("/health/ready")).json()
        models = (await client.get("/models")).json()
    assert health["registry"] == unreachable and health["registered_models"] == 0
    assert "has not been read successfully" in health["note"]
    assert models["note"] == health["note"]


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("https://alice:s3cret@mlflow.internal:5000/", "https://alice:***@mlflow.internal:5000/"),
        ("postgresql://bob:pw@db/mlflow", "postgresql://bob:***@db/mlflow"),
        ("sqlite:////var/lib/mlflow.db", "sqlite:////var/lib/mlflow.db"),
        ("databricks", "databricks"),
    ],
)
def test_passwords_in_registry_uris_are_hidden(uri: str, shown: str) -> None:
    assert hide_password(uri) == shown
