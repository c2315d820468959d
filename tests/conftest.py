"""Fixtures chain: registry -> settings -> app -> client.

Each registry is real: MLflow's sqlite store in a temp dir, or a real `mlflow server`
subprocess over HTTP with proxied artifacts. Tests that take ``registry`` run against
both. The models are trained here, in the session.
"""

from __future__ import annotations

import functools
import json
import os
import sqlite3
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from mlflow.tracking import MlflowClient

from gateway.app import create_app
from gateway.demo import IRIS, TORCH, log_iris_version, log_torch_version, torch_available, using_registry
from gateway.process import Services
from gateway.settings import GatewaySettings
from registry_sync.registry import RegistryReader
from tests.support import models as fault_models
from tests.support.mlflow_db import new_mlflow_db
from tests.support.run_once import built_once, claim_run_dir, copy_built
from tests.support.servers import SERVED_SKLEARN_FORMAT, mlflow_server

IRIS_COLUMNS = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]

# The programs the tests start (`registry-gateway serve`, the CLI) import this checkout's code,
# as the tests themselves do: an editable install of another checkout (a second git worktree
# sharing one venv) would otherwise answer for them.
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")) if p
)
# MLflow's client retries for minutes against a dead server by default.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
# The per-user defaults (state database, artifact cache) must never be the machine's own:
# a test, or a gateway it starts, that forgets a setting writes here, not in $HOME.
_SCRATCH = tempfile.mkdtemp(prefix="registry-gateway-tests-")
# uv's download cache outlives a run (the environments of tests/gateway/runtimes do not): what
# a run downloaded from the package index, the next one installs from this disk.
os.environ.setdefault("UV_CACHE_DIR", os.path.join(Path.home(), ".cache", "registry-gateway-tests", "uv"))
os.environ["XDG_DATA_HOME"] = os.path.join(_SCRATCH, "data")
# The state database's default is the working directory's (the repository's, for a test run).
os.environ.setdefault("GATEWAY_DATABASE_URL", f"sqlite:///{os.path.join(_SCRATCH, 'gateway-state.db')}")
os.environ["XDG_CACHE_HOME"] = os.path.join(_SCRATCH, "cache")
# Retries are off, so one slow answer fails a test: on 2 busy cores an `mlflow server`
# proxying artifacts to moto has taken over 5 s for a single file (topology test, CI).
# A dead server still fails at once (connection refused), whatever this says.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
# What the run builds once for all its processes (tests/support/run_once.py): named here, by
# the first process, before pytest-xdist starts the workers that inherit it.
claim_run_dir()


# The files that take longest, run first: every file that took 20 s or more in the whole run of
# 2026-11-26 (4 workers on 2 cores shared with other work, per-file times from --junitxml), longest
# first. The workers take whole files (--dist loadfile) in this order, so a long file collected last
# could leave one core idle while the other finishes it; longest first, the short ones fill in at the
# end. An order only: a file not named here runs as before, after these.
SLOW_FILES_FIRST = (
    "tests/gateway/runtimes/test_isolated_serving.py",  # 377 s
    "tests/test_cli.py",  # 295 s
    "tests/gateway/runtimes/test_sandbox_wire.py",  # 289 s
    "tests/registry_sync/test_state.py",  # 254 s
    "tests/gateway/runtimes/test_isolated_conformance.py",  # 234 s
    "tests/test_e2e.py",  # 232 s
    "tests/test_topology.py",  # 211 s
    "tests/registry_sync/drift/test_builder.py",  # 179 s
    "tests/test_mlflow2.py",  # 178 s
    "tests/flavors/test_matrix.py",  # 174 s
    "tests/gateway/runtimes/test_sandbox_start.py",  # 173 s
    "tests/test_fleet_behind_proxies.py",  # 171 s
    "tests/gateway/test_predict.py",  # 151 s
    "tests/gateway/runtimes/test_environments.py",  # 139 s
    "tests/test_demo.py",  # 114 s
    "tests/gateway/runtimes/test_sandbox.py",  # 106 s
    "tests/test_s3_faults.py",  # 100 s
    "tests/gateway/test_traffic.py",  # 92 s
    "tests/test_s3.py",  # 84 s
    "tests/test_writeback.py",  # 81 s
    "tests/test_quality_loop.py",  # 79 s
    "tests/gateway/test_models_api.py",  # 71 s
    "tests/gateway/observability/test_records_in_app.py",  # 63 s
    "tests/gateway/test_fuzz_openapi.py",  # 60 s
    "tests/gateway/test_api_docs.py",  # 56 s
    "tests/gateway/drift/test_drift_in_app.py",  # 54 s
    "tests/conformance/test_mlflow_conformance.py",  # 52 s
    "tests/gateway/test_swaps.py",  # 49 s
    "tests/gateway/test_cache.py",  # 47 s
    "tests/gateway/runtimes/test_devices.py",  # 47 s
    "tests/gateway/protocols/test_oip_mlserver.py",  # 44 s
    "tests/test_drift_loop.py",  # 42 s
    "tests/deploy/test_local_fleet.py",  # 38 s
    "tests/test_webhooks_e2e.py",  # 36 s
    "tests/gateway/test_status_page.py",  # 36 s
    "tests/gateway/test_control_api.py",  # 34 s
    "tests/gateway/protocols/test_oip_grpc.py",  # 31 s
    "tests/gateway/test_oidc.py",  # 28 s
    "tests/gateway/test_feedback.py",  # 28 s
    "tests/gateway/test_fuzz_scoring.py",  # 27 s
    "tests/registry_sync/test_keys.py",  # 25 s
    "tests/gateway/observability/test_logs.py",  # 25 s
    "tests/gateway/test_roles.py",  # 24 s
    "tests/gateway/protocols/test_openai.py",  # 24 s
    "tests/gateway/test_priming.py",  # 21 s
    "tests/gateway/observability/test_tables.py",  # 21 s
    "tests/gateway/test_fastpath.py",  # 20 s
    "tests/gateway/protocols/test_mlflow_streaming.py",  # 20 s
)


def pytest_configure(config: pytest.Config) -> None:
    # pytest-xdist (3.x) hands out whole files ordered by how many tests each holds, most first,
    # unless told not to: the order above was ignored, and the long files of one or two tests
    # (the topology, the local fleet, the fleet behind proxies, MLflow 2) ran last, each leaving
    # a core idle while the other finished it. The controller schedules; a worker has no say.
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {path: n for n, path in enumerate(SLOW_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))  # stable: files stay whole


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Registry:
    kind: str
    tracking_uri: str
    root: Path
    client: MlflowClient
    versions: dict[str, list[int]] = field(default_factory=dict)

    def log(self, fn: Callable[..., int], *args: Any, **kwargs: Any) -> int:
        """Log one more model version into this registry (tests that add versions)."""
        with using_registry(self.tracking_uri, self._artifact_root):
            return fn(*args, **kwargs)

    def pyfunc(self, name: str, version: int) -> Any:
        """The version loaded by MLflow itself: the reference the gateway must agree with."""
        import mlflow.pyfunc

        with using_registry(self.tracking_uri, self._artifact_root):
            return mlflow.pyfunc.load_model(f"models:/{name}/{version}")

    @property
    def _artifact_root(self) -> Path | None:
        return self.root / "artifacts" if self.kind == "sqlite" else None


def empty_registry(root: Path) -> Registry:
    """A sqlite registry of a test's own at ``root``, empty: for tests that must not see the
    shared session registry's versions (other tests break some of them on purpose)."""
    uri = new_mlflow_db(root / "mlflow.db")
    return Registry("sqlite", uri, root, MlflowClient(tracking_uri=uri))


def _populate(kind: str, tracking_uri: str, root: Path) -> Registry:
    registry = Registry(kind, tracking_uri, root, MlflowClient(tracking_uri=tracking_uri))
    with using_registry(tracking_uri, registry._artifact_root) as client:
        first, second = log_iris_version(IRIS, c=0.05), log_iris_version(IRIS, c=10.0)
        client.set_registered_model_alias(IRIS, "champion", str(first))
        client.set_registered_model_alias(IRIS, "challenger", str(second))
        registry.versions[IRIS] = [first, second]
        if torch_available():
            registry.versions[TORCH] = [log_torch_version(TORCH)]
            client.set_registered_model_alias(TORCH, "champion", str(registry.versions[TORCH][0]))
        for name, model in {
            "doubler": fault_models.Doubler(),
            "gated-predict": fault_models.GatedPredict(),
            "gated-load": fault_models.GatedLoad(),
            "flaky-load": fault_models.FlakyLoad(),
        }.items():
            registry.versions[name] = [fault_models.log_pyfunc(name, model)]
    return registry


def _copy_built_registry(kind: str, root: Path) -> dict[str, list[int]]:
    """The session registry of ``kind`` at ``root`` (its database and artifacts; its versions
    returned): a copy of the one this run built once for all its processes
    (tests/support/run_once.py; the same versions, numbers included), its absolute paths (the
    sqlite registry's artifact locations, in the database and in each version's MLmodel) moved
    to ``root``. A worker's tests change their copy as they like: add versions, break some on
    purpose."""
    built = built_once(f"{kind}-registry", functools.partial(_build_registry, kind))
    copy_built(built, root)
    for mlmodel in (root / "artifacts").rglob("MLmodel"):
        mlmodel.write_text(mlmodel.read_text().replace(str(built), str(root)))
    with closing(sqlite3.connect(root / "mlflow.db")) as db, db:
        tables = [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for column in db.execute(f'SELECT name, type FROM pragma_table_info("{table}")').fetchall():
                if column[1].upper().startswith(("VARCHAR", "TEXT")):
                    db.execute(
                        f'UPDATE "{table}" SET "{column[0]}" = replace("{column[0]}", ?, ?)', (str(built), str(root))
                    )
    return {name: list(numbers) for name, numbers in json.loads((root / "versions.json").read_text()).items()}


def _build_registry(kind: str, root: Path) -> None:
    if kind == "sqlite":
        registry = _populate(kind, new_mlflow_db(root / "mlflow.db"), root)
    elif kind == "iris":
        registry = empty_registry(root)
        first = registry.log(log_iris_version, IRIS, c=0.05, serialization_format=SERVED_SKLEARN_FORMAT)
        registry.client.set_registered_model_alias(IRIS, "champion", str(first))
        registry.versions[IRIS] = [first]
    else:
        server = mlflow_server(root)
        server.start()
        try:
            registry = _populate(kind, server.health_url.removesuffix("/health"), root)
        finally:
            server.stop()
        (root / "server.log").unlink()
    (root / "versions.json").write_text(json.dumps(registry.versions))


@pytest.fixture(scope="session")
def sqlite_registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    root = tmp_path_factory.mktemp("sqlite-registry")
    versions = _copy_built_registry("sqlite", root)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    return Registry("sqlite", uri, root, MlflowClient(tracking_uri=uri), versions)


@pytest.fixture(scope="session")
def iris_registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """A sqlite registry holding iris alone (champion -> 1), for tests that start
    `registry-gateway serve` processes and only ask for iris: each of those warms every
    champion it finds before it is ready, and the shared session registry holds torch and
    fault models, and more versions as its tests add them."""
    root = tmp_path_factory.mktemp("iris-registry")
    versions = _copy_built_registry("iris", root)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    return Registry("sqlite", uri, root, MlflowClient(tracking_uri=uri), versions)


@pytest.fixture(scope="session")
def server_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    root = tmp_path_factory.mktemp("server-registry")
    versions = _copy_built_registry("server", root)
    server = mlflow_server(root)  # on the copied database and artifacts
    server.start()
    try:
        uri = server.health_url.removesuffix("/health")
        yield Registry("server", uri, root, MlflowClient(tracking_uri=uri), versions)
    finally:
        server.stop()


@pytest.fixture(scope="session", params=["sqlite", "server"])
def registry(request: pytest.FixtureRequest) -> Registry:
    """Each test that takes this runs on a sqlite registry and on a real `mlflow server`."""
    return request.getfixturevalue(f"{request.param}_registry")  # type: ignore[no-any-return]


def settings_under(root: Path, **overrides: Any) -> GatewaySettings:
    """A gateway's settings for tests: its state database and artifact cache under ``root``."""
    values: dict[str, Any] = {
        "artifact_cache_dir": root / "artifact-cache",
        "database_url": f"sqlite:///{root / 'state.db'}",
        "load_retry_seconds": 0,
        "poll_interval_seconds": 3600,  # tests sync on demand
        "warm_aliases": [],  # the data-plane tests count loads; sync tests turn warming on
    }
    values.update(overrides)
    return GatewaySettings(**values)


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., GatewaySettings]:
    return functools.partial(settings_under, tmp_path)


@dataclass
class Gateway:
    client: httpx.AsyncClient
    services: Services


@asynccontextmanager
async def running_gateway(settings: GatewaySettings, tracking_uri: str) -> AsyncIterator[Gateway]:
    """The app with its lifespan running, and an in-process client."""
    app = create_app(settings, reader=RegistryReader(tracking_uri=tracking_uri))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway", timeout=60) as client:
            yield Gateway(client, app.state.services)


@pytest.fixture
def make_gateway(
    registry: Registry, make_settings: Callable[..., GatewaySettings]
) -> Callable[..., AbstractAsyncContextManager[Gateway]]:
    def make(**overrides: Any) -> AbstractAsyncContextManager[Gateway]:
        return running_gateway(make_settings(**overrides), registry.tracking_uri)

    return make


@pytest.fixture
async def gateway(make_gateway: Callable[..., AbstractAsyncContextManager[Gateway]]) -> AsyncIterator[Gateway]:
    async with make_gateway() as running:
        yield running


def _open_fault_switches() -> None:
    fault_models.PREDICT_GATE.set()
    fault_models.LOAD_GATE.set()
    fault_models.FAIL_LOADS.clear()
    fault_models.PREDICT_ENTERED.clear()


@pytest.fixture(autouse=True)
def _reset_fault_switches() -> Iterator[None]:
    """Faults are off unless a test turns them on; never leave a thread blocked behind a test."""
    _open_fault_switches()
    yield
    _open_fault_switches()


def iris_split(rows: list[list[float]]) -> dict[str, Any]:
    return {"dataframe_split": {"columns": IRIS_COLUMNS, "data": rows}}
