"""Registries of the past (issue 41): an MLflow 2.22 tracking server as the registry, and
versions its own client logged (scikit-learn 1.5.2, MLflow 2.22 in their requirements), served
from an environment of their own. MLflow 2.x answers a version search by ``name IN (...)`` with
INVALID_PARAMETER_VALUE, which made every poll fail; 2.x has no webhooks (MLflow 3.3 added
them), so polling is how a 2.x registry is followed. The server and client run from
.venv-mlflow2 (``make mlflow2-env``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from registry_sync.registry import RegistryReader
from tests.conftest import running_gateway, settings_under
from tests.support.mlflow2 import log_iris_2x, mlflow2_server
from tests.support.waiting import eventually, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

NAME = "iris-2x"
COLUMNS = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.3, 2.5, 4.9, 1.5], [6.0, 2.2, 5.0, 1.5], [7.7, 3.0, 6.1, 2.3]]
BODY = {"dataframe_split": {"columns": COLUMNS, "data": ROWS}}
ADMIN = {"Authorization": "Bearer t0ken"}


@pytest.fixture(scope="module")
def registry2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """An MLflow 2.22 server holding two versions its own client logged, champion -> 1."""
    server = mlflow2_server(tmp_path_factory.mktemp("mlflow2"))
    server.start(timeout=120)
    uri = server.health_url.removesuffix("/health")
    try:
        first = log_iris_2x(uri, NAME, c=0.05, rows=ROWS)
        second = log_iris_2x(uri, NAME, c=10.0, rows=ROWS)
        assert first["mlflow"] == "2.22.0"
        MlflowClient(tracking_uri=uri).set_registered_model_alias(NAME, "champion", str(first["version"]))
        yield {"uri": uri, "versions": [first, second], "log": server.log}
    finally:
        server.stop()


def test_a_poll_reads_a_2x_registry(registry2: dict[str, Any]) -> None:
    reader = RegistryReader(tracking_uri=registry2["uri"])
    (model,) = reader.registered_models()
    assert (model.name, model.aliases) == (NAME, {"champion": 1})
    log: Path = registry2["log"]
    start = len(searches(log))
    versions = reader.versions_of([NAME, "not-registered"])  # what a poll asks for the models that changed
    assert sorted(versions[NAME]) == [1, 2] and versions["not-registered"] == {}
    assert all(record.ready for record in versions[NAME].values())
    # again: one search per name from now on (the server's access log counts them), no list tried.
    # The first pass's three searches logged first (a list of names, refused by MLflow 2.x, then
    # one per name): each line is written by the server's worker that answered, after answering,
    # so the last request's line can come before an earlier one's: count them, not the last.
    wait_until(lambda: len(searches(log)) >= start + 3, timeout=10, what="the first pass's three searches")
    before = searches(log)
    assert reader.versions_of([NAME, "not-registered"]) == {NAME: versions[NAME], "not-registered": {}}
    wait_until(lambda: len(searches(log)) >= len(before) + 2, timeout=10, what="the searches in the access log")
    new = searches(log)[len(before) :]
    assert len(new) == 2 and all("+IN+" not in line and "%20IN%20" not in line for line in new), new


def searches(log: Path) -> list[str]:
    """The version searches the server answered, one access-log line each."""
    return [line for line in log.read_text().splitlines() if "/model-versions/search" in line]


async def test_the_gateway_serves_2x_versions_and_follows_an_alias_moved_on_a_2x_server(
    registry2: dict[str, Any], tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    first, second = registry2["versions"]
    settings = settings_under(
        tmp_path, env_dir=tmp_path_factory.mktemp("envs-2x"), warm_aliases=["champion"], admin_token="t0ken"
    )
    async with running_gateway(settings, registry2["uri"]) as gateway:
        answer = await gateway.client.post(f"/models/{NAME}/predict", json=BODY)
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-model-version"] == "1" and answer.headers["x-model-alias"] == "champion"
        assert answer.json() == {"predictions": first["predictions"]}  # what MLflow 2.22's pyfunc said
        runtime = (await gateway.client.get(f"/models/{NAME}/versions/1")).json()["runtime"]
        assert runtime["runtime"] == "isolated", runtime  # scikit-learn 1.5.2 and MLflow 2.22: its own environment

        MlflowClient(tracking_uri=registry2["uri"]).set_registered_model_alias(NAME, "champion", "2")
        report = await gateway.client.post("/admin/sync", headers=ADMIN)  # a poll: every model, as the timer runs it
        assert report.status_code == 200, report.text
        assert report.json()["error"] is None, report.json()

        async def moved() -> Any:
            answer = await gateway.client.post(f"/models/{NAME}/predict", json=BODY)
            return answer if answer.headers.get("x-model-version") == "2" else None

        answer = await eventually(moved, "champion to move to version 2", timeout=120)
        assert answer.json() == {"predictions": second["predictions"]}
