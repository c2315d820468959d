"""Drift references computed by the sync leader of a real gateway over a real MLflow registry.

Each test has a registry of its own (an iris version logged the way the test needs) and a
gateway on it whose drift pass is driven by hand (``run_once``): the room's real wiring, with
the version's outputs predicted through the gateway's own model cache.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio.to_thread
import mlflow
import mlflow.data
import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from sklearn.linear_model import LogisticRegression

from gateway.demo import IRIS, iris_frame
from registry_sync.artifacts import local_path
from registry_sync.database import make_engine, upgrade
from registry_sync.drift.builder import NO_SOURCE, ReferenceBuilder
from registry_sync.drift.profile import CategoricalColumn, NumericColumn
from registry_sync.drift.references import FAILED, NONE, READY, Reference
from registry_sync.drift.sources import TAG
from registry_sync.repository import EventKind
from tests.conftest import IRIS_COLUMNS, Gateway, Registry, empty_registry, iris_split, running_gateway, settings_under
from tests.support.postgres import postgres_database
from tests.support.s3 import moto_s3
from tests.support.servers import mlflow_server
from tests.support.waiting import eventually

pytestmark = pytest.mark.anyio


def log_iris(
    registry: Registry,
    *,
    training: str | None = None,
    signature: bool = True,
    artifact: Path | None = None,
) -> int:
    """An iris version, champion; its run logs ``training`` as its training dataset, and
    ``artifact`` is added to its LoggedModel as ``drift/<its name>``."""

    def log() -> int:
        features, target = iris_frame()
        model = LogisticRegression(max_iter=1000).fit(features, target)
        with mlflow.start_run():
            if training is not None:
                # Named by its source: MLflow keeps one dataset per name and digest in an
                # experiment, and the same rows logged again would keep the first source.
                dataset = mlflow.data.from_pandas(features, source=training, name=training)
                mlflow.log_input(dataset, context="training")
            info = mlflow.sklearn.log_model(
                model,
                name="model",
                registered_model_name=IRIS,
                input_example=features.head(2) if signature else None,
                pip_requirements=["scikit-learn"],
            )
        if artifact is not None:
            mlflow.MlflowClient().log_model_artifact(info.model_id, str(artifact), artifact_path="drift")
        return int(info.registered_model_version)

    version = registry.log(log)
    registry.client.set_registered_model_alias(IRIS, "champion", str(version))
    return version


@asynccontextmanager
async def gateway_on(registry: Registry, root: Path, **overrides: Any) -> AsyncIterator[Gateway]:
    settings = settings_under(root, drift_reference_interval_seconds=0, **overrides)
    async with running_gateway(settings, registry.tracking_uri) as gateway:
        yield gateway


def builder_of(gateway: Gateway) -> ReferenceBuilder:
    return gateway.services.rooms.drift.builder


def reference_of(gateway: Gateway, version: int) -> Reference | None:
    state = gateway.services.store.version(IRIS, version)
    assert state is not None
    return gateway.services.rooms.drift.references.get(state.id)


def drift_events(gateway: Gateway) -> list[Any]:
    return [event for event in gateway.services.store.events(name=IRIS) if event.reason.startswith("drift reference")]


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return empty_registry(tmp_path / "registry")


@pytest.fixture
def training_parquet(tmp_path: Path) -> Path:
    path = tmp_path / "train.parquet"
    iris_frame()[0].to_parquet(path)
    return path


async def test_the_runs_training_dataset_is_the_reference_with_the_versions_outputs(
    registry: Registry, tmp_path: Path, training_parquet: Path
) -> None:
    version = log_iris(registry, training=str(training_parquet))
    async with gateway_on(registry, tmp_path) as gateway:
        (computed,) = await builder_of(gateway).run_once()
        assert await builder_of(gateway).run_once() == []  # once per version identity

        reference = reference_of(gateway, version)
        assert reference == computed
        assert reference is not None and reference.status == READY, reference
        assert (reference.source_kind, reference.source_uri) == ("dataset", str(training_parquet))
        assert reference.profile is not None and reference.outputs_reason is None
        assert (reference.profile.rows, reference.profile.sampled_from) == (150, 150)
        assert [column.name for column in reference.profile.inputs] == IRIS_COLUMNS
        features = iris_frame()[0]
        for column in reference.profile.inputs:
            assert isinstance(column, NumericColumn)
            values = features[column.name].to_numpy()
            tolerance = len(values) * np.finfo(np.float64).eps * float(np.abs(values).max())
            assert column.mean == pytest.approx(values.mean(), abs=tolerance)
            assert (column.minimum, column.maximum) == (values.min(), values.max())
        (prediction,) = reference.profile.outputs
        assert isinstance(prediction, NumericColumn) and prediction.name == "prediction"
        # The version's own answers on the data it learned: its three classes, a third each.
        predicted = registry.pyfunc(IRIS, version).predict(features)
        assert (prediction.minimum, prediction.maximum) == (predicted.min(), predicted.max())
        assert drift_events(gateway) == []


async def test_a_tag_names_the_reference_file(registry: Registry, tmp_path: Path) -> None:
    version = log_iris(registry)
    path = tmp_path / "reference.csv"
    iris_frame()[0].to_csv(path, index=False)
    registry.client.set_model_version_tag(IRIS, str(version), TAG, path.as_uri())
    async with gateway_on(registry, tmp_path) as gateway:
        await builder_of(gateway).run_once()
        reference = reference_of(gateway, version)
        assert reference is not None and reference.status == READY, reference
        assert (reference.source_kind, reference.source_uri) == ("tag", path.as_uri())
        assert reference.profile is not None and [c.name for c in reference.profile.inputs] == IRIS_COLUMNS


async def test_an_artifact_of_the_version_is_the_reference(registry: Registry, tmp_path: Path) -> None:
    path = tmp_path / "reference.parquet"
    iris_frame()[0].to_parquet(path)
    version = log_iris(registry, artifact=path)
    async with gateway_on(registry, tmp_path) as gateway:
        await builder_of(gateway).run_once()
        reference = reference_of(gateway, version)
        assert reference is not None and reference.status == READY, reference
        assert (reference.source_kind, reference.source_uri) == ("artifact", "drift/reference.parquet")
        assert reference.profile is not None and reference.profile.rows == 150


async def test_a_training_dataset_in_s3_is_read_with_the_artifact_stores_credentials(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with moto_s3(tmp_path / "moto", bucket="data") as s3:
        for key, value in s3.client_env.items():
            monkeypatch.setenv(key, value)
        path = tmp_path / "train.parquet"
        iris_frame()[0].to_parquet(path)
        s3.client().upload_file(str(path), "data", "iris/train.parquet")
        version = log_iris(registry, training="s3://data/iris/train.parquet")
        async with gateway_on(registry, tmp_path) as gateway:
            await builder_of(gateway).run_once()
            reference = reference_of(gateway, version)
    assert reference is not None and reference.status == READY, reference
    assert (reference.source_kind, reference.source_uri) == ("dataset", "s3://data/iris/train.parquet")
    assert reference.profile is not None and reference.profile.rows == 150


async def test_an_unreadable_reference_says_why_once_and_the_version_still_serves(
    registry: Registry, tmp_path: Path
) -> None:
    version = log_iris(registry)
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"not parquet at all")
    registry.client.set_model_version_tag(IRIS, str(version), TAG, str(path))
    now = [1_000_000.0]
    async with gateway_on(registry, tmp_path, drift_retry_seconds=60) as gateway:
        builder_of(gateway)._clock = lambda: now[0]
        await builder_of(gateway).run_once()
        reference = reference_of(gateway, version)
        assert reference is not None and reference.status == FAILED
        assert reference.reason is not None and "not a readable Parquet file" in reference.reason
        assert (reference.source_kind, reference.source_uri) == ("tag", str(path))
        (event,) = drift_events(gateway)
        assert event.kind == EventKind.FAILED.value and event.version == version

        assert await builder_of(gateway).run_once() == []  # not retried at every look
        now[0] += 61
        (again,) = await builder_of(gateway).run_once()  # retried after the back-off: the same failure
        assert again.status == FAILED and len(drift_events(gateway)) == 1

        answer = await gateway.client.post(
            f"/models/{IRIS}/versions/{version}/predict", json=iris_split([[5.1, 3.5, 1.4, 0.2]])
        )
        assert answer.status_code == 200, answer.text

        iris_frame()[0].to_parquet(path)  # fixed, and the tag changed: computed at the next look
        registry.client.set_model_version_tag(IRIS, str(version), TAG, path.as_uri())
        await gateway.services.poller.run([IRIS], reason="test", timeout=60)
        (fixed,) = await builder_of(gateway).run_once()
        assert fixed.status == READY
        assert [event.kind for event in drift_events(gateway)] == [EventKind.RECOVERED.value, EventKind.FAILED.value]


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda frame: frame.assign(label=0), "has column 'label', which the signature does not name"),
        (lambda frame: frame.drop(columns=[IRIS_COLUMNS[0]]), f"lacks the signature's column '{IRIS_COLUMNS[0]}'"),
    ],
)
async def test_columns_other_than_the_signatures_fail_the_reference(
    registry: Registry, tmp_path: Path, change: Callable[[pd.DataFrame], pd.DataFrame], named: str
) -> None:
    path = tmp_path / "train.parquet"
    change(iris_frame()[0]).to_parquet(path)
    version = log_iris(registry, training=str(path))
    async with gateway_on(registry, tmp_path) as gateway:
        await builder_of(gateway).run_once()
        reference = reference_of(gateway, version)
        assert reference is not None and reference.status == FAILED
        assert reference.reason is not None and named in reference.reason, reference.reason
        assert len(drift_events(gateway)) == 1


async def test_an_empty_file_fails_the_reference(registry: Registry, tmp_path: Path) -> None:
    path = tmp_path / "empty.parquet"
    iris_frame()[0].head(0).to_parquet(path)
    version = log_iris(registry, training=str(path))
    async with gateway_on(registry, tmp_path) as gateway:
        await builder_of(gateway).run_once()
        reference = reference_of(gateway, version)
        assert reference is not None and reference.status == FAILED and reference.reason == "the file has no rows"


async def test_a_version_without_a_tabular_signature_says_so_without_an_event(
    registry: Registry, tmp_path: Path, training_parquet: Path
) -> None:
    version = log_iris(registry, training=str(training_parquet), signature=False)
    async with gateway_on(registry, tmp_path) as gateway:
        await builder_of(gateway).run_once()
        reference = reference_of(gateway, version)
        assert reference is not None and reference.status == FAILED
        assert reference.reason is not None and reference.reason.startswith("no tabular signature")
        assert drift_events(gateway) == []


async def test_without_a_source_the_reference_is_none_and_says_where_it_looked(
    registry: Registry, tmp_path: Path
) -> None:
    version = log_iris(registry)
    async with gateway_on(registry, tmp_path) as gateway:
        await builder_of(gateway).run_once()
        reference = reference_of(gateway, version)
        assert reference is not None and reference.status == NONE and reference.reason == NO_SOURCE
        assert drift_events(gateway) == []


async def test_a_sync_only_leader_keeps_the_inputs_and_says_why_no_outputs(
    registry: Registry, tmp_path: Path, training_parquet: Path
) -> None:
    version = log_iris(registry, training=str(training_parquet))
    async with gateway_on(registry, tmp_path, role="sync") as gateway:
        await builder_of(gateway).run_once()
        reference = reference_of(gateway, version)
    assert reference is not None and reference.status == READY and reference.profile is not None
    assert reference.profile.outputs == () and len(reference.profile.inputs) == 4
    assert reference.outputs_reason is not None and "serves no models" in reference.outputs_reason


async def test_a_predict_that_fails_keeps_the_inputs_and_says_why(registry: Registry, tmp_path: Path) -> None:
    # Numbers written as words: the columns match the signature, the model cannot take them.
    path = tmp_path / "train.parquet"
    iris_frame()[0].astype(str).to_parquet(path)
    version = log_iris(registry, training=str(path))
    async with gateway_on(registry, tmp_path) as gateway:
        await builder_of(gateway).run_once()
        reference = reference_of(gateway, version)
    assert reference is not None and reference.status == READY and reference.profile is not None
    assert all(isinstance(column, CategoricalColumn) for column in reference.profile.inputs)
    assert reference.profile.outputs == ()
    assert reference.outputs_reason is not None and reference.outputs_reason.startswith("predicting on the reference")


async def test_the_leader_computes_references_on_its_own_at_the_interval(
    registry: Registry, tmp_path: Path, training_parquet: Path
) -> None:
    version = log_iris(registry, training=str(training_parquet))
    settings = settings_under(tmp_path, drift_reference_interval_seconds=0.05)
    async with running_gateway(settings, registry.tracking_uri) as gateway:

        async def computed() -> Reference | None:
            return await anyio.to_thread.run_sync(reference_of, gateway, version)

        reference = await eventually(computed, "the leader's drift pass")
    assert reference.status == READY and reference.source_kind == "dataset"


async def test_a_source_that_cannot_be_read_gives_way_to_the_next(registry: Registry, tmp_path: Path) -> None:
    # Trained on another machine: the run's dataset names a file this host does not have.
    elsewhere = tmp_path / "laptop" / "train.parquet"
    version = log_iris(registry, training=str(elsewhere))
    tagged = tmp_path / "reference.parquet"
    registry.client.set_model_version_tag(IRIS, str(version), TAG, str(tagged))
    async with gateway_on(registry, tmp_path) as gateway:
        (failed,) = await builder_of(gateway).run_once()
        assert failed.status == FAILED and (failed.source_kind, failed.source_uri) == ("dataset", str(elsewhere))
        assert failed.reason is not None
        assert f"dataset {elsewhere}: {elsewhere} does not exist" in failed.reason
        assert f"tag {tagged}: {tagged} does not exist" in failed.reason

        iris_frame()[0].to_parquet(tagged)
        registry.client.set_model_version_tag(IRIS, str(version), "gateway.drift.note", "written")
        await gateway.services.poller.run([IRIS], reason="test", timeout=60)
        (ready,) = await builder_of(gateway).run_once()
    assert ready.status == READY and (ready.source_kind, ready.source_uri) == ("tag", str(tagged))


async def test_artifacts_out_of_reach_decide_nothing_and_the_next_pass_tries_again(
    registry: Registry, tmp_path: Path, training_parquet: Path, caplog: pytest.LogCaptureFixture
) -> None:
    version = log_iris(registry, training=str(training_parquet))
    source = registry.client.get_model_version(IRIS, str(version)).source
    location = local_path(registry.client.get_logged_model(source.removeprefix("models:/")).artifact_location)
    assert location is not None
    away = tmp_path / "away"
    async with gateway_on(registry, tmp_path) as gateway:
        shutil.move(location, away)  # the artifact store loses the version's files for a while
        with caplog.at_level(logging.WARNING, logger="registry_sync.drift.builder"):
            assert await builder_of(gateway).run_once() == []
            assert await builder_of(gateway).run_once() == []
        assert reference_of(gateway, version) is None and drift_events(gateway) == []
        warned = [record for record in caplog.records if record.name == "registry_sync.drift.builder"]
        assert len(warned) == 1 and "drift references not computed now" in warned[0].getMessage()

        shutil.move(away, location)
        (reference,) = await builder_of(gateway).run_once()
    assert reference.status == READY


async def test_a_version_deleted_from_the_registry_loses_its_reference(
    registry: Registry, tmp_path: Path, training_parquet: Path
) -> None:
    version = log_iris(registry, training=str(training_parquet))
    async with gateway_on(registry, tmp_path) as gateway:
        await builder_of(gateway).run_once()
        references = gateway.services.rooms.drift.references
        assert [reference.version.version for reference in references.list()] == [version]

        registry.client.delete_model_version(IRIS, str(version))
        await gateway.services.poller.run([IRIS], reason="test", timeout=60)
        assert await builder_of(gateway).run_once() == []
        assert references.list() == []


async def test_an_isolated_versions_outputs_are_predicted_in_its_worker(
    registry: Registry, tmp_path: Path, training_parquet: Path
) -> None:
    """GATEWAY_ENV_ISOLATE=always: the version runs in a worker on an environment uv builds
    (from the package index, or uv's cache), and its reference's outputs come from there."""
    version = log_iris(registry, training=str(training_parquet))
    async with gateway_on(registry, tmp_path, env_isolate="always", env_dir=tmp_path / "envs") as gateway:
        (reference,) = await builder_of(gateway).run_once()
        state = gateway.services.store.version(IRIS, version)
        assert state is not None
        loaded = gateway.services.cache.peek(state.id)
        assert loaded is not None and loaded.placement is not None and loaded.placement.runtime == "isolated"
    assert reference.status == READY and reference.outputs_reason is None, reference.outputs_reason
    assert reference.profile is not None
    assert [column.name for column in reference.profile.outputs] == ["prediction"]


async def test_on_a_postgresql_state_database_a_failure_is_one_event_and_a_reference_is_read_back(
    registry: Registry, tmp_path: Path, training_parquet: Path
) -> None:
    version = log_iris(registry, training=str(training_parquet))
    broken = log_iris(registry, training=str(tmp_path / "missing.parquet"))  # now the champion
    registry.client.set_registered_model_alias(IRIS, "first", str(version))
    with postgres_database() as url:
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        async with gateway_on(registry, tmp_path, database_url=url) as gateway:
            computed = await builder_of(gateway).run_once()
            assert [reference.status for reference in computed] == [READY, FAILED]
            assert await builder_of(gateway).run_once() == []
            reference = reference_of(gateway, version)
            assert reference == computed[0] and reference.profile is not None
            (event,) = drift_events(gateway)
            assert event.version == broken and "does not exist" in event.reason


@pytest.mark.server
async def test_through_a_real_mlflow_servers_artifact_proxy(tmp_path: Path, training_parquet: Path) -> None:
    """The artifact source and the run's dataset, with the registry and its artifacts behind
    `mlflow server` (the version's artifacts at an ``mlflow-artifacts:`` URI)."""
    server = mlflow_server(tmp_path / "server")
    server.start()
    try:
        uri = server.health_url.removesuffix("/health")
        registry = Registry("server", uri, tmp_path / "server", MlflowClient(tracking_uri=uri))
        path = tmp_path / "reference.parquet"
        iris_frame()[0].to_parquet(path)
        by_artifact = log_iris(registry, artifact=path)
        registry.client.set_registered_model_alias(IRIS, "artifact", str(by_artifact))
        by_dataset = log_iris(registry, training=str(training_parquet))
        async with gateway_on(registry, tmp_path) as gateway:
            computed = {reference.version.version: reference for reference in await builder_of(gateway).run_once()}
    finally:
        server.stop()
    assert (computed[by_artifact].status, computed[by_artifact].source_kind) == (READY, "artifact")
    assert (computed[by_dataset].status, computed[by_dataset].source_kind) == (READY, "dataset")
    assert all(reference.outputs_reason is None for reference in computed.values())


async def test_a_models_latest_version_gets_a_reference_without_an_alias(
    registry: Registry, tmp_path: Path, training_parquet: Path
) -> None:
    older = log_iris(registry, training=str(training_parquet))
    newest = log_iris(registry, training=str(training_parquet))
    registry.client.delete_registered_model_alias(IRIS, "champion")  # the default route serves latest
    async with gateway_on(registry, tmp_path) as gateway:
        computed = await builder_of(gateway).run_once()
        assert [reference.version.version for reference in computed] == [newest]
        assert reference_of(gateway, older) is None


async def test_a_traffic_splits_arm_gets_a_reference(
    registry: Registry, tmp_path: Path, training_parquet: Path
) -> None:
    canary = log_iris(registry, training=str(training_parquet))
    registry.client.set_model_version_tag(IRIS, str(canary), "gateway.traffic.weight", "10")
    default = log_iris(registry, training=str(training_parquet))  # the champion, and latest
    async with gateway_on(registry, tmp_path, role="sync") as gateway:  # loads nothing: the split alone names it
        computed = await builder_of(gateway).run_once()
    assert [reference.version.version for reference in computed] == [canary, default]
