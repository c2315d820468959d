"""``registry-gateway status`` and ``/status`` say which process they look at (its replica and
role), and the fleet and the events are whole from any process: a ``--role sync`` process shows
them from the state database and no model table it does not have. The real CLI, against a sync
process and a gateway replica served by uvicorn on a shared state database."""

from __future__ import annotations

from pathlib import Path

import httpx

from gateway.status_report import Report, render
from tests.conftest import empty_registry
from tests.gateway.fleet.processes import ADMIN, fleet_settings
from tests.gateway.protocols.conftest import served_app
from tests.support.models import Doubler, log_pyfunc
from tests.support.waiting import wait_until
from tests.test_cli import run

X = {"dataframe_records": [{"x": 1.5}]}


def test_status_of_a_sync_process_and_of_a_gateway_say_what_each_is(tmp_path: Path) -> None:
    registry = empty_registry(tmp_path / "registry")
    version = registry.log(log_pyfunc, "held", Doubler())
    registry.client.set_registered_model_alias("held", "champion", str(version))
    with (
        served_app(fleet_settings(tmp_path, "sync:8001", "sync"), registry) as (sync, _),
        served_app(fleet_settings(tmp_path, "g1:8000", "gateway"), registry) as (gateway, app),
        httpx.Client(timeout=60) as http,
    ):
        assert http.post(f"{sync}/admin/sync", headers=ADMIN).status_code == 200
        assert http.post(f"{gateway}/models/held/predict", json=X).status_code == 200
        wait_until(
            lambda: (
                {m["name"]: m["replicas"] for m in http.get(f"{sync}/fleet").json()["models"]}.get("held")
                == {"g1:8000": [version]}
            ),
            timeout=30,
            what="the fleet to show g1 holding the model",
        )
        assert http.get(f"{gateway}/health/ready").headers["x-gateway-replica"] == "g1:8000"

        of_sync = run("status", "--url", sync)
        assert of_sync.returncode == 0, of_sync.stderr
        lines = of_sync.stdout.splitlines()
        assert lines[0].startswith(f"gateway {sync}: ok, replica sync:8001, role sync")
        assert "this sync process serves no models" in lines[1]
        fleet = next(line for line in lines if line.startswith("fleet: 2 replicas"))
        assert fleet.endswith("this is sync:8001")
        assert next(line for line in lines if line.startswith("g1:8000\t")).split("\t")[4] == "held"
        assert any(" alias_set " in line and "held" in line for line in lines)  # the state database's events

        of_gateway = run("status", "--url", gateway)
        assert of_gateway.returncode == 0, of_gateway.stderr
        lines = of_gateway.stdout.splitlines()
        assert lines[0].startswith(f"gateway {gateway}: ok, replica g1:8000, role gateway")
        assert "1 versions loaded on g1:8000" in lines[1] and not any(line.startswith("note:") for line in lines)

        page = http.get(f"{sync}/status").text
        assert "replica <b>sync:8001</b>" in page and "This sync process serves no models" in page
        assert "No model to show yet" not in page and "g1:8000" in page and "alias_set" in page
        assert "replica <b>g1:8000</b>" in http.get(f"{gateway}/status").text
        assert app.state.services.settings.replica == "g1:8000"


def test_a_report_read_through_a_balancer_says_its_models_came_from_other_replicas() -> None:
    report = Report(
        url="http://balancer",
        health={"status": "ok", "role": "gateway", "replica": "g2:8000", "loaded_models": 1, "loaded_bytes": 0},
        sources={"health": ["g2:8000"], "models": ["g1:8000", "g2:8000"]},
    )
    lines = render(report).splitlines()
    assert "1 versions loaded on g2:8000" in lines[1]
    assert lines[2].startswith("note: through a balancer: the models below were read from g1:8000, g2:8000")
