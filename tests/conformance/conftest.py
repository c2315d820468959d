"""The differential run: every kind's corpus to MLflow's scoring app and to one gateway, alone
and batched, on the version as logged and (for sklearn and torch) on a version whose fast path
is off. Run once per session; the tests read the answers."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gateway.demo import using_registry
from gateway.settings import GatewaySettings
from tests.conformance import harness
from tests.conformance import models as kinds
from tests.conformance.corpus import Case, corpus
from tests.conftest import running_gateway
from tests.support.mlflow_db import new_mlflow_db

BATCH_ROUNDS = 2


@dataclass
class ConformanceRegistry:
    tracking_uri: str
    root: Path
    versions: dict[tuple[str, str], int]  # (kind name, variant) -> version
    _loaded: dict[str, Any] = field(default_factory=dict)

    def pyfunc(self, name: str) -> Any:
        """The kind's version as logged, loaded by MLflow itself (once)."""
        import mlflow.pyfunc

        if name not in self._loaded:
            with using_registry(self.tracking_uri, self.root / "artifacts"):
                uri = f"models:/{name}/{self.versions[(name, harness.FAST)]}"
                self._loaded[name] = mlflow.pyfunc.load_model(uri)
        return self._loaded[name]

    def local_path(self, name: str) -> Path:
        import mlflow.artifacts

        with using_registry(self.tracking_uri, self.root / "artifacts"):
            uri = f"models:/{name}/{self.versions[(name, harness.FAST)]}"
            return Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(self.root / "served" / name)))


@pytest.fixture(scope="session")
def conformance_registry(tmp_path_factory: pytest.TempPathFactory) -> ConformanceRegistry:
    root = tmp_path_factory.mktemp("conformance-registry")
    tracking_uri = new_mlflow_db(root / "mlflow.db")
    versions: dict[tuple[str, str], int] = {}
    with using_registry(tracking_uri, root / "artifacts") as client:
        for name, version in kinds.log_all().items():
            versions[(name, harness.FAST)] = version
        for kind in kinds.KINDS:
            logged = client.get_model_version(kind.name, str(versions[(kind.name, harness.FAST)]))
            if kind.fast:  # the same files once more, served through pyfunc
                again = client.create_model_version(kind.name, logged.source, run_id=logged.run_id)
                client.set_model_version_tag(kind.name, again.version, "gateway.fast_path", "false")
                versions[(kind.name, harness.PYFUNC)] = int(again.version)
            if kind.batches and kind.name == kinds.PARAMS.name:  # a generic pyfunc batches when tagged
                client.set_model_version_tag(kind.name, logged.version, "gateway.batching", "true")
    return ConformanceRegistry(tracking_uri, root, versions)


@dataclass
class Run:
    """Every answer of the differential run."""

    cases: dict[str, list[Case]]
    reference: dict[str, dict[str, harness.Answer]]  # kind -> case -> MLflow's answer
    # (kind, variant, mode) -> case -> the gateway's answers (one alone, BATCH_ROUNDS batched)
    gateway: dict[tuple[str, str, str], dict[str, list[harness.Answer]]] = field(default_factory=dict)
    shared_calls: dict[tuple[str, str], float] = field(default_factory=dict)  # requests that shared a call


def _metric(services: Any, name: str, model: str) -> float:
    return services.metrics.registry.get_sample_value(name, {"model": model}) or 0.0


async def _run(registry: ConformanceRegistry, settings: GatewaySettings) -> Run:
    cases = {kind.name: corpus(kind) for kind in kinds.KINDS}
    reference = {}
    for kind in kinds.KINDS:
        reference[kind.name] = await harness.reference_answers(registry.pyfunc(kind.name), cases[kind.name])
    run = Run(cases, reference)
    async with running_gateway(settings, registry.tracking_uri) as gateway:
        for (name, variant), version in registry.versions.items():
            url = f"/models/{name}/versions/{version}/predict"
            alone = await harness.alone(gateway.client, url, cases[name])
            run.gateway[(name, variant, harness.ALONE)] = {case: [answer] for case, answer in alone.items()}
            before = [_metric(gateway.services, f"gateway_batch_size_{s}", name) for s in ("sum", "count")]
            run.gateway[(name, variant, harness.BATCHED)] = await harness.batched(
                gateway.client, url, cases[name], rounds=BATCH_ROUNDS, seed=version
            )
            after = [_metric(gateway.services, f"gateway_batch_size_{s}", name) for s in ("sum", "count")]
            run.shared_calls[(name, variant)] = (after[0] - before[0]) - (after[1] - before[1])
    return run


@pytest.fixture(scope="session")
def conformance_run(conformance_registry: ConformanceRegistry, tmp_path_factory: pytest.TempPathFactory) -> Run:
    workdir = tmp_path_factory.mktemp("conformance-gateway")
    settings = GatewaySettings(
        artifact_cache_dir=workdir / "cache",
        database_url=f"sqlite:///{workdir / 'state.db'}",
        load_retry_seconds=0,
        warm_aliases=[],
        poll_interval_seconds=3600,
        # a request that hangs shows as a 504 here rather than holding the suite for 30 s
        predict_timeout_seconds=10,
    )
    return asyncio.run(_run(conformance_registry, settings))
