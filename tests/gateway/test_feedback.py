"""Ground truth and live quality in a running gateway: answers kept for their labels,
``POST /feedback`` answered per item under its own scope, quality per version and arm against
scikit-learn's on the same labels, labels that survive a restart and count on another replica
(PostgreSQL), and the guard rolling back a canary that is wrong on labels alone.

The registry is this module's own: an iris classifier trained on the true labels and one
trained on shuffled labels (as fast, and wrong two times in three).
"""

from __future__ import annotations

import itertools
import json
import shlex
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest
from sklearn import metrics

from gateway.demo import iris_frame
from gateway.http import status_page
from gateway.quality import capture
from gateway.routing.guard import QualityLimits, quality_breach
from gateway.settings import GatewaySettings
from gateway.status_report import render
from registry_sync.database import make_engine, upgrade
from registry_sync.feedback import FeedbackStore, KeptPrediction
from registry_sync.quality import CLASSIFICATION, REGRESSION, Labelled, score
from registry_sync.traffic import WEIGHT_TAG
from tests.conftest import Gateway, Registry, empty_registry, running_gateway
from tests.support.keys import add_key, bearer
from tests.support.numeric import gamma
from tests.support.postgres import postgres_database
from tests.support.tables import DOCS_ROOT, docs_query

pytestmark = pytest.mark.anyio

FEATURES, TARGET = iris_frame()
_names = itertools.count()


def log_iris(name: str, *, shuffled: bool) -> int:
    import mlflow.sklearn
    from sklearn.linear_model import LogisticRegression

    target = TARGET.sample(frac=1.0, random_state=3).to_numpy() if shuffled else TARGET.to_numpy()
    model = LogisticRegression(max_iter=1000).fit(FEATURES, target)
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            registered_model_name=name,
            input_example=FEATURES.head(2),
            pip_requirements=["scikit-learn"],
        )
    return int(info.registered_model_version)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    return empty_registry(tmp_path_factory.mktemp("feedback-registry"))


def iris_model(registry: Registry, *, canary: bool = False) -> tuple[str, list[int]]:
    """A model whose champion is right; with ``canary``, a second version trained on shuffled labels."""
    name = f"iris-feedback-{next(_names)}"
    versions = [registry.log(log_iris, name, shuffled=False)]
    if canary:
        versions.append(registry.log(log_iris, name, shuffled=True))
    registry.client.set_registered_model_alias(name, "champion", str(versions[0]))
    return name, versions


def settings_for(make_settings: Callable[..., GatewaySettings], **overrides: Any) -> GatewaySettings:
    values: dict[str, Any] = {
        "warm_aliases": ["champion"],
        "lease_seconds": 5.0,
        "follow_interval_seconds": 0.1,
        "quality_interval_seconds": 3600,  # the tests refresh quality themselves
        "feedback_sample": 1.0,  # every answer kept for its label (off by default)
    }
    return make_settings(**(values | overrides))


async def predict(gateway: Gateway, name: str, row: int, **headers: str) -> tuple[str, str, str]:
    """(request id, route, version) of one iris row's answer."""
    body = {"dataframe_records": [FEATURES.iloc[row].to_dict()]}
    answer = await gateway.client.post(f"/models/{name}/predict", json=body, headers=headers)
    assert answer.status_code == 200, answer.text
    return (
        answer.headers["x-request-id"],
        answer.headers.get("x-model-route", "named"),
        answer.headers["x-model-version"],
    )


async def post_labels(gateway: Gateway, items: list[dict[str, Any]], **headers: str) -> dict[str, Any]:
    answer = await gateway.client.post("/feedback", json=items, headers=headers)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def test_labels_are_answered_per_item_scored_as_scikit_learn_scores_and_survive_a_restart(
    registry: Registry, make_settings: Callable[..., GatewaySettings]
) -> None:
    name, (v1,) = iris_model(registry)
    settings = settings_for(make_settings, auth="keys", feedback_max_items=200)
    labeller = bearer(add_key(settings, "labeller", "feedback"))
    caller = bearer(add_key(settings, "caller", "predict:*,read"))
    rows = list(range(0, 150, 2))  # 75 rows of the three classes
    async with running_gateway(settings, registry.tracking_uri) as gateway:
        answered = {row: await predict(gateway, name, row, **caller) for row in rows}
        assert gateway.services.keeper is not None
        await gateway.services.keeper.flush()  # the background writer's batch, now

        items = [{"request_id": rid, "label": int(TARGET.iloc[row])} for row, (rid, _, _) in answered.items()]
        refused = await gateway.client.post("/feedback", json=items, headers=caller)
        assert refused.status_code == 403 and "feedback" in refused.json()["message"]  # a scope of its own
        first = await post_labels(gateway, items, **labeller)
        assert first["counts"] == {"accepted": len(rows)}
        assert first["results"][0] == {
            "request_id": answered[0][0],
            "status": "accepted",
            "model": name,
            "version": v1,
            "arm": "default",
        }

        # An answer kept two retentions ago is expired; one never kept is unknown. Two hours ago,
        # not in 1970: the keeper's sweep deletes an answer a retention (a week here,
        # GATEWAY_FEEDBACK_RETENTION_HOURS) after it expired, and could run before the post.
        old = KeptPrediction(
            "old-request",
            gateway.services.catalog.current_id(name, v1),
            "default",
            CLASSIFICATION,
            1,
            None,
            time.time() - 2 * 3600,
        )
        FeedbackStore(gateway.services.store.engine).keep([old], retention_seconds=3600)
        rid = answered[2][0]
        mixed = await post_labels(
            gateway,
            [
                {"request_id": answered[0][0], "label": 0},  # a second label for the same request
                {"request_id": "never-answered", "label": 1},
                {"request_id": "old-request", "label": 1},
                {"request_id": rid, "label": "setosa"},  # the answers are integer classes
                {"request_id": rid, "label": 0, "model": "another"},
                {"request_id": rid},
                ["not", "an", "object"],
            ],
            **labeller,
        )
        statuses = [(r["status"], r.get("reason", "")) for r in mixed["results"]]
        assert [s for s, _ in statuses] == [
            "duplicate",
            "unknown",
            "expired",
            "invalid",
            "invalid",
            "invalid",
            "invalid",
        ]
        assert "string" in statuses[3][1] and "another" in statuses[4][1] and "no label" in statuses[5][1]
        assert mixed["counts"] == {"duplicate": 1, "unknown": 1, "expired": 1, "invalid": 4}

        too_many = await gateway.client.post("/feedback", json=items * 3, headers=labeller)
        assert too_many.status_code == 413 and too_many.json()["error_code"] == "REQUEST_LIMIT_EXCEEDED"
        assert "GATEWAY_FEEDBACK_MAX_ITEMS" in too_many.json()["message"]
        garbage = await gateway.client.post("/feedback", content=b"{nope", headers=labeller)
        assert garbage.status_code == 400 and garbage.json()["error_code"] == "BAD_REQUEST"

        # The figures, over the labels joined to the answers, are scikit-learn's on the same data.
        y_true = [int(TARGET.iloc[row]) for row in rows]
        y_pred = registry.pyfunc(name, v1).predict(FEATURES.iloc[rows]).tolist()
        quality = await gateway.client.get(f"/models/{name}/versions/champion/quality", headers=caller)
        assert quality.status_code == 200, quality.text
        body = quality.json()
        assert body["version"] == v1 and [a["arm"] for a in body["arms"]] == ["all", "default"]
        figures = body["arms"][1]
        assert (figures["task"], figures["labels"]) == (CLASSIFICATION, len(rows))
        assert figures["metrics"]["accuracy"] == metrics.accuracy_score(y_true, y_pred)
        for metric, reference in (
            ("precision_macro", metrics.precision_score(y_true, y_pred, average="macro")),
            ("recall_macro", metrics.recall_score(y_true, y_pred, average="macro")),
            ("f1_macro", metrics.f1_score(y_true, y_pred, average="macro")),
        ):
            assert abs(figures["metrics"][metric] - reference) <= 2 * gamma(len(rows), np.float64), metric
        assert "log_loss" not in figures["metrics"]  # the answers carry no probabilities

        assert await gateway.services.quality.refresh()
        sample = gateway.services.metrics.registry.get_sample_value
        gauge = {"model": name, "version": str(v1), "arm": "default"}
        assert sample("gateway_quality", gauge | {"metric": "accuracy"}) == figures["metrics"]["accuracy"]
        assert sample("gateway_quality_labels", gauge) == len(rows)
        assert sample("gateway_feedback_labels_total", gauge | {"status": "accepted"}) == len(rows)
        listed = (await gateway.client.get("/quality", headers=caller)).json()
        assert [(r["model"], r["arm"], r["labels"]) for r in listed["rows"]] == [(name, "default", len(rows))]
        bad = await gateway.client.get(f"/models/{name}/versions/0/quality", headers=caller)
        assert bad.status_code == 400
        page = await gateway.client.get("/status", headers=caller)
        assert "Live quality" in page.text and name in page.text
        text = render(await status_page.collect(gateway.services))  # what `registry-gateway status` prints
        accuracy = figures["metrics"]["accuracy"]
        assert f"{name} v{v1} default: {len(rows)} labels (classification): accuracy {accuracy:.4g}" in text

    async with running_gateway(settings, registry.tracking_uri) as restarted:
        again = await post_labels(restarted, items[:1], **labeller)
        assert again["counts"] == {"duplicate": 1}  # the label was in the database before the answer
        quality = await restarted.client.get(f"/models/{name}/versions/{v1}/quality", headers=caller)
        assert quality.json()["arms"][0]["labels"] == len(rows)


async def test_the_guard_rolls_back_a_canary_that_is_wrong_on_its_labels_alone(
    registry: Registry, make_settings: Callable[..., GatewaySettings]
) -> None:
    name, (good, wrong) = iris_model(registry, canary=True)
    registry.client.set_model_version_tag(name, str(wrong), WEIGHT_TAG, "50")
    registry.client.set_model_version_tag(name, str(wrong), "gateway.guard.min_labels", "40")
    settings = settings_for(make_settings, guard_min_labels=10_000)  # the version tag says 40
    async with running_gateway(settings, registry.tracking_uri) as gateway:
        await gateway.services.reconciler.settle()  # the canary warm: it takes its share
        answered = [await predict(gateway, name, i % 150, **{"X-Route-Key": f"k{i}"}) for i in range(240)]
        arms = {route for _, route, _ in answered}
        assert arms == {"default", "canary"}
        assert gateway.services.keeper is not None
        await gateway.services.keeper.flush()
        items = [{"request_id": rid, "label": int(TARGET.iloc[i % 150])} for i, (rid, _, _) in enumerate(answered)]
        # The labels of the first 40 answers only: too few on either arm to judge.
        await post_labels(gateway, items[:40])
        assert await gateway.services.quality.refresh()
        assert gateway.services.catalog.split(name).arms[wrong].rolled_back is None
        assert gateway.services.guard.window(name, "canary", wrong) is not None  # served, and no 5xx

        await post_labels(gateway, items[40:])
        assert await gateway.services.quality.refresh()
        await gateway.services.guard.settle()
        [event] = [e for e in gateway.services.store.events(name=name) if e.kind == "rolled_back"]
        assert event.version == wrong and "two-proportion z-test" in event.reason
        mine = gateway.services.quality.latest[(gateway.services.catalog.current_id(name, wrong), "canary")]
        theirs = gateway.services.quality.latest[(gateway.services.catalog.current_id(name, good), "default")]
        accuracy = (mine.scored.figures.metrics["accuracy"], theirs.scored.figures.metrics["accuracy"])
        assert f"accuracy {accuracy[0]:.3f}" in event.reason and f"{accuracy[1]:.3f}" in event.reason
        assert accuracy[1] - accuracy[0] > 0.3
        sample = gateway.services.metrics.registry.get_sample_value
        assert sample("gateway_quality_rollbacks_total", {"model": name}) == 1
        assert sample("gateway_canary_rollbacks_total", {"model": name}) == 1
        await gateway.services.catalog.refresh()
        assert gateway.services.catalog.split(name).arms[wrong].rolled_back is not None
        after = {(await predict(gateway, name, 0, **{"X-Route-Key": f"k{i}"}))[2] for i in range(20)}
        assert after == {str(good)}


def test_a_drop_past_the_limit_rolls_back_only_when_it_is_significant() -> None:
    limits = QualityLimits(min_labels=20, max_quality_drop=0.05, confidence=0.99)

    def classified(right: int, n: int) -> Any:
        return score([Labelled(1, None, 1)] * right + [Labelled(1, None, 0)] * (n - right), CLASSIFICATION)

    # 0.80 against 0.90 on 50 labels each: a drop of 0.10, but p = 0.08 (z-test): not at 99%
    assert quality_breach(limits, classified(40, 50), classified(45, 50)) is None
    # the same accuracies on 500 labels each: p < 1e-5
    reason = quality_breach(limits, classified(400, 500), classified(450, 500))
    assert reason is not None and "0.800" in reason and "0.900" in reason and "z-test" in reason
    # significant but within the limit: 0.90 against 0.93 on 5,000 each
    assert quality_breach(limits, classified(4500, 5000), classified(4650, 5000)) is None
    # too few labels on one arm
    assert quality_breach(limits, classified(0, 19), classified(45, 50)) is None

    rng = np.random.default_rng(1)

    def regressed(spread: float, n: int) -> Any:
        truth = rng.normal(0, 1, n)
        return score(
            [Labelled(float(t + e), None, float(t)) for t, e in zip(truth, rng.normal(0, spread, n), strict=True)],
            REGRESSION,
        )

    # errors twice as large on 200 labels: Welch's t-test finds it
    reason = quality_breach(limits, regressed(2.0, 200), regressed(1.0, 200))
    assert reason is not None and "Welch" in reason
    # the same spread: no rollback (a rise past 5% by chance is not significant at 99%)
    assert quality_breach(limits, regressed(1.0, 30), regressed(1.0, 30)) is None


async def test_feedback_sent_to_another_replica_counts_on_postgresql(
    registry: Registry, make_settings: Callable[..., GatewaySettings]
) -> None:
    name, (v1,) = iris_model(registry)
    with postgres_database() as url:
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        one = settings_for(make_settings, database_url=url, replica="a")
        two = settings_for(make_settings, database_url=url, replica="b", role="gateway")
        async with running_gateway(one, registry.tracking_uri) as a, running_gateway(two, registry.tracking_uri) as b:
            answered = [await predict(a, name, row) for row in range(0, 150, 10)]
            assert a.services.keeper is not None
            await a.services.keeper.flush()
            items = [{"request_id": rid, "label": int(TARGET.iloc[i * 10])} for i, (rid, _, _) in enumerate(answered)]
            given = await post_labels(b, items)  # answered by replica a, labelled on replica b
            assert given["counts"] == {"accepted": len(items)}
            assert (await post_labels(a, items[:1]))["counts"] == {"duplicate": 1}
            for replica in (a, b):
                assert await replica.services.quality.refresh()
                [figures] = replica.services.quality.of_model(name)
                assert (figures.id.version, figures.arm, figures.scored.figures.labels) == (v1, "default", len(items))


GUIDE = Path(__file__).resolve().parents[2] / "docs" / "user-guide.md"


def guide_commands() -> list[list[str]]:
    text = GUIDE.read_text()
    start = text.index("<!-- feedback commands: run by tests/gateway/test_feedback.py -->")
    block = text[start : text.index("<!-- end of the feedback commands -->", start)]
    return [shlex.split(line) for line in block.splitlines() if line.startswith("curl ")]


async def test_the_user_guides_feedback_commands_work_as_written(
    registry: Registry, make_settings: Callable[..., GatewaySettings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One after the other, as pasted into a shell against `make demo` (port 8000): the label
    sent at once finds its answer, though the keeper has not written it yet (its pass put off
    for an hour here; it runs every 0.2 s, and a label a moment after its answer came first)."""
    monkeypatch.setattr(capture, "FLUSH_SECONDS", 3600.0)
    version = registry.log(log_iris, "iris", shuffled=False)
    registry.client.set_registered_model_alias("iris", "champion", str(version))
    commands = guide_commands()
    assert len(commands) == 3
    async with running_gateway(settings_for(make_settings), registry.tracking_uri) as gateway:
        answers = []
        for words in commands:
            url = next(w for w in words if w.startswith("localhost:8000/"))
            headers = dict(words[i + 1].split(": ", 1) for i, w in enumerate(words) if w == "-H")
            body = next((words[i + 1] for i, w in enumerate(words) if w == "-d"), None)
            path = url.removeprefix("localhost:8000")
            if body is None:
                answer = await gateway.client.get(path, headers=headers)
            else:
                answer = await gateway.client.post(path, content=body, headers=headers)
            assert answer.status_code == 200, (words, answer.text)
            answers.append(answer.json())
        accepted = {"request_id": "order-1234", "status": "accepted", "model": "iris", "version": version}
        assert answers[1] == {"counts": {"accepted": 1}, "results": [accepted | {"arm": "default"}]}
        assert answers[2]["model"] == "iris" and answers[2]["arms"][0]["labels"] == 1
        assert answers[2]["arms"][0]["metrics"]["accuracy"] == (1.0 if answers[0]["predictions"] == [0] else 0.0)


async def test_each_row_of_an_answer_of_several_takes_a_label_counted_by_quality_and_the_tables(
    registry: Registry, make_settings: Callable[..., GatewaySettings], tmp_path: Path
) -> None:
    name, (v1,) = iris_model(registry)
    root = tmp_path / "tables"
    settings = settings_for(make_settings, records_sink=f"parquet+file://{root}", records_sample=1.0)
    rows = list(range(0, 150, 3))  # 50 rows of the three classes, in one request
    async with running_gateway(settings, registry.tracking_uri) as gateway:
        body = {"dataframe_records": FEATURES.iloc[rows].to_dict(orient="records")}
        answer = await gateway.client.post(f"/models/{name}/predict", json=body)
        assert answer.status_code == 200, answer.text
        many = answer.headers["x-request-id"]
        predicted = answer.json()["predictions"]
        one, _, _ = await predict(gateway, name, 0)
        assert gateway.services.keeper is not None
        await gateway.services.keeper.flush()

        truth = [int(TARGET.iloc[row]) for row in rows]
        items = [{"request_id": many, "row": i, "label": label} for i, label in reversed(list(enumerate(truth)))]
        given = await post_labels(gateway, items)
        assert given["counts"] == {"accepted": len(rows)}
        assert given["results"][0] == {
            "request_id": many,
            "row": len(rows) - 1,
            "status": "accepted",
            "model": name,
            "version": v1,
            "arm": "default",
        }
        garbage = await post_labels(
            gateway,
            [
                {"request_id": many, "label": 0},  # which row?
                {"request_id": many, "row": len(rows), "label": 0},
                {"request_id": many, "row": -1, "label": 0},
                {"request_id": many, "row": "3", "label": 0},
                {"request_id": many, "row": True, "label": 0},
                {"request_id": many, "row": 2.5, "label": 0},
                {"request_id": many, "row": 3, "label": "setosa"},  # the answers are integer classes
                {"request_id": many, "row": 3, "label": 0},  # labelled above
                {"request_id": one, "row": 1, "label": 0},  # a one-row answer has row 0 only
                {"request_id": one, "row": 0, "label": int(TARGET.iloc[0])},
                {"request_id": one, "row": 0, "label": 1},  # twice in a batch
                {"request_id": "never-answered", "row": 7, "label": 0},
            ],
        )
        results = [(r["status"], r.get("row"), r.get("reason", "")) for r in garbage["results"]]
        assert [status for status, _, _ in results] == ["invalid"] * 7 + ["duplicate", "invalid", "accepted"] + [
            "duplicate",
            "unknown",
        ]
        assert f"{len(rows)} rows" in results[0][2] and "row" in results[0][2]
        assert f"row {len(rows)} is out of range" in results[1][2] and results[1][1] == len(rows)
        assert all("index of a row" in reason for _, _, reason in results[2:6])
        assert "string" in results[6][2] and "out of range" in results[8][2] and "1 row" in results[8][2]
        assert results[11][1] == 7  # the row is echoed back where the item named one

        quality = await gateway.client.get(f"/models/{name}/versions/{v1}/quality")
        figures = quality.json()["arms"][0]
        assert figures["labels"] == len(rows) + 1  # each labelled row, and the one-row answer
        assert figures["metrics"]["accuracy"] == metrics.accuracy_score(
            truth + [int(TARGET.iloc[0])], predicted + [registry.pyfunc(name, v1).predict(FEATURES.iloc[[0]])[0]]
        )

    # the tables: a label row per labelled row, and evaluate's join counts each one
    import pandas as pd

    from gateway.observability.records.evaluation import joined

    labels = pd.read_parquet(root / "labels", partitioning=None)
    assert sorted(zip(labels["request_id"], labels["row"], strict=True)) == sorted(
        [(many, i) for i in range(len(rows))] + [(one, 0)]
    )
    found = joined(str(root), name, str(v1))
    assert (len(found.frame), found.rows, found.unlabelled) == (len(rows) + 1, len(rows) + 1, 0)
    mine = found.frame[found.frame["request_id"] == many].sort_values("row")
    assert mine["prediction"].tolist() == predicted and mine["label"].tolist() == truth
    # and the documented DuckDB join picks each labelled row's own prediction out of the answer
    query = docs_query().replace(DOCS_ROOT, str(root))
    picked = duckdb.sql(f'SELECT "row", prediction, label FROM ({query}) WHERE request_id = ?', params=[many])
    assert sorted((r, json.loads(p), json.loads(lab)) for r, p, lab in picked.fetchall()) == [
        (i, p, t) for i, (p, t) in enumerate(zip(predicted, truth, strict=True))
    ]
