"""``GET /status``: the gateway's state on one server-rendered page, for a person.

The same report as ``registry-gateway status`` (gateway.status_report), read from the services
in this process rather than over HTTP, plus what only the process knows (the memory budget,
the last sync). Plain HTML with its style inline and no script: nothing is fetched from
anywhere, so it renders behind any firewall, and it reloads itself every few seconds.
Everything shown is escaped: model names, aliases, tags and reasons come from the registry.
"""

from __future__ import annotations

import html
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from gateway.admission.access import Access, requires
from gateway.drift.report import describe as describe_drift
from gateway.errors import GatewayError
from gateway.fleet.view import read_fleet
from gateway.jobs.views import job_document, rows_text
from gateway.process import Services
from gateway.quality.monitor import describe
from gateway.status_report import (
    Report,
    alias_rows,
    alias_text,
    counted,
    has_split,
    replica_rows,
    shown_jobs,
    shown_models,
    size_text,
    version_rows,
    workers_text,
)
from gateway.wire.api_schemas import utc_iso
from registry_sync.errors import RegistryError

router = APIRouter()

REFRESH_SECONDS = 5
SHOWN_MODELS = 50
SHOWN_EVENTS = 15

_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:1.5em;color:#1d2433;background:#fbfcfe}
h1{font-size:1.3em;margin:0 0 .2em}h2{font-size:1.05em;margin:1.6em 0 .4em}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{text-align:left;padding:.3em .6em;border-bottom:1px solid #e3e7ef;vertical-align:top}
th{background:#f0f3f8;font-weight:600}.muted{color:#6b7385}.ok{color:#137333}.bad{color:#b3261e}
.pill{display:inline-block;padding:0 .5em;border-radius:1em;background:#e8eefc;margin-right:.3em}
.bar{height:.6em;background:#e3e7ef;border-radius:.3em;overflow:hidden;width:16em;display:inline-block}
.bar span{display:block;height:100%;background:#3b6fd8}
"""


@router.get("/status", response_class=HTMLResponse, tags=["health"], summary="The gateway's state, as a web page")
@requires(Access.READ)
async def status_page(request: Request) -> HTMLResponse:
    services: Services = request.app.state.services
    report = await collect(services)
    warm_rule = services.membership.warm_rule if services.serves_models else ""
    return HTMLResponse(
        render_html(report, budget=_budget(services), sync=await _last_sync(services), warm_rule=warm_rule)
    )


async def collect(services: Services, *, limit: int = SHOWN_MODELS) -> Report:
    """The report of gateway.status_report, from this process's services."""
    state = await services.readiness()
    health: dict[str, Any] = {
        "status": "ok" if state.ready else "starting",
        "reason": state.reason,
        "role": state.role,
        "leader": state.leader,
        "registry": services.inventory.source.uri,
        "replica": services.settings.replica,
    }
    report = Report(url="", health=health)
    if services.serves_models:
        await _models(services, report, limit)
    # the events and the fleet are the state database's: whole from any process, a sync one too
    try:
        rows = await anyio.to_thread.run_sync(lambda: services.store.events(name=None, limit=SHOWN_EVENTS))
    except RegistryError:
        rows = []
    report.events = [
        {"at": utc_iso(e.at), "model": e.name, "version": e.version, "kind": e.kind, "reason": e.reason} for e in rows
    ]
    report.fleet = await _fleet(services)
    if services.serves_models:
        report.quality = describe(services.quality).model_dump(mode="json")["rows"]
        report.drift = describe_drift(services.drift).model_dump(mode="json")["rows"]
        try:
            report.jobs = [job_document(job) for job in await services.jobs.list(None, model=None, state=None)]
        except RegistryError:
            report.jobs = []
    return report


async def _models(services: Services, report: Report, limit: int) -> None:
    """The models this process serves, and what it holds of them."""
    health = report.health
    listing = (await services.inventory.models()).model_dump(mode="json")
    health |= {
        "registered_models": len(listing["models"]),
        "loaded_models": len(services.cache.keys()),
        "loaded_bytes": services.cache.loaded_bytes,
        "note": listing.get("note"),
    }
    health["worker_processes"], health["worker_bytes"] = services.worker_memory()
    if services.primer is not None and services.ready:
        health["primed"] = services.primer.describe()
    health["sandbox"] = services.sandbox_summary()
    names, report.not_shown = shown_models(listing["models"], limit)
    for name in names:
        try:
            report.models.append((await services.inventory.model(name)).model_dump(mode="json"))
            # a split's report reads the replicas' counts from the database: only for models with one
            traffic = None
            if services.catalog.split(name) is not None:
                traffic = (await services.traffic_report.describe(name)).model_dump(mode="json")
        except GatewayError:
            continue  # deleted from the registry since the listing
        if traffic is not None and has_split(traffic):
            report.traffic[name] = traffic


async def _fleet(services: Services) -> dict[str, Any] | None:
    try:
        view = await anyio.to_thread.run_sync(lambda: read_fleet(services.fleet, services.lease, services.membership))
    except RegistryError:
        return None  # the page still shows what this process knows
    return view.model_dump(mode="json")


def _budget(services: Services) -> dict[str, int]:
    cache = services.cache
    return {
        "loaded_bytes": cache.loaded_bytes,
        "max_bytes": cache.max_bytes,
        "loaded": len(cache.keys()),
        "max_models": cache.max_models,
    }


async def _last_sync(services: Services) -> str:
    try:
        status = await anyio.to_thread.run_sync(services.store.sync_status)
    except RegistryError as exc:
        return f"unknown: the state database did not answer ({exc})"
    if status.last_success_at is None:
        return "never yet" + (f" (last error: {status.last_error})" if status.last_error else "")
    text = f"{utc_iso(status.last_success_at)[:19]}Z, generation {status.generation}"
    if status.last_error and status.last_attempt_at and status.last_attempt_at > status.last_success_at:
        text += f"; the last attempt failed: {status.last_error}"
    return text


def render_html(report: Report, *, budget: dict[str, int], sync: str, warm_rule: str = "") -> str:
    e = html.escape
    health = report.health
    ready = health.get("status") == "ok"
    share = budget["loaded_bytes"] / budget["max_bytes"] if budget["max_bytes"] else 0.0
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">',
        "<title>registry-gateway status</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>registry-gateway</h1>",
        f'<p><b class="{"ok" if ready else "bad"}">{"ready" if ready else e(str(health.get("status")))}</b>'
        + (f" ({e(str(health['reason']))})" if health.get("reason") else "")
        + f" · replica <b>{e(str(health.get('replica') or '?'))}</b> (this page is this process's)"
        + f" · role {e(str(health.get('role')))} · sync leader {'yes' if health.get('leader') else 'no'}"
        + f" · registry <code>{e(str(health.get('registry')))}</code></p>",
        f"<p>Last registry sync: {e(sync)}</p>",
    ]
    sync_only = health.get("role") == "sync"
    if not sync_only:
        parts.append(
            f'<p>Memory budget: <span class="bar"><span style="width:{min(share, 1) * 100:.1f}%"></span></span> '
            f"{e(size_text(budget['loaded_bytes']))} of {e(size_text(budget['max_bytes']))} "
            f"({budget['loaded']} of at most {budget['max_models']} versions loaded here)</p>"
        )
    workers = workers_text(health)
    if workers:
        parts.append(f"<p>Workers: {e(workers)}</p>")
    if health.get("sandbox"):
        parts.append(f"<p>Sandbox of isolated workers: {e(str(health['sandbox']))}</p>")
    if health.get("note"):
        parts.append(f'<p class="muted">{e(str(health["note"]))}</p>')
    if warm_rule:
        parts.append(f"<p>Warm rule: {e(warm_rule)}</p>")
    if health.get("primed"):
        parts.append(f"<p>Libraries primed for the registry's flavors: {e(str(health['primed']))}</p>")
    if sync_only:
        parts.append(
            '<p class="muted">This sync process serves no models: the fleet below shows what each replica '
            "holds; the events are the state database's.</p>"
        )
        parts += _fleet_html(report.fleet) if report.fleet is not None else []
        parts += _events_html(report)
        return "".join(parts)
    parts.append("<h2>Models</h2>")
    parts.append("<table><tr><th>Model</th><th>Version</th><th>Aliases</th><th>State</th><th>Runs</th></tr>")
    for row in version_rows(report):
        pills = "".join(
            f'<span class="pill bad">{e(alias_text(a, row))}</span>'
            if a in row.behind
            else f'<span class="pill">{e(a)}</span>'
            for a in row.aliases
        )
        if row.default:
            pills += '<span class="muted">default</span>'
        parts.append(
            f"<tr><td>{e(row.model)}</td><td>{row.version}</td><td>{pills or '–'}</td>"
            f'<td class="{"bad" if row.failing else ""}">{e(row.state)}</td><td>{e(row.runtime)}</td></tr>'
        )
    parts.append("</table>")
    if not report.models:
        parts.append('<p class="muted">No model to show yet.</p>')
    if report.not_shown:
        parts.append(f'<p class="muted">… and {report.not_shown} more models (GET /models lists them all).</p>')
    behind = alias_rows(report)
    if behind:
        parts.append("<h2>Aliases not at MLflow's version here</h2>")
        parts.append("<table><tr><th>Model</th><th>Alias</th><th>MLflow</th><th>Serving</th><th>Why</th></tr>")
        for alias in behind:
            since = f' <span class="muted">(since {e(alias.since[:19])}Z)</span>' if alias.since else ""
            serving = str(alias.serving_version) if alias.serving_version is not None else "–"
            parts.append(
                f"<tr><td>{e(alias.model)}</td><td>{e(alias.alias)}</td><td>{alias.registry_version}</td>"
                f'<td>{serving}</td><td class="bad">{e(alias.reason)}{since}</td></tr>'
            )
        parts.append("</table>")
    for name, traffic in report.traffic.items():
        parts.append(
            f"<h2>Traffic of {e(name)} <span class=muted>(default version {traffic.get('default_version')})</span></h2>"
        )
        parts.append("<table><tr><th>Version</th><th>Weight</th><th>Here</th><th>Shadow</th><th>Guard</th></tr>")
        for arm in traffic.get("arms", []):
            guard = (
                f"rolled back: {arm['rolled_back']}"
                if arm.get("rolled_back")
                else ("warm" if arm.get("warm") else "not warm here")
            )
            parts.append(
                f"<tr><td>{arm['version']}</td><td>{arm['weight']:g}%</td><td>{arm['served_weight']:g}%</td>"
                f"<td>{arm['shadow']:g}%</td><td>{e(guard)}</td></tr>"
            )
        parts.append("</table>")
        stats = traffic.get("stats", [])
        if stats:
            parts.append(
                "<table><tr><th>Arm</th><th>Version</th><th>Requests</th><th>Errors judged</th>"
                "<th>Client errors</th><th>Window</th></tr>"
            )
            for stat in stats:
                counts = f"<td>{stat['requests']}</td><td>{stat['errors']}</td><td>{stat.get('client_errors', 0)}</td>"
                parts.append(
                    f"<tr><td>{e(str(stat['arm']))}</td><td>{stat['version']}</td>{counts}"
                    f"<td>{stat.get('window', '')}</td></tr>"
                )
            parts.append("</table>")
    if report.quality:
        parts.append("<h2>Live quality <span class=muted>(latest labels, POST /feedback)</span></h2>")
        parts.append("<table><tr><th>Model</th><th>Version</th><th>Arm</th><th>Labels</th><th>Figures</th></tr>")
        for quality in report.quality:
            figures = ", ".join(f"{metric} {value:.4g}" for metric, value in quality["metrics"].items())
            parts.append(
                f"<tr><td>{e(quality['model'])}</td><td>{quality['version']}</td><td>{e(quality['arm'])}</td>"
                f"<td>{quality['labels']}</td><td>{e(figures)}</td></tr>"
            )
        parts.append("</table>")
    parts += _drift_html(report.drift)
    parts += _jobs_html(report.jobs)
    if report.fleet is not None:
        parts += _fleet_html(report.fleet)
    parts += _events_html(report)
    return "".join(parts)


def _events_html(report: Report) -> list[str]:
    """The recent events and the page's foot."""
    e = html.escape
    parts = ["<h2>Recent events</h2><table><tr><th>When (UTC)</th><th>What</th><th>Model</th><th>Why</th></tr>"]
    for event in report.events:
        where = event["model"] + (f" v{event['version']}" if event.get("version") is not None else "")
        parts.append(
            f"<tr><td>{e(event['at'][:19])}</td><td>{e(event['kind'])}</td><td>{e(where)}</td>"
            f"<td>{e(event.get('reason') or '')}</td></tr>"
        )
    parts.append("</table>")
    parts.append(
        f'<p class="muted">Reloads every {REFRESH_SECONDS} s. The same in a terminal: '
        "<code>registry-gateway status</code>.</p></body></html>"
    )
    return parts


def _fleet_html(fleet: dict[str, Any]) -> list[str]:
    e = html.escape
    rows = replica_rows(fleet)
    quiet = sum(row.quiet for row in rows)
    parts = [
        f"<h2>Fleet <span class=muted>({counted(len(rows), 'replica')} on this state database"
        + (f", {quiet} gone quiet" if quiet else "")
        + ")</span></h2>",
        "<table><tr><th>Replica</th><th>State</th><th>Processes</th><th>Memory</th><th>Models held</th>"
        "<th>Last heard</th></tr>",
    ]
    for row in rows:
        name = e(row.replica) + (' <span class="muted">(this one)</span>' if row.here else "")
        parts.append(
            f'<tr><td>{name}</td><td class="{"bad" if row.quiet else ""}">{e(row.state)}</td>'
            f"<td>{row.processes}</td><td>{e(row.memory)}</td><td>{e(row.models)}</td><td>{e(row.heard)}</td></tr>"
        )
    parts.append("</table>")
    return parts


def _jobs_html(jobs: list[dict[str, Any]]) -> list[str]:
    if not jobs:
        return []
    e = html.escape
    parts = [
        "<h2>Jobs <span class=muted>(GET /jobs: open ones first)</span></h2>",
        "<table><tr><th>Job</th><th>Model</th><th>Version</th><th>Kind</th><th>State</th><th>Rows</th>"
        "<th>Chunks failed</th></tr>",
    ]
    for job in shown_jobs(jobs):
        rows = rows_text(job)
        parts.append(
            f"<tr><td>{e(job['id'])}</td><td>{e(job['model'])}</td><td>{job['version']}</td><td>{job['kind']}</td>"
            f"<td>{e(job['state'])}</td><td>{rows}</td><td>{job['chunks_failed']}</td></tr>"
        )
    parts.append("</table>")
    return parts


def _drift_html(rows: list[dict[str, Any]]) -> list[str]:
    """Drift against each version's reference: drifting versions first, their worst features first."""
    if not rows:
        return []
    e = html.escape
    parts = [
        "<h2>Drift <span class=muted>(live traffic against each version's reference, GET /drift)</span></h2>",
        "<table><tr><th>Model</th><th>Version</th><th>Status</th><th>Rows</th><th>Max PSI</th>"
        "<th>Reference</th><th>Worst features</th></tr>",
    ]
    for row in rows:
        reference = e(row.get("reference") or "unknown")
        if row.get("weaker"):
            reference += " <span class=muted>(first requests served: weaker)</span>"
        worst = ", ".join(
            f"{feature['feature']} {'-' if feature['psi'] is None else format(feature['psi'], '.3g')}"
            + (" (flagged)" if feature["flagged"] else "")
            for feature in row.get("worst", [])
        )
        parts.append(
            f"<tr><td>{e(row['model'])}</td><td>{row['version']}</td><td>{e(row['status'])}</td>"
            f"<td>{row['rows']}</td><td>{row['max_psi']:.3g}</td><td>{reference}</td><td>{e(worst)}</td></tr>"
        )
    parts.append("</table>")
    return parts
