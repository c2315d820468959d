"""Error answers never echo the host's paths, a traceback or a secret (issue 12, Inputs).

Load failures are provoked for real, in a registry of this module's own: a version whose
artifacts were deleted from the artifact store, and one whose MLmodel is corrupt. What the
client gets must say what failed without the artifact cache, the state database, the
artifact store's directory or any temporary directory; the logs keep those for operators.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.demo import using_registry
from gateway.settings import GatewaySettings
from registry_sync.artifacts import local_path
from registry_sync.errors import without_paths
from registry_sync.registry import RegistryReader
from tests.conftest import Registry, running_gateway
from tests.support import models as fault_models
from tests.support.keys import add_key, bearer, keyed_gateway
from tests.support.mlflow_db import new_mlflow_db

BODY = {"dataframe_split": {"columns": ["x"], "data": [[1.0]]}}
ADMIN_TOKEN = "admin-token-never-echoed-9d2e"
WEBHOOK_SECRET = "webhook-secret-never-echoed-7a1b"


@pytest.fixture(scope="module")
def broken_registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """'gone' (its artifacts deleted) and 'corrupt' (its MLmodel not YAML), each version 1."""
    root = tmp_path_factory.mktemp("broken-registry")
    tracking_uri = new_mlflow_db(root / "mlflow.db")
    registry = Registry("sqlite", tracking_uri, root, RegistryReader(tracking_uri=tracking_uri)._client)
    with using_registry(tracking_uri, root / "artifacts"):
        for name in ("gone", "corrupt"):
            registry.versions[name] = [fault_models.log_pyfunc(name, fault_models.Doubler())]
    reader = RegistryReader(tracking_uri=tracking_uri)
    gone, corrupt = (local_path(reader.download_uri(name, 1)) for name in ("gone", "corrupt"))
    assert gone is not None and gone.is_dir() and corrupt is not None and (corrupt / "MLmodel").is_file()
    shutil.rmtree(gone)
    (corrupt / "MLmodel").write_text("flavors: [unclosed\n  python_function: {")
    return registry


def _secrets_and_paths(settings: GatewaySettings, registry: Registry) -> list[str]:
    state_db = settings.database_url.removeprefix("sqlite:///")
    return [
        str(settings.artifact_cache_dir),
        state_db,
        str(Path(state_db).parent),
        str(registry.root),
        tempfile.gettempdir() + "/",
        "Traceback",
        'File "',
        ADMIN_TOKEN,
        WEBHOOK_SECRET,
    ]


def assert_clean(response: httpx.Response, forbidden: list[str]) -> None:
    assert response.headers["content-type"].startswith("application/json"), response.text
    for text in forbidden:
        assert text not in response.text, f"{response.status_code} answer leaks {text!r}: {response.text}"


@pytest.mark.anyio
async def test_load_failures_answer_without_host_paths(
    broken_registry: Registry, make_settings: Callable[..., GatewaySettings], caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(admin_token=ADMIN_TOKEN, webhook_secret=WEBHOOK_SECRET)
    forbidden = _secrets_and_paths(settings, broken_registry)
    caplog.set_level(logging.INFO)
    async with running_gateway(settings, broken_registry.tracking_uri) as gateway:
        client = gateway.client
        answers: list[httpx.Response] = []
        for name in ("gone", "corrupt"):
            for path in (f"/models/{name}/versions/1/predict", f"/models/{name}/predict"):
                response = await client.post(path, json=BODY)
                assert response.status_code >= 500 or response.status_code == 409, response.text
                answers.append(response)
            answers.append(await client.post(f"/v2/models/{name}/versions/1/infer", json={"inputs": []}))
            answers.append(await client.get(f"/models/{name}/versions/1"))
        answers.append(await client.get("/events", params={"limit": 100}))
        answers.append(await client.post("/admin/sync", params={"wait": "true"}))
        answers.append(await client.post("/webhooks/mlflow", json={"entity": "model_version"}))
        for response in answers:
            assert_clean(response, forbidden)
        # the failures said what failed, and the logs keep where, for operators
        messages = [r.json()["message"] for r in answers[:2] + answers[4:6]]
        assert all("'gone'" in m or "'corrupt'" in m for m in messages), messages
    gone_dir = str(broken_registry.root / "artifacts")
    assert any(gone_dir in record.getMessage() for record in caplog.records), "the path is logged for operators"


@pytest.mark.anyio
async def test_a_key_sent_is_never_in_a_401_or_403(
    sqlite_registry: Registry, make_settings: Callable[..., GatewaySettings]
) -> None:
    settings = make_settings(auth="keys")
    reader_only = add_key(settings, "reader", "read")
    unknown = "rgw_" + "x" * 43  # the shape of a key, in no database
    sent = {
        "unknown bearer": (bearer(unknown), unknown),
        "unknown X-API-Key": ({"X-API-Key": unknown}, unknown),
        "garbage bearer": ({"Authorization": "Bearer not-a-key-s3cr3t"}, "not-a-key-s3cr3t"),
        "lacking scope, bearer": (bearer(reader_only), reader_only),
        "lacking scope, X-API-Key": ({"X-API-Key": reader_only}, reader_only),
    }
    calls: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", "/models/iris/versions/1/predict", {"json": BODY}),
        ("POST", "/models/iris/predict", {"json": BODY}),
        ("POST", "/v2/models/iris/infer", {"json": {"inputs": []}}),
        ("GET", "/v2/models/iris", {}),
        ("POST", "/admin/sync", {}),
        ("GET", "/models", {}),
        ("GET", "/events", {}),
    ]
    statuses: set[int] = set()
    async with keyed_gateway(settings, sqlite_registry) as (gateway, _):
        for label, (headers, secret) in sent.items():
            for method, path, kwargs in calls:
                response = await gateway.client.request(method, path, headers=headers, **kwargs)
                if response.status_code in (401, 403):
                    statuses.add(response.status_code)
                    assert secret not in response.text, f"{label} {method} {path}: {response.text}"
                    assert secret not in str(response.headers), f"{label} {method} {path}: {response.headers}"
                else:  # only the reader's own scope passes
                    assert label.startswith("lacking scope") and path in ("/models", "/events"), response.text
    assert statuses == {401, 403}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("from file:///tmp/x/artifacts/m-1:\nNo such", "from <path>:\nNo such"),
        ('in "/var/cache/rg/blobs/ab12/MLmodel", line 1', 'in "<path>", line 1'),
        (
            "[Errno 2] No such file or directory: '/tmp/.3-abc/model.pkl'",
            "[Errno 2] No such file or directory: '<path>'",
        ),
        # URLs, names with a slash and plain words stay as they are
        ("GET http://mlflow:5000/api/2.0/x failed", "GET http://mlflow:5000/api/2.0/x failed"),
        ("s3://bucket/models/m-1 and/or team/model", "s3://bucket/models/m-1 and/or team/model"),
    ],
)
def test_without_paths(text: str, expected: str) -> None:
    assert without_paths(text) == expected
