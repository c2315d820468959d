"""Drift in a running gateway over a real MLflow registry: sampled requests binned against the
version's reference, the figures on the drift route, ``GET /drift``, ``/status``,
``registry-gateway status`` and ``/metrics``; one event when the version drifts (not one per
interval); requests drift cannot read, and requests that fail, answered as without drift; a
version with no reference, or a failed one, says why; the fleet's window summed over two
processes on PostgreSQL."""

from __future__ import annotations

import io
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio.to_thread
import pandas as pd
import pytest

from gateway.demo import iris_frame, log_iris_version
from gateway.http import status_page
from gateway.settings import GatewaySettings
from gateway.status_report import render
from registry_sync.database import make_engine, upgrade
from registry_sync.drift.profile import Profile, output_frame, profile_columns
from registry_sync.drift.references import Reference, ReferenceStore
from registry_sync.identity import VersionId
from registry_sync.writeback import logged_model_id
from tests.conftest import Gateway, Registry, empty_registry, running_gateway
from tests.support.postgres import postgres_database

pytestmark = pytest.mark.anyio

FEATURES, TARGET = iris_frame()
SHIFTED = "petal length (cm)"
_names = itertools.count()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    return empty_registry(tmp_path_factory.mktemp("drift-registry"))


def champion(registry: Registry) -> tuple[str, int]:
    """A new iris model (LogisticRegression on all of iris) whose alias champion is its version 1."""
    name = f"iris-drift-{next(_names)}"
    v1 = registry.log(log_iris_version, name)
    registry.client.set_registered_model_alias(name, "champion", str(v1))
    return name, v1


@asynccontextmanager
async def serving(
    registry: Registry, settings: GatewaySettings, name: str, v1: int
) -> AsyncIterator[tuple[Gateway, VersionId]]:
    """A gateway serving ``name``, and the identity of its version ``v1``."""
    async with running_gateway(settings, registry.tracking_uri) as gateway:
        version = gateway.services.catalog.current_id(name, v1)
        assert version is not None
        yield gateway, version


def settings_for(make_settings: Callable[..., GatewaySettings], **overrides: Any) -> GatewaySettings:
    values: dict[str, Any] = {
        "warm_aliases": ["champion"],
        "lease_seconds": 5.0,
        "follow_interval_seconds": 0.1,
        "drift_sample": 1.0,
        "drift_interval_seconds": 3600,  # the tests refresh the figures themselves
        "drift_reference_interval_seconds": 0,  # and save or build the references themselves
        "drift_min_rows": 100,
        "feedback_sample": 0.0,
    }
    return make_settings(**(values | overrides))


def save_reference(gateway: Gateway, version: VersionId, registry: Registry, **fields: Any) -> Profile:
    """The reference the sync leader would have profiled from the training data (here: saved directly)."""
    predictions = registry.pyfunc(version.name, version.version).predict(FEATURES)
    profile = Profile(
        profile_columns(FEATURES), profile_columns(output_frame(predictions)), len(FEATURES), len(FEATURES)
    )
    status = fields.get("status", "ready")
    reference = Reference(
        version,
        status,
        time.time(),
        source_kind="dataset",
        source_uri="file:///train.parquet",
        reason=fields.get("reason"),
        profile=profile if status == "ready" else None,
    )
    ReferenceStore(gateway.services.store.engine).save(reference)
    return profile


async def send(gateway: Gateway, name: str, frame: pd.DataFrame, *, per_request: int = 10) -> None:
    for start in range(0, len(frame), per_request):
        part = frame.iloc[start : start + per_request]
        answer = await gateway.client.post(
            f"/models/{name}/predict", json={"dataframe_split": part.to_dict(orient="split", index=False)}
        )
        assert answer.status_code == 200, answer.text


async def settle(gateway: Gateway) -> None:
    """What was sampled is binned, published and judged now (the background passes' work)."""
    sampler = gateway.services.rooms.drift.sampler
    assert sampler is not None
    await sampler.flush()
    assert await gateway.services.drift.refresh()


async def test_drift_figures_flag_the_shifted_feature_on_every_surface_and_odd_requests_never_fail(
    registry: Registry, make_settings: Callable[..., GatewaySettings]
) -> None:
    name, v1 = champion(registry)
    async with serving(registry, settings_for(make_settings), name, v1) as (gateway, version):
        none_yet = (await gateway.client.get(f"/models/{name}/versions/{v1}/drift")).json()
        assert none_yet["status"] == "no_figures" and "no reference yet" in none_yet["reason"]

        save_reference(gateway, version, registry)
        assert await gateway.services.drift.refresh()  # every process reads the references at the interval
        calm = FEATURES.sample(n=300, replace=True, random_state=1)
        await send(gateway, name, calm)
        # Odd requests: extra columns are answered (and counted as outliers of the version);
        # a body that is not JSON is the client's 400, as it is with drift off.
        extra = FEATURES.head(10).assign(colour="red")
        await send(gateway, name, extra)
        oip = {
            "inputs": [
                {"name": column, "shape": [10], "datatype": "FP64", "data": calm[column].head(10).tolist()}
                for column in FEATURES.columns
            ]
        }
        answered = await gateway.client.post(f"/v2/models/{name}/versions/{v1}/infer", json=oip)
        assert answered.status_code == 200, answered.text
        # A Parquet body is answered; drift cannot read it (counted unreadable, not binned).
        parquet = io.BytesIO()
        FEATURES.head(3).to_parquet(parquet)
        answered = await gateway.client.post(
            f"/models/{name}/predict",
            content=parquet.getvalue(),
            headers={"content-type": "application/vnd.apache.parquet"},
        )
        assert answered.status_code == 200, answered.text
        garbage = await gateway.client.post(
            f"/models/{name}/predict", content=b"{nope", headers={"content-type": "application/json"}
        )
        assert garbage.status_code == 400 and garbage.json()["error_code"] == "BAD_REQUEST"
        await settle(gateway)

        body = (await gateway.client.get(f"/models/{name}/versions/champion/drift")).json()
        assert body["status"] == "ok", body
        assert body["reference"]["source_kind"] == "dataset" and not body["reference"]["weaker"]
        assert body["window"]["rows"] == 320 and body["window"]["requests"] == 33
        assert body["window"]["unreadable_requests"] == 1
        assert body["window"]["mismatched_requests"] == 1 and body["window"]["processes"] == 1
        features = {f["feature"]: f for f in body["features"]}
        assert set(features) == {*FEATURES.columns, "prediction"}
        assert features["prediction"]["kind"] == "output"
        assert not any(f["flagged"] for f in body["features"])
        assert features["prediction"]["missing_share"] == 0  # every answer read, OIP's too

        shifted = calm.assign(**{SHIFTED: calm[SHIFTED] + 2 * FEATURES[SHIFTED].std()})
        await send(gateway, name, pd.concat([shifted] * 2))
        await settle(gateway)
        body = (await gateway.client.get(f"/models/{name}/versions/{v1}/drift")).json()
        assert body["status"] == "drifting"
        flagged_inputs = [f for f in body["flagged"] if not f.startswith("output:")]
        assert flagged_inputs == [SHIFTED], body["flagged"]
        worst = body["features"][0]
        assert worst["feature"] in (SHIFTED, "prediction") and worst["psi"] >= 0.2

        sample = gateway.services.metrics.registry.get_sample_value
        labels = {"model": name, "version": str(v1), "feature": SHIFTED}
        figures = features_by_name(body)[SHIFTED]
        assert sample("gateway_feature_drift", labels | {"statistic": "psi"}) == figures["psi"]
        assert sample("gateway_feature_drift", labels | {"statistic": "p_value"}) == figures["p_value"]
        assert sample("gateway_feature_outlier_share", labels) == figures["outlier_share"]
        assert sample("gateway_drift_window_rows", {"model": name, "version": str(v1)}) == 920
        scraped = (await gateway.client.get("/metrics")).text
        assert f'gateway_feature_drift{{feature="{SHIFTED}",model="{name}",statistic="psi",version="{v1}"}}' in scraped

        listed = (await gateway.client.get("/drift")).json()["rows"]
        assert [(r["model"], r["status"]) for r in listed] == [(name, "drifting")]
        page = await gateway.client.get("/status")
        assert "Drift" in page.text and SHIFTED in page.text
        text = render(await status_page.collect(gateway.services))
        assert f"{name} v{v1}: drifting, 920 rows" in text and f"    {SHIFTED}: PSI" in text

        # One event for the crossing, however many intervals it stays over.
        assert await gateway.services.drift.refresh()
        events = [e for e in gateway.services.store.events(name=name) if e.kind == "drifted"]
        assert len(events) == 1 and SHIFTED in events[0].reason


def features_by_name(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["feature"]: f for f in body["features"]}


async def test_a_failed_reference_says_why_and_the_version_serves(
    registry: Registry, make_settings: Callable[..., GatewaySettings]
) -> None:
    name, v1 = champion(registry)
    async with serving(registry, settings_for(make_settings), name, v1) as (gateway, version):
        save_reference(gateway, version, registry, status="failed", reason="s3://bucket/train.parquet: NoSuchKey")
        assert await gateway.services.drift.refresh()
        await send(gateway, name, FEATURES.head(50))
        await settle(gateway)
        body = (await gateway.client.get(f"/models/{name}/versions/{v1}/drift")).json()
        assert body["status"] == "no_figures" and "NoSuchKey" in body["reason"]
        assert body["reference"]["status"] == "failed"
        dropped = gateway.services.metrics.registry.get_sample_value
        assert dropped("gateway_drift_dropped_total", {"reason": "no_reference"}) == 5


async def test_the_fleet_window_is_the_sum_over_processes_on_postgresql(
    registry: Registry, make_settings: Callable[..., GatewaySettings]
) -> None:
    name, v1 = champion(registry)
    with postgres_database() as url:
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        first = settings_for(make_settings, database_url=url, replica="a")
        second = settings_for(make_settings, database_url=url, replica="b", role="gateway")
        async with (
            running_gateway(first, registry.tracking_uri) as one,
            running_gateway(second, registry.tracking_uri) as two,
        ):
            version = one.services.catalog.current_id(name, v1)
            assert version is not None
            save_reference(one, version, registry)
            await one.services.drift.refresh()
            await two.services.drift.refresh()  # both read the reference
            await send(one, name, FEATURES.iloc[:120])
            await send(two, name, FEATURES.iloc[120:150])
            await settle(one)
            await settle(two)  # publishes its own, reads both
            body = (await two.client.get(f"/models/{name}/versions/{v1}/drift")).json()
            assert body["window"]["processes"] == 2 and body["window"]["rows"] == 150
            await one.services.drift.refresh()
            again = (await one.client.get(f"/models/{name}/versions/{v1}/drift")).json()
            assert again["features"] == body["features"]


async def test_the_write_back_logs_drift_on_the_logged_model_and_its_detail_as_an_artifact(
    registry: Registry, make_settings: Callable[..., GatewaySettings], tmp_path: Path
) -> None:
    name, v1 = champion(registry)
    async with serving(registry, settings_for(make_settings), name, v1) as (gateway, version):
        save_reference(gateway, version, registry)
        assert await gateway.services.drift.refresh()
        await send(gateway, name, FEATURES.sample(n=200, replace=True, random_state=2))
        await settle(gateway)
        rooms = gateway.services.rooms
        await rooms.writeback.figures.publish()  # this process's request counts (if its loop has not yet)
        report = await anyio.to_thread.run_sync(rooms.writeback.writeback.write_once)
        assert report.ok and f"{name}/{v1}" in report.written, report
        body = (await gateway.client.get(f"/models/{name}/versions/{v1}/drift")).json()

    model_id = logged_model_id(version.source)
    assert model_id is not None
    logged = {m.key: m.value for m in registry.client.get_logged_model(model_id).metrics or []}
    max_psi = max(f["psi"] for f in body["features"] if f["kind"] == "input")
    assert logged["production_drift_max_psi"] == max_psi
    assert logged["production_drift_rows"] == 200 and logged["production_drift_flagged"] == 0
    key = "production_drift_psi_petal_length__cm_"
    assert logged[key] == features_by_name(body)[SHIFTED]["psi"]
    run_id = {m.run_id for m in registry.client.get_logged_model(model_id).metrics or []}.pop()
    path = registry.client.download_artifacts(run_id, "gateway/drift.json", str(tmp_path))
    detail = json.loads(Path(path).read_text())
    assert detail["rows"] == 200 and detail["reference"]["source_kind"] == "dataset"
    assert [f["feature"] for f in detail["features"]] == [f["feature"] for f in body["features"]]


async def test_a_version_with_no_source_gets_a_baseline_of_its_first_requests_shown_as_weaker(
    registry: Registry, make_settings: Callable[..., GatewaySettings]
) -> None:
    name, v1 = champion(registry)
    settings = settings_for(make_settings, drift_baseline_rows=50, drift_min_rows=20)
    async with serving(registry, settings, name, v1) as (gateway, version):
        save_reference(gateway, version, registry, status="none", reason="no training dataset, tag or artifact")
        assert await gateway.services.drift.refresh()
        collecting = (await gateway.client.get(f"/models/{name}/versions/{v1}/drift")).json()
        assert collecting["status"] == "no_figures" and "baseline of the first 50 rows" in collecting["reason"]
        await send(gateway, name, FEATURES.iloc[:60])
        await settle(gateway)  # the baseline is profiled and saved
        saved = ReferenceStore(gateway.services.store.engine).get(version)
        assert saved is not None and saved.status == "ready" and saved.source_kind == "baseline"
        assert saved.profile is not None and saved.profile.rows == 50
        assert [c.name for c in saved.profile.outputs] == ["prediction"]
        await send(gateway, name, FEATURES.iloc[60:100])
        await settle(gateway)
        body = (await gateway.client.get(f"/models/{name}/versions/{v1}/drift")).json()
        assert body["reference"]["source_kind"] == "baseline" and body["reference"]["weaker"]
        assert body["window"]["rows"] == 40
        listed = (await gateway.client.get("/drift")).json()["rows"]
        assert [(r["model"], r["weaker"]) for r in listed] == [(name, True)]
        text = render(await status_page.collect(gateway.services))
        assert "(a baseline of its first requests: weaker)" in text


async def test_the_leaders_reference_from_the_runs_training_dataset_is_what_live_traffic_is_judged_on(
    registry: Registry, make_settings: Callable[..., GatewaySettings], tmp_path: Path
) -> None:
    training = tmp_path / "train.parquet"
    FEATURES.to_parquet(training)
    name = f"iris-drift-{next(_names)}"

    def log() -> int:
        import mlflow
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(max_iter=1000).fit(FEATURES, TARGET)
        with mlflow.start_run():
            mlflow.log_input(mlflow.data.from_pandas(FEATURES, source=str(training)), context="training")
            info = mlflow.sklearn.log_model(
                model, name="model", registered_model_name=name, input_example=FEATURES.head(2)
            )
        return int(info.registered_model_version)

    v1 = registry.log(log)
    registry.client.set_registered_model_alias(name, "champion", str(v1))
    settings = settings_for(make_settings)
    async with serving(registry, settings, name, v1) as (gateway, _):
        # The module's registry holds the other tests' models too: this one's reference is ours.
        (computed,) = [r for r in await gateway.services.rooms.drift.builder.run_once() if r.version.name == name]
        assert computed.status == "ready" and computed.source_kind == "dataset", computed
        assert await gateway.services.drift.refresh()
        calm = FEATURES.sample(n=300, replace=True, random_state=4)
        await send(gateway, name, calm)
        await send(gateway, name, calm.assign(**{SHIFTED: calm[SHIFTED] + 2 * FEATURES[SHIFTED].std()}))
        await settle(gateway)
        body = (await gateway.client.get(f"/models/{name}/versions/{v1}/drift")).json()
        assert body["reference"]["source_kind"] == "dataset" and body["reference"]["source_uri"]
        assert {f["feature"] for f in body["features"]} == {*FEATURES.columns, "prediction"}
        assert [f for f in body["flagged"] if not f.startswith("output:")] == [SHIFTED]
