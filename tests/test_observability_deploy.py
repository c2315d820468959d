"""deploy/grafana and deploy/prometheus, checked against what a real gateway exports.

- Every PromQL expression (dashboard targets, template variable queries, recording and
  alerting rules) parses, selects only series a gateway's GET /metrics exports (or `up`,
  Prometheus' own), and matches and groups only by labels those series carry
  (tests/support/promql.py).
- The rules file's shape (groups, rules, durations, severities, annotations), the dashboard's
  (unique panel ids, the `datasource` variable everywhere, refIds), and each alert's runbook:
  a heading of docs/.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import promql_parser
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import create_app
from gateway.loop_metrics import LoopCounter, LoopHistogram
from gateway.metrics import GatewayMetrics
from registry_sync.registry import RegistryReader
from tests.conftest import settings_under
from tests.support.promql import Labels, parse, read

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "registry-gateway.json"
RULES = ROOT / "deploy" / "prometheus" / "alerts.yaml"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Prometheus adds these to every series it scrapes.
TARGET_LABELS = frozenset({"job", "instance"})
# Prometheus' own series per target: the only name the files may use besides the gateway's.
PROMETHEUS_SERIES = {"up": TARGET_LABELS}
# The series each `# TYPE` of the exposition stands for: prometheus_client's suffixes, and the
# `_created` series it prints beside each labelled child once there is one (the parser reads
# a printed one as a gauge family of its own).
SUFFIXES: dict[str, dict[str, Labels]] = {
    "counter": {"_total": frozenset(), "_created": frozenset()},
    "gauge": {"": frozenset()},
    "histogram": {"_bucket": frozenset({"le"}), "_sum": frozenset(), "_count": frozenset(), "_created": frozenset()},
    "summary": {"": frozenset({"quantile"}), "_sum": frozenset(), "_count": frozenset(), "_created": frozenset()},
}
SEVERITIES = {"critical", "warning", "info"}
ALERT_KEYS = {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
RECORD_KEYS = {"record", "expr", "labels"}
RECORD_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*:[a-zA-Z0-9_:]*$")  # level:metric:operations


# --- what a gateway exports --------------------------------------------------------------


def _families_of(collector: Any) -> dict[str, frozenset[str]]:
    """Each family a registered collector renders -> its label names: gateway.loop_metrics'
    families say them, prometheus_client's metrics keep them in _name and _labelnames, and a
    collector of its own (the process's, the garbage collector's) shows them in its samples."""
    if isinstance(collector, LoopCounter | LoopHistogram):
        return {collector.name: frozenset(collector.labelnames)}
    if hasattr(collector, "_labelnames"):
        return {collector._name: frozenset(collector._labelnames)}
    return {family.name: frozenset(k for s in family.samples for k in s.labels) for family in collector.collect()}


async def _scrape(root: Path) -> tuple[str, GatewayMetrics]:
    # The lightest real gateway: a replica (it never reads MLflow, so the reader's URI is never
    # dialled) started in the background (its /metrics answers while it waits for a sync
    # leader that never comes). The names and labels a gateway exports do not depend on
    # traffic: a family with no samples yet still has its # TYPE line.
    settings = settings_under(root, role="gateway")
    app = create_app(settings, reader=RegistryReader(tracking_uri="http://127.0.0.1:9"), start_in_background=True)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            response = await client.get("/metrics")
        metrics: GatewayMetrics = app.state.services.metrics
    assert response.status_code == 200
    return response.text, metrics


@pytest.fixture(scope="module")
def schema(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Labels]:
    """Each series name a gateway exports -> its label names, Prometheus' target labels included."""
    text, metrics = anyio.run(_scrape, tmp_path_factory.mktemp("observability"))
    # Label names come from the metric objects: a labelled family with no samples yet prints
    # only HELP and TYPE. prometheus_client keeps them in _labelnames; the registry's
    # collectors are the families it renders (labelled children are never registered).
    label_names = {
        name: labels
        for collector in metrics.registry._collector_to_names
        for name, labels in _families_of(collector).items()
    }
    found: dict[str, Labels] = dict(PROMETHEUS_SERIES)
    families = list(text_string_to_metric_families(text))
    for family in families:
        if family.name not in label_names:  # a printed _created series: its metric's suffixes name it
            assert family.name.removesuffix("_created") in label_names, f"{family.name} is no metric of GatewayMetrics"
            continue
        assert family.type in SUFFIXES, f"{family.name}: a {family.type} family; name its series here"
        for suffix, extra in SUFFIXES[family.type].items():
            found[family.name + suffix] = label_names[family.name] | extra | TARGET_LABELS
    for family in families:
        for sample in family.samples:
            assert sample.name in found, f"{sample.name}: a series the suffixes above do not name"
            assert set(sample.labels) <= found[sample.name], sample
    assert {f.name for f in families} >= set(label_names), "a metric of the registry is not in /metrics"
    return found


def test_the_scrape_has_the_gateways_metrics(schema: dict[str, Labels]) -> None:
    # A few the files lean on, as /metrics spells them: if these moved, so did the suffix rules.
    assert schema["gateway_requests_total"] == {"model", "version", "status", "job", "instance"}
    assert schema["gateway_request_duration_seconds_bucket"] == {"model", "version", "le", "job", "instance"}
    assert schema["gateway_codec_seconds_count"] == {"model", "version", "stage", "job", "instance"}
    assert schema["gateway_sync_last_success_age_seconds"] == TARGET_LABELS
    assert "gateway_requests_created" in schema and "gateway_requests" not in schema


# --- the reader itself ---------------------------------------------------------------------

SCHEMA: dict[str, Labels] = {
    "req_total": frozenset({"model", "status", "job", "instance"}),
    "lat_bucket": frozenset({"model", "le", "job", "instance"}),
    "budget": frozenset({"job", "instance"}),
    "used": frozenset({"job", "instance"}),
}


def test_the_reader_finds_the_metrics_and_the_result_labels() -> None:
    reading = read(
        'histogram_quantile(0.99, sum by (le, model) (rate(lat_bucket{model=~"$model"}[$__rate_interval])))'
        ' > 1 and on (model) sum by (model) (rate(req_total{status=~"5.."}[5m] offset 1h)) > 0.1',
        SCHEMA,
    )
    assert reading.metrics == {"lat_bucket", "req_total"} and not reading.problems
    assert reading.labels == frozenset({"model"})
    assert read("used / (budget > 0) > 0.9", SCHEMA).labels == TARGET_LABELS
    assert read('absent(up{job="g"} == 1)', {"up": TARGET_LABELS}).labels == frozenset()
    assert read('absent(up{job="g"})', {"up": TARGET_LABELS}).labels == frozenset({"job"})
    assert read('label_replace(used, "host", "$1", "instance", "(.*):.*")', SCHEMA).labels == TARGET_LABELS | {"host"}
    assert read("scalar(sum(used))", SCHEMA).labels is None
    assert read("sum without (instance) (used)", SCHEMA).labels == frozenset({"job"})


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        ("sum by (modle) (rate(req_total[5m]))", "groups by 'modle'"),
        ('req_total{stauts="500"}', "no label 'stauts'"),
        ("rate(requests_total[5m])", "requests_total is not exported"),
        ("sum by (model) (req_total) / sum(req_total)", "one-to-one match of ['model'] and []"),
        ("used / on (model) req_total", "matches on 'model'"),
        ("histogram_quantile(0.5, sum by (model) (rate(lat_bucket[5m])))", "no 'le' label"),
        ("sum by (model) (req_total) and used", "`and` of ['model'] and ['instance', 'job'] never matches"),
        ("req_total / ignoring (modle) req_total", "ignores 'modle'"),
        ("used * on (job, instance) group_left (model) budget", "takes 'model'"),
        ('{job="x"}', "selects no metric by name"),
    ],
)
def test_the_reader_finds_what_is_wrong(expr: str, problem: str) -> None:
    problems = read(expr, SCHEMA).problems
    assert len(problems) == 1 and problem in problems[0], problems


def test_an_expression_that_does_not_parse_is_refused() -> None:
    with pytest.raises(ValueError):
        parse("sum by (model (rate(req_total[5m]))")
    with pytest.raises(ValueError):
        parse("rate(req_total[$interval])")  # not a macro this knows


# --- the dashboard ---------------------------------------------------------------------------


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows too."""
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _targets() -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{panel['title']} {target.get('refId', '?')}", target)
        for panel in _panels(_dashboard()["panels"])
        for target in panel.get("targets", [])
    ]


def _variable_query(variable: dict[str, Any]) -> str:
    query = variable["query"]
    return str(query["query"] if isinstance(query, dict) else query)


def test_the_dashboard_has_its_variables() -> None:
    dashboard = _dashboard()
    assert dashboard["schemaVersion"] >= 36 and dashboard["uid"] and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert list(variables) == ["datasource", "instance", "model"], "each is defined before the ones that use it"
    assert (variables["datasource"]["type"], variables["datasource"]["query"]) == ("datasource", "prometheus")
    for name in ("instance", "model"):
        variable = variables[name]
        assert variable["type"] == "query" and variable["datasource"] == DATASOURCE
        assert variable["multi"] and variable["includeAll"], name
    assert re.fullmatch(r"label_values\(gateway_requests_total(\{.*\})?, model\)", _variable_query(variables["model"]))


def test_every_panel_reads_the_datasource_variable_with_unique_ids() -> None:
    panels = list(_panels(_dashboard()["panels"]))
    ids = Counter(panel["id"] for panel in panels)
    assert not [i for i, n in ids.items() if n > 1], f"panel ids used twice: {ids}"
    for panel in panels:
        assert panel.get("description"), f"{panel['title']}: no description"
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE, panel["title"]
        targets = panel["targets"]
        assert targets, panel["title"]
        assert len({t["refId"] for t in targets}) == len(targets), f"{panel['title']}: refIds repeat"
        for target in targets:
            assert target["refId"] and target["expr"] and target["datasource"] == DATASOURCE, panel["title"]


def test_panels_do_not_overlap() -> None:
    taken: dict[tuple[int, int], str] = {}
    for panel in _panels(_dashboard()["panels"]):
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                taken[(x, y)] = panel["title"]


@pytest.mark.parametrize(("where", "target"), _targets(), ids=[where for where, _ in _targets()])
def test_each_panel_query_reads_exported_metrics_and_labels(
    where: str, target: dict[str, Any], schema: dict[str, Labels]
) -> None:
    reading = read(target["expr"], schema)
    assert not reading.problems, reading.problems
    assert reading.metrics, "reads no metric"
    # The legend names labels the result has: {{modle}} would print as nothing.
    legend = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
    assert legend <= (reading.labels or frozenset()), f"legend {legend} of a result labelled {reading.labels}"


def test_the_variable_queries_read_exported_labels(schema: dict[str, Labels]) -> None:
    for variable in _dashboard()["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = _variable_query(variable)
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
        assert match, f"{variable['name']}: {query} is not label_values(series, label)"
        reading = read(match[1], schema)
        assert not reading.problems, reading.problems
        assert match[2] in (reading.labels or frozenset()), f"{query}: the series have no {match[2]}"


def test_the_alerts_the_dashboard_names_exist() -> None:
    named = {m for p in _panels(_dashboard()["panels"]) for m in re.findall(r"RegistryGateway\w+", p["description"])}
    assert named and named <= {rule["alert"] for rule in _rules() if "alert" in rule}


# --- the rules -------------------------------------------------------------------------------


def _rules_file() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(RULES.read_text())
    return data


def _rules() -> list[dict[str, Any]]:
    return [rule for group in _rules_file()["groups"] for rule in group["rules"]]


def _duration(text: str) -> float:
    """Seconds of a Prometheus duration; ValueError if it is none. (The parser's own refuses 0,
    which is no range but a valid `for`.)"""
    if re.fullmatch(r"0+(ms|[smhdwy])?", text):
        return 0.0
    return promql_parser.parse_duration(text).total_seconds()


def test_the_rules_file_has_prometheus_shape() -> None:
    data = _rules_file()
    assert set(data) == {"groups"}
    names = [group["name"] for group in data["groups"]]
    assert len(set(names)) == len(names), f"group names repeat: {names}"
    alerts: list[str] = []
    for group in data["groups"]:
        assert set(group) <= {"name", "interval", "limit", "rules"} and group["rules"], group["name"]
        if "interval" in group:
            _duration(group["interval"])
        for rule in group["rules"]:
            if "record" in rule:
                assert set(rule) <= RECORD_KEYS and "alert" not in rule, rule
                assert RECORD_NAME.match(rule["record"]), f"{rule['record']}: not level:metric:operations"
                continue
            assert set(rule) <= ALERT_KEYS and {"alert", "expr", "for", "labels", "annotations"} <= set(rule), rule
            alerts.append(rule["alert"])
            _duration(rule["for"])
            assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
            annotations = rule["annotations"]
            assert {"summary", "description", "runbook_url"} <= set(annotations), rule["alert"]
            assert all(isinstance(value, str) and value.strip() for value in annotations.values()), rule["alert"]
    assert len(set(alerts)) == len(alerts), f"alert names repeat: {alerts}"


def test_each_rule_reads_exported_metrics_and_labels(schema: dict[str, Labels]) -> None:
    known = dict(schema)
    problems: list[str] = []
    for rule in _rules():
        name = rule.get("record") or rule["alert"]
        reading = read(rule["expr"], known)
        problems += [f"{name}: {problem}" for problem in reading.problems]
        labels = (reading.labels or frozenset()) | set(rule.get("labels", {}))
        if "record" in rule:
            assert rule["record"] not in known, f"{rule['record']} is recorded twice, or shadows an exported series"
            known[rule["record"]] = labels  # what a later rule reads of it
            continue
        # An annotation names labels the alert has: $labels.instance of a `sum by (model)` is empty.
        for key, text in rule["annotations"].items():
            for label in re.findall(r"\$labels\.(\w+)", text):
                if label not in labels:
                    problems.append(f"{name}: {key} uses $labels.{label}; the alert has {sorted(labels)}")
    assert not problems, "\n".join(problems)


def test_the_up_alerts_name_the_documented_jobs() -> None:
    # The job names are an assumption of the rules; deploy/README.md says so and names them.
    readme = (ROOT / "deploy" / "README.md").read_text()
    up_alerts = [rule for rule in _rules() if "alert" in rule and "up" in read(rule["expr"], {}).metrics]
    assert up_alerts
    for rule in up_alerts:
        for job in re.findall(r"registry-gateway[\w-]*", rule["expr"]):
            assert f"`{job}`" in readme, f"{rule['alert']}: the job {job} is not in deploy/README.md"


# --- runbooks --------------------------------------------------------------------------------


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors for a page's headings: lower case, punctuation dropped, spaces to -."""
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*$", page.read_text(), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def test_each_runbook_is_a_heading_in_docs() -> None:
    for rule in _rules():
        if "alert" not in rule:
            continue
        url = rule["annotations"]["runbook_url"]
        path, _, anchor = url.partition("#")
        page = ROOT / path
        assert path.startswith("docs/") and page.is_file(), f"{rule['alert']}: {url} is no page of docs/"
        assert anchor in _anchors(page), f"{rule['alert']}: {page.name} has no heading #{anchor}"
