"""GET /status: the gateway's state on one page, server-rendered, no assets from anywhere,
behind the read scope; seen in a real Chromium (issue 25)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.demo import IRIS, log_iris_version
from gateway.http.status_page import collect, render_html
from gateway.status_report import Report, render
from tests.conftest import Registry, empty_registry, running_gateway, settings_under
from tests.gateway.protocols.conftest import served
from tests.support import models as fault_models
from tests.support.browser import dump_dom
from tests.support.keys import add_key
from tests.support.models import Doubler, FlakyLoad, log_pyfunc

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def split_registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    registry = empty_registry(tmp_path_factory.mktemp("status-registry"))
    first = registry.log(log_iris_version, IRIS, c=1.0)
    second = registry.log(log_iris_version, IRIS, c=5.0)
    registry.client.set_registered_model_alias(IRIS, "champion", str(first))
    registry.client.set_model_version_tag(IRIS, str(second), "gateway.traffic.weight", "10")
    return registry


async def test_the_page_shows_models_versions_splits_budget_and_events(
    split_registry: Registry, tmp_path: Path
) -> None:
    settings = settings_under(tmp_path, warm_aliases=["champion"])
    async with running_gateway(settings, split_registry.tracking_uri) as gw:
        page = await gw.client.get("/status")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    text = page.text
    assert "<script" not in text and "http://" not in text.replace(split_registry.tracking_uri, "")  # nothing fetched
    assert '<meta http-equiv="refresh"' in text
    for shown in (">ready<", "Memory budget", "Last registry sync", ">champion<", "Traffic of iris", ">10%<", "warmed"):
        assert shown in text, shown
    assert "in process" in text and "loaded" in text


async def test_the_page_needs_the_read_scope(split_registry: Registry, tmp_path: Path) -> None:
    settings = settings_under(tmp_path, auth="keys")
    reader = add_key(settings, "reader", "read")
    caller = add_key(settings, "caller", "predict:*")
    async with running_gateway(settings, split_registry.tracking_uri) as gw:
        assert (await gw.client.get("/status")).status_code == 401
        assert (await gw.client.get("/status", headers={"Authorization": f"Bearer {caller}"})).status_code == 403
        assert (await gw.client.get("/status", headers={"Authorization": f"Bearer {reader}"})).status_code == 200


async def test_an_alias_that_cannot_follow_mlflow_shows_where_mlflow_points_and_why(tmp_path: Path) -> None:
    """MLflow moves a warm alias to a version that fails to load: the old one keeps serving,
    and the page, the CLI's report and GET /models/{name} all say that MLflow points elsewhere
    and why; the events name the alias."""
    name = "unfollowed"
    registry = empty_registry(tmp_path / "registry")
    old = registry.log(log_pyfunc, name, Doubler())
    new = registry.log(log_pyfunc, name, FlakyLoad())
    registry.client.set_registered_model_alias(name, "champion", str(old))
    settings = settings_under(tmp_path / "gw", warm_aliases=["champion"], admin_token="t0ken")
    async with running_gateway(settings, registry.tracking_uri) as gw:
        fault_models.FAIL_LOADS.set()
        registry.client.set_registered_model_alias(name, "champion", str(new))
        synced = await gw.client.post("/admin/sync", params={"model": name}, headers={"Authorization": "Bearer t0ken"})
        assert synced.status_code == 200, synced.text
        detail = (await gw.client.get(f"/models/{name}")).json()
        page = (await gw.client.get("/status")).text
        text = render(await collect(gw.services))
        fault_models.FAIL_LOADS.clear()
    assert detail["aliases"] == {"champion": old} and detail["registry_aliases"] == {"champion": new}
    behind = detail["aliases_behind"]["champion"]
    assert (behind["registry_version"], behind["serving_version"]) == (new, old)
    assert "corrupt" in behind["reason"] and behind["since"]
    assert "Aliases not at MLflow's version here" in page and f"champion (MLflow: v{new})" in page
    assert "weights file is corrupt" in page
    row = next(line for line in text.splitlines() if line.startswith(f"{name}\t{old}\t"))
    assert f"champion (MLflow: v{new})" in row
    assert f"  {name}@champion: MLflow points at v{new}, v{old} serves here: swap of alias 'champion'" in text
    assert f"alias_set    {name} v{new}: champion {old} -> {new}" in text  # the event names the alias


def test_a_version_refused_before_it_had_an_environment_reads_without_none() -> None:
    """What GET /models/{name} says of a version whose environment could not be built (no
    environment, no Python, no worker), and of an isolated one not loaded: no None for people."""
    refused = {
        "version": 2,
        "aliases": [],
        "status": "READY",
        "refused": "its environment could not be built: uv said no (GATEWAY_ENV_MANAGER=uv)",
        "runtime": {"runtime": "isolated", "reason": "refused: uv said no", "environment": None, "python": None},
    }
    idle = {
        "version": 1,
        "aliases": ["champion"],
        "status": "READY",
        "refused": None,
        "runtime": {"runtime": "isolated", "reason": "r", "environment": "e1", "python": "3.11.7", "worker_pids": []},
    }
    health = {"status": "ok", "registry": "r", "role": "all", "registered_models": 1}
    report = Report(url="", health=health)
    report.models = [{"name": "m", "default_version": 1, "versions": [refused, idle]}]
    page = render_html(report, budget={"loaded_bytes": 0, "max_bytes": 1, "loaded": 0, "max_models": 1}, sync="never")
    text = render(report)
    for shown in (page, text):
        assert "None" not in shown and "workers none" not in shown
        assert "isolated, no environment" in shown and "isolated env e1 (Python 3.11.7, no worker running)" in shown


def test_what_the_registry_names_is_escaped() -> None:
    report = Report(url="", health={"status": "ok", "registry": "<b>r</b>"})
    report.models = [
        {
            "name": "<script>alert(1)</script>",
            "default_version": 1,
            "versions": [{"version": 1, "aliases": ["<i>a</i>"], "refused": "<img src=x>", "status": "READY"}],
        }
    ]
    report.events = [{"at": "2026-01-01T00:00:00", "model": "<m>", "version": None, "kind": "refused", "reason": "<x>"}]
    page = render_html(report, budget={"loaded_bytes": 0, "max_bytes": 1, "loaded": 0, "max_models": 1}, sync="never")
    for raw in ("<script>", "<i>a</i>", "<img src=x>", "<m>", "<x>", "<b>r</b>"):
        assert raw not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


@pytest.mark.e2e
def test_the_page_renders_in_chromium_with_every_other_host_unreachable(
    split_registry: Registry, tmp_path: Path
) -> None:
    with served(settings_under(tmp_path / "gw", warm_aliases=["champion"]), split_registry) as address:
        dom = dump_dom(f"http://{address}/status", tmp_path / "profile")
    assert "<h1>registry-gateway</h1>" in dom and "Traffic of iris" in dom and "champion" in dom, dom[-2000:]


def test_sizes_read_in_the_unit_that_shows_them() -> None:
    from gateway.sizes import readable

    assert [readable(n) for n in (512, 13_107, 289_340 * 1024, 3 * 2**30)] == [
        "512 B",
        "12.8 KiB",
        "282.6 MiB",
        "3.0 GiB",
    ]
