"""Issue 51's "Done when", as a user runs it: drift on a real `mlflow server` and one real
`registry-gateway serve` process.

On that registry, iris versions whose runs logged their training data as a Parquet dataset
(``mlflow.log_input(mlflow.data.from_pandas(features, source=<parquet>), context="training")``),
a small categorical pipeline whose run logged its training data too, and a version whose
``gateway.drift.reference`` tag names a file that is not there. The gateway's settings shorten
every interval (the leader's references, the drift figures, the write-back) and make the
windows small (``GATEWAY_DRIFT_MIN_ROWS``, every request sampled); the test waits on what the
gateway shows (tests/support/waiting.py), never on time.

- Traffic drawn from the training data, 20 windows of ``MIN_ROWS`` rows: no alarm (the bound,
  derived from the thresholds, in :func:`test_traffic_drawn_from_the_training_data_raises_no_alarm_over_20_windows`).
  The 20 windows are those of 20 versions registered from one logged model (one run, one
  training dataset: the same reference), a window each: disjoint windows at once, where one
  version's successive windows would wait on the window's clock (its slices) to move.
- One feature shifted by two standard deviations: flagged, alone among the inputs, at the
  ``DETECTED_AT``-th request and not before, on the drift route, ``/status``, ``/metrics`` and
  the version's LoggedModel in MLflow (the write-back).
- An unseen category of a categorical model: counted as an outlier.
- A reference that cannot be read: its reason on the drift route; the version serves.
"""

from __future__ import annotations

import math
import re
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from prometheus_client.parser import text_string_to_metric_families

from gateway.demo import iris_frame, using_registry
from gateway.settings import GatewaySettings
from registry_sync.drift.verdict import metric_key
from registry_sync.writeback import logged_model_id
from tests.support.servers import LOOPBACK, SERVED_SKLEARN_FORMAT, Process, gateway_server, mlflow_server
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

FEATURES, TARGET = iris_frame()
GUIDE = Path(__file__).resolve().parent.parent / "docs" / "user-guide.md"
TIMEOUT = 120.0  # for what a busy 2-core host does in seconds

MIN_ROWS = 100  # GATEWAY_DRIFT_MIN_ROWS: a feature can be flagged only in a window of this many rows
ROWS_PER_REQUEST = 10  # the shifted traffic's requests
# Every request is sampled (GATEWAY_DRIFT_SAMPLE=1) and the window (an hour, 20,000 rows per
# process: the defaults) keeps them all, so a feature can first be flagged once MIN_ROWS rows are
# in it: at the request that brings it there, not one before.
DETECTED_AT = math.ceil(MIN_ROWS / ROWS_PER_REQUEST)
SHIFTED = "petal length (cm)"
WINDOWS = 20  # windows of training-data traffic judged for false alarms

CALM, DRIFTING, SHOP, BROKEN = "iris-calm", "iris-drifting", "shop", "iris-broken"
MISSING_FILE = "/nonexistent/drift/train.parquet"


@dataclass
class World:
    base: str
    tracking_uri: str
    calm: list[int]  # WINDOWS versions of CALM


def shop_frame() -> tuple[pd.DataFrame, pd.Series]:
    """A categorical model's training data: a colour (red, green, blue) and a size; bought or not."""
    rng = np.random.default_rng(5)
    frame = pd.DataFrame(
        {"colour": rng.choice(["red", "green", "blue"], size=300), "size": rng.normal(10.0, 2.0, size=300)}
    )
    return frame, ((frame["colour"] == "red") | (frame["size"] > 11.0)).astype(int)


def log_version(name: str, features: pd.DataFrame, target: pd.Series, training: Path | None) -> tuple[int, str]:
    """A version of ``name`` (an sklearn model on ``features``), its run logging ``training``
    as its training dataset; (its number, its run id)."""
    import mlflow
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    if "colour" in features:
        encode = ColumnTransformer(
            [("colour", OneHotEncoder(handle_unknown="ignore"), ["colour"])], remainder="passthrough"
        )
        model: Any = Pipeline([("encode", encode), ("classify", LogisticRegression(max_iter=1000))])
    else:
        model = LogisticRegression(max_iter=1000)
    model.fit(features, target)
    with mlflow.start_run() as run:
        if training is not None:
            mlflow.log_input(mlflow.data.from_pandas(features, source=str(training)), context="training")
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            registered_model_name=name,
            input_example=features.head(2),  # a signature of named columns
            pip_requirements=["scikit-learn"],
            serialization_format=SERVED_SKLEARN_FORMAT,
        )
    return int(info.registered_model_version), run.info.run_id


def log_models(tracking_uri: str, root: Path) -> list[int]:
    """Every model of the module, each version routed (an alias), so the sync leader gives it its
    reference before any traffic; the CALM versions' numbers."""
    iris_parquet, shop_parquet = root / "iris-train.parquet", root / "shop-train.parquet"
    FEATURES.to_parquet(iris_parquet)  # the features alone: the signature's inputs
    shop_features, shop_target = shop_frame()
    shop_features.to_parquet(shop_parquet)
    with using_registry(tracking_uri) as client:
        drifting, _ = log_version(DRIFTING, FEATURES, TARGET, iris_parquet)
        client.set_registered_model_alias(DRIFTING, "champion", str(drifting))
        shop, _ = log_version(SHOP, shop_features, shop_target, shop_parquet)
        client.set_registered_model_alias(SHOP, "champion", str(shop))
        # CALM: WINDOWS versions of one logged model, its run's training dataset the same Parquet
        # file (the same reference each): WINDOWS disjoint windows at once, none waiting on the
        # window's clock.
        first, run_id = log_version(CALM, FEATURES, TARGET, iris_parquet)
        source = client.get_model_version(CALM, str(first)).source
        assert source is not None
        more = [
            client.create_model_version(CALM, source, run_id, model_id=logged_model_id(source))
            for _ in range(WINDOWS - 1)
        ]
        calm = [first] + [int(version.version) for version in more]
        for n, version in enumerate(calm):
            client.set_registered_model_alias(CALM, f"w{n}", str(version))
        # BROKEN: a run that logged no dataset, and a tag naming a file that is not there.
        broken, _ = log_version(BROKEN, FEATURES, TARGET, None)
        client.set_model_version_tag(BROKEN, str(broken), "gateway.drift.reference", MISSING_FILE)
        client.set_registered_model_alias(BROKEN, "champion", str(broken))
    return calm


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("drift-loop")
    server = mlflow_server(root / "mlflow")
    server.start()
    gateway: Process | None = None
    try:
        uri = server.health_url.removesuffix("/health")
        calm = log_models(uri, root)
        gateway, base = gateway_server(
            tracking_uri=uri,
            workdir=root / "gateway",
            env={
                "GATEWAY_DRIFT_SAMPLE": "1",
                "GATEWAY_DRIFT_MIN_ROWS": str(MIN_ROWS),
                "GATEWAY_DRIFT_INTERVAL_SECONDS": "0.2",
                "GATEWAY_DRIFT_REFERENCE_INTERVAL_SECONDS": "0.2",
                "GATEWAY_MLFLOW_WRITEBACK_SECONDS": "0.5",
                "GATEWAY_FOLLOW_INTERVAL_SECONDS": "0.2",
                "GATEWAY_MAX_LOADED_MODELS": str(WINDOWS + 8),  # the leader predicts each reference's outputs
                "GATEWAY_FEEDBACK_SAMPLE": "0",
                "GATEWAY_LOG_LEVEL": "warning",
            },
        )
        gateway.start(timeout=TIMEOUT)
        yield World(base, uri, calm)
    finally:
        if gateway is not None:
            gateway.stop()
        server.stop(signal.SIGKILL)  # a throwaway server: no need to wait for it


def get(world: World, path: str) -> Any:
    answer = LOOPBACK.get(world.base + path, timeout=30)
    assert answer.status_code == 200, (path, answer.text)
    return answer.json()


def drift(world: World, name: str, version: int) -> dict[str, Any]:
    return get(world, f"/models/{name}/versions/{version}/drift")  # type: ignore[no-any-return]


def predict(world: World, name: str, version: int, frame: pd.DataFrame) -> None:
    answer = LOOPBACK.post(
        f"{world.base}/models/{name}/versions/{version}/predict",
        json={"dataframe_split": frame.to_dict(orient="split", index=False)},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text


def reference_ready(world: World, name: str, version: int) -> None:
    """Waits for the sync leader's reference of the version, from its run's training dataset."""

    def ready() -> bool:
        reference = drift(world, name, version)["reference"]
        return reference is not None and reference["status"] == "ready"

    wait_until(ready, timeout=TIMEOUT, what=f"the drift reference of {name} v{version}", interval=0.2)
    reference = drift(world, name, version)["reference"]
    assert reference["source_kind"] == "dataset" and not reference["weaker"], reference


def window_of(world: World, name: str, version: int, rows: int) -> dict[str, Any]:
    """The drift route once the figures are those of a window of ``rows`` rows."""
    found: dict[str, Any] = {}

    def holds() -> bool:
        found.update(drift(world, name, version))
        return found.get("window") is not None and found["window"]["rows"] == rows

    wait_until(holds, timeout=TIMEOUT, what=f"{rows} rows in the drift window of {name} v{version}", interval=0.1)
    return found


def events(world: World, name: str, kind: str) -> list[dict[str, Any]]:
    return [e for e in get(world, f"/events?model={name}")["events"] if e["kind"] == kind]


def inputs_flagged(body: dict[str, Any]) -> list[str]:
    return [f for f in body["flagged"] if not f.startswith("output:")]


def section(title: str) -> str:
    """A section of the user guide, its whitespace made single spaces (lines wrap anywhere)."""
    return " ".join(GUIDE.read_text().split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0].split())


# --- the tests ----------------------------------------------------------------------------


def test_a_reference_that_cannot_be_read_shows_its_reason_and_the_version_still_serves(world: World) -> None:
    def failed() -> bool:
        reference = drift(world, BROKEN, 1)["reference"]
        return reference is not None and reference["status"] == "failed"

    wait_until(failed, timeout=TIMEOUT, what=f"the failed reference of {BROKEN}", interval=0.2)
    predict(world, BROKEN, 1, FEATURES.head(5))  # serves: 200
    body = drift(world, BROKEN, 1)
    assert body["status"] == "no_figures", body
    assert MISSING_FILE in body["reference"]["reason"] and MISSING_FILE in body["reason"], body
    assert body["reason"].startswith("the reference could not be used"), body
    # One event (the reference is saved, then the event written: waited for, not raced).
    wait_until(lambda: bool(events(world, BROKEN, "failed")), timeout=TIMEOUT, what=f"{BROKEN}'s failed event")
    assert len(events(world, BROKEN, "failed")) == 1


def test_an_unseen_category_is_counted_as_an_outlier(world: World) -> None:
    reference_ready(world, SHOP, 1)
    features, _ = shop_frame()
    traffic = features.sample(n=MIN_ROWS, random_state=7).reset_index(drop=True)
    unseen = 10
    traffic.loc[: unseen - 1, "colour"] = "purple"  # never in the training data
    predict(world, SHOP, 1, traffic)  # the encoder ignores it: answered
    body = window_of(world, SHOP, 1, MIN_ROWS)
    colour = {f["feature"]: f for f in body["features"]}["colour"]
    assert colour["test"] == "chi2" and colour["rows"] == MIN_ROWS
    assert colour["outlier_share"] == unseen / MIN_ROWS, colour
    assert "colour" in body["flagged"]  # over GATEWAY_DRIFT_OUTLIER_THRESHOLD (0.05)


def test_a_feature_shifted_by_two_standard_deviations_is_flagged_alone_and_shown_everywhere(world: World) -> None:
    reference_ready(world, DRIFTING, 1)
    calm = FEATURES.sample(n=DETECTED_AT * ROWS_PER_REQUEST, replace=True, random_state=11).reset_index(drop=True)
    shifted = calm.assign(**{SHIFTED: calm[SHIFTED] + 2 * FEATURES[SHIFTED].std()})
    requests = [shifted.iloc[n : n + ROWS_PER_REQUEST] for n in range(0, len(shifted), ROWS_PER_REQUEST)]

    # One request short: the window holds fewer than MIN_ROWS rows, so nothing can be flagged yet.
    for part in requests[:-1]:
        predict(world, DRIFTING, 1, part)
    before = window_of(world, DRIFTING, 1, (DETECTED_AT - 1) * ROWS_PER_REQUEST)
    assert before["status"] == "not_enough_rows" and before["flagged"] == [], before

    # The DETECTED_AT-th request: flagged, the shifted feature alone among the inputs.
    predict(world, DRIFTING, 1, requests[-1])
    body = window_of(world, DRIFTING, 1, MIN_ROWS)
    assert body["status"] == "drifting" and inputs_flagged(body) == [SHIFTED], body
    figures = {f["feature"]: f for f in body["features"]}
    assert (
        figures[SHIFTED]["psi"] >= body["thresholds"]["psi"]
        and figures[SHIFTED]["p_value"] < body["thresholds"]["p_value"]
    )
    assert body["window"]["requests"] == DETECTED_AT and body["window"]["processes"] == 1

    # /drift and /status: the version drifting, the shifted feature named.
    (row,) = get(world, f"/drift?model={DRIFTING}")["rows"]
    assert row["status"] == "drifting" and row["worst"][0]["feature"] in (SHIFTED, "output:prediction", "prediction")
    page = LOOPBACK.get(f"{world.base}/status", timeout=30).text
    listed = re.search(rf"<tr><td>{DRIFTING}</td><td>1</td><td>drifting</td><td>{MIN_ROWS}</td>.*?</tr>", page)
    assert listed is not None and f"{SHIFTED} " in listed.group(0) and "(flagged)" in listed.group(0), page

    # /metrics: the gauges are the route's figures.
    scraped = LOOPBACK.get(f"{world.base}/metrics", timeout=30).text
    gauges = {
        (s.name, s.labels.get("feature"), s.labels.get("statistic")): s.value
        for family in text_string_to_metric_families(scraped)
        for s in family.samples
        if s.labels.get("model") == DRIFTING and s.labels.get("version") == "1"
    }
    for statistic in ("psi", "statistic", "p_value"):
        assert gauges[("gateway_feature_drift", SHIFTED, statistic)] == figures[SHIFTED][statistic], statistic
    assert gauges[("gateway_feature_outlier_share", SHIFTED, None)] == figures[SHIFTED]["outlier_share"]
    assert gauges[("gateway_drift_window_rows", None, None)] == MIN_ROWS
    assert gauges[("gateway_drift_flagged", None, None)] == len(body["flagged"])

    # An event for the crossing (written by the leader after the figures it judged are shown).
    wait_until(lambda: bool(events(world, DRIFTING, "drifted")), timeout=TIMEOUT, what="the drifted event")
    judged_at = drift(world, DRIFTING, 1)["read_at"]

    # MLflow: the write-back puts the same figures on the version's LoggedModel.
    client = MlflowClient(world.tracking_uri)
    model_id = logged_model_id(client.get_model_version(DRIFTING, "1").source or "")
    assert model_id is not None
    expected = {
        "production_drift_rows": float(MIN_ROWS),
        "production_drift_flagged": float(len(body["flagged"])),
        "production_drift_max_psi": max(f["psi"] for f in body["features"] if f["kind"] == "input"),
        f"production_drift_psi_{metric_key(SHIFTED)}": figures[SHIFTED]["psi"],
        f"production_drift_outlier_share_{metric_key(SHIFTED)}": figures[SHIFTED]["outlier_share"],
    }
    logged: dict[str, float] = {}

    def written() -> bool:
        latest: dict[str, Any] = {}
        for m in client.get_logged_model(model_id).metrics or []:
            if m.key in expected and (m.key not in latest or (m.timestamp, m.step) >= latest[m.key][0]):
                latest[m.key] = ((m.timestamp, m.step), m.value)
        logged.clear()
        logged.update({key: value for key, (_, value) in latest.items()})
        return logged == expected

    wait_until(written, timeout=TIMEOUT, what=f"the drift figures on {DRIFTING}'s LoggedModel", interval=0.5)

    # Passes of the drift monitor later, still one event for the crossing: not one per pass.
    again = f"a pass of the drift monitor after {judged_at}"
    wait_until(lambda: drift(world, DRIFTING, 1)["read_at"] != judged_at, timeout=TIMEOUT, what=again)
    (drifted,) = events(world, DRIFTING, "drifted")
    assert SHIFTED in drifted["reason"]

    # The user guide states the detection this test sees, and what it is at the defaults.
    guide = section("Drift")
    defaults = GatewaySettings.model_fields
    assert f"`GATEWAY_DRIFT_MIN_ROWS={MIN_ROWS}`" in guide
    detection = f"at the {DETECTED_AT}th request of {ROWS_PER_REQUEST} rows and not at the {DETECTED_AT - 1}th"
    assert f"flagged, alone, {detection}" in guide
    at_defaults = math.ceil(defaults["drift_min_rows"].default / defaults["drift_sample"].default)
    assert f"about {at_defaults:,} single-row requests" in guide


def test_traffic_drawn_from_the_training_data_raises_no_alarm_over_20_windows(world: World) -> None:
    """False alarms, bounded by the thresholds. In each window of MIN_ROWS rows drawn from the
    training data (with replacement: the reference's own distribution), the gateway judges 4
    inputs (Kolmogorov-Smirnov on the reference's bins) and 1 output (the prediction). A
    feature is flagged when its PSI >= 0.2 *and* its test's p-value < 0.001
    (GATEWAY_DRIFT_PSI_THRESHOLD, GATEWAY_DRIFT_P_VALUE), or when over 5% of its rows are
    outliers, which cannot happen here (every value is one of the reference's own: within its
    range, none missing). Under the null a p-value is below 0.001 with probability at most
    0.001 (the binned KS statistic with ``kstwo`` is conservative; the chi-square is asymptotic,
    each class expecting ~33 rows), so a window alarms with probability at most 5 x 0.001 and
    the expected alarms over 20 windows are at most 20 x 0.005 = 0.1: the count allowed is 0
    (a draw with one or more happens with probability <= 0.1, Markov; these draws are seeded).
    The PSI condition makes it rarer still: unasserted."""
    for version in world.calm:
        reference_ready(world, CALM, version)
    for n, version in enumerate(world.calm):
        predict(world, CALM, version, FEATURES.sample(n=MIN_ROWS, replace=True, random_state=100 + n))
    judged: dict[int, dict[str, Any]] = {}
    for version in world.calm:
        judged[version] = window_of(world, CALM, version, MIN_ROWS)
    judged_per_window = len(FEATURES.columns) + 1  # the inputs and the prediction
    assert all(len(body["features"]) == judged_per_window for body in judged.values())
    (p_value,) = {body["thresholds"]["p_value"] for body in judged.values()}  # GATEWAY_DRIFT_P_VALUE's default
    bound = math.floor(WINDOWS * judged_per_window * p_value)  # 20 x 5 x 0.001 = 0.1: 0
    alarms = sum(1 for body in judged.values() if body["flagged"])
    worst_psi = max(f["psi"] for body in judged.values() for f in body["features"])
    least_p = min(f["p_value"] for body in judged.values() for f in body["features"])
    measured = f"{alarms} alarms over {WINDOWS} windows of {MIN_ROWS} rows"
    print(f"{measured}; largest PSI {worst_psi:.3f}, least p-value {least_p:.3g}")
    assert all(body["status"] in ("ok", "drifting") for body in judged.values())  # each window judged
    assert alarms <= bound, judged
    assert events(world, CALM, "drifted") == []
    assert measured in section("Drift")
