"""``registry-gateway status``: a running gateway's state at a glance, read from its own JSON
routes (readiness, models, versions, traffic, events) and printed as text or JSON.

It reads only what it shows: the models that hold loaded versions first, at most ``limit`` of
them (a registry of 10,000 models is normal), one request each for their details and splits.

Each section says which process it comes from: every answer names its replica
(``X-Gateway-Replica``), so a report read through a balancer, whose answers come from several
replicas, says so rather than mixing one replica's cache with another's name. A ``--role sync``
process serves no models: its report is its readiness, the fleet (what each replica holds, from
the state database) and the events.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from gateway.jobs.views import rows_text
from gateway.sizes import readable


class StatusUnavailable(Exception):
    """The gateway could not be read: not running there, refused the key, answered garbage."""


@dataclass
class Report:
    url: str
    health: dict[str, Any]
    models: list[dict[str, Any]] = field(default_factory=list)  # /models/{name}, those shown
    traffic: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> /models/{name}/traffic
    events: list[dict[str, Any]] = field(default_factory=list)
    not_shown: int = 0  # models left out past the limit
    fleet: dict[str, Any] | None = None  # GET /fleet: every replica on the state database
    quality: list[dict[str, Any]] = field(default_factory=list)  # GET /quality's rows: live quality on labels
    drift: list[dict[str, Any]] = field(default_factory=list)  # GET /drift's rows: drifting first, worst features first
    jobs: list[dict[str, Any]] = field(default_factory=list)  # GET /jobs: the latest jobs, open ones shown first
    sources: dict[str, list[str]] = field(default_factory=dict)  # section -> the replicas that answered it

    def as_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "health": self.health,
            "models": self.models,
            "traffic": self.traffic,
            "events": self.events,
            "models_not_shown": self.not_shown,
            "fleet": self.fleet,
            "quality": self.quality,
            "drift": self.drift,
            "jobs": self.jobs,
            "sources": self.sources,
        }


class Reader:
    def __init__(self, url: str, *, key: str | None = None, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self._headers = {"Accept": "application/json"} | ({"Authorization": f"Bearer {key}"} if key else {})
        self._timeout = timeout
        self.answered: list[str] = []  # the replica of each answer, in order (X-Gateway-Replica)

    def get(self, path: str, *, allow: tuple[int, ...] = ()) -> Any:
        request = urllib.request.Request(self.url + path, headers=self._headers)
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as answer:
                self.answered.append(answer.headers.get("x-gateway-replica") or "?")
                return json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            self.answered.append(exc.headers.get("x-gateway-replica") or "?")
            body = exc.read()
            if exc.code in allow:
                return json.loads(body)
            try:
                message = json.loads(body).get("message", "")
            except ValueError:
                message = body[:200].decode("utf-8", "replace")
            raise StatusUnavailable(f"{self.url}{path} answered {exc.code}: {message}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise StatusUnavailable(f"no gateway answered at {self.url} ({reason})") from None
        except ValueError as exc:
            raise StatusUnavailable(f"{self.url}{path} did not answer JSON: {exc}") from None


def collect(reader: Reader, *, model: str | None = None, limit: int = 20, events: int = 10) -> Report:
    report = Report(reader.url, reader.get("/health/ready", allow=(503,)))
    report.sources["health"] = reader.answered[-1:]
    if report.health.get("role") != "sync":  # a sync process serves no models: no /models there
        start = len(reader.answered)
        if model is not None:
            names = [model]
        else:
            names, report.not_shown = shown_models(reader.get("/models")["models"], limit)
        for name in names:
            quoted = urllib.parse.quote(name, safe="")
            report.models.append(reader.get(f"/models/{quoted}"))
            traffic = reader.get(f"/models/{quoted}/traffic")
            if has_split(traffic):
                report.traffic[name] = traffic
        report.sources["models"] = sorted(set(reader.answered[start:]))
        query = f"?{urllib.parse.urlencode({'model': model})}" if model is not None else ""
        report.quality = reader.get(f"/quality{query}")["rows"]
        report.drift = reader.get(f"/drift{query}")["rows"]
        report.jobs = reader.get(f"/jobs{query}")["jobs"]
    query = urllib.parse.urlencode({"limit": events} | ({"model": model} if model else {}))
    report.events = reader.get(f"/events?{query}")["events"]
    report.fleet = reader.get("/fleet")
    return report


def shown_models(listed: list[dict[str, Any]], limit: int) -> tuple[list[str], int]:
    """The names of ``/models``'s models worth showing first (loaded, then aliased, then by
    name), at most ``limit``, and how many are left out."""
    ordered = sorted(listed, key=lambda m: (not m["loaded_versions"], not m["aliases"], m["name"]))
    return [m["name"] for m in ordered[:limit]], max(0, len(listed) - limit)


def has_split(traffic: dict[str, Any]) -> bool:
    return any(arm.get("weight") or arm.get("shadow") for arm in traffic.get("arms", []))


def render(report: Report) -> str:
    health = report.health
    replica = health.get("replica") or "?"
    lines = [
        f"gateway {report.url}: {health.get('status')}"
        + (f" ({health['reason']})" if health.get("reason") else "")
        + f", replica {replica}, role {health.get('role')}, sync leader {'yes' if health.get('leader') else 'no'}",
    ]
    if health.get("role") == "sync":
        lines.append(
            f"registry {health.get('registry')}: this sync process serves no models; "
            "what each replica holds is in the fleet below"
        )
    else:
        lines.append(
            f"registry {health.get('registry')}: {health.get('registered_models', '?')} models; "
            f"{health.get('loaded_models', 0)} versions loaded on {replica}, {size_text(health.get('loaded_bytes', 0))}"
        )
        lines += _sources_lines(report, replica)
    workers = workers_text(health)
    if workers:
        lines.append(workers)
    if health.get("sandbox"):
        lines.append(f"isolated workers' sandbox: {health['sandbox']}")
    if health.get("note"):
        lines.append(f"note: {health['note']}")
    if health.get("role") == "sync":
        lines += _fleet_and_events(report)
        return "\n".join(lines)
    lines.append("")
    lines.append("MODEL\tVERSION\tALIASES\tSTATE\tRUNTIME")
    for row in version_rows(report):
        aliases = ",".join(alias_text(alias, row) for alias in row.aliases) + (" (default)" if row.default else "")
        lines.append(f"{row.model}\t{row.version}\t{aliases or '-'}\t{row.state}\t{row.runtime}")
    if report.not_shown:
        lines.append(f"... and {report.not_shown} more models (--model NAME, or --limit N)")
    behind = alias_rows(report)
    if behind:
        lines.append("")
        lines.append("aliases not at MLflow's version here:")
        for alias in behind:
            lines.append(f"  {alias.model}@{alias.alias}: {alias.describe()}")
    for name, traffic in report.traffic.items():
        lines.append("")
        lines.append(f"traffic of {name} (default version {traffic.get('default_version')}):")
        for arm in traffic.get("arms", []):
            state = "warm" if arm.get("warm") else "not warm here"
            if arm.get("rolled_back"):
                state = f"rolled back: {arm['rolled_back']}"
            lines.append(
                f"  v{arm['version']}: weight {arm['weight']:g}% (serving {arm['served_weight']:g}% here), "
                f"shadow {arm['shadow']:g}%, {state}"
            )
        for stat in traffic.get("stats", []):
            lines.append(
                f"  here: {stat.get('arm')} v{stat.get('version')}: {stat.get('requests', 0)} requests, "
                f"{stat.get('errors', 0)} errors, {stat.get('client_errors', 0)} client errors"
            )
    lines += quality_lines(report.quality)
    lines += drift_lines(report.drift)
    lines += job_lines(report.jobs)
    lines += _fleet_and_events(report)
    return "\n".join(lines)


def quality_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Live quality on labels, a line per version and arm (nothing without labels)."""
    if not rows:
        return []
    lines = ["", "live quality over the latest labels (POST /feedback), from the state database:"]
    for row in rows:
        figures = ", ".join(f"{metric} {value:.4g}" for metric, value in row.get("metrics", {}).items())
        lines.append(
            f"  {row['model']} v{row['version']} {row['arm']}: {row['labels']} labels "
            f"({row.get('task') or 'task unknown'}){': ' + figures if figures else ''}"
        )
    return lines


JOBS_SHOWN = 10


def shown_jobs(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Open jobs first, then the latest ended ones, at most JOBS_SHOWN."""
    open_first = sorted(jobs, key=lambda job: job["state"] not in ("queued", "running"))
    return open_first[:JOBS_SHOWN]


def job_lines(jobs: list[dict[str, Any]]) -> list[str]:
    """The latest jobs, open ones first (GET /jobs)."""
    if not jobs:
        return []
    lines = ["", "jobs (GET /jobs), open ones first:"]
    for job in shown_jobs(jobs):
        failed = f", {job['chunks_failed']} chunks failed" if job.get("chunks_failed") else ""
        what = f"{job['id']} {job['model']} v{job['version']} {job['kind']}"
        lines.append(f"  {what}: {job['state']}, rows {rows_text(job)}{failed}")
    return lines


def drift_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Drift against each version's reference, drifting versions first, worst features first."""
    if not rows:
        return []
    lines = ["", "drift of live traffic against each version's reference (GET /drift), over the fleet's window:"]
    for row in rows:
        reference = row.get("reference") or "unknown"
        weaker = " (a baseline of its first requests: weaker)" if row.get("weaker") else ""
        flagged = f", flagged: {', '.join(row['flagged'])}" if row.get("flagged") else ""
        lines.append(
            f"  {row['model']} v{row['version']}: {row['status']}, {row['rows']} rows, "
            f"max PSI {row['max_psi']:.3g}{flagged}; reference {reference}{weaker}"
        )
        for feature in row.get("worst", []):
            psi = "-" if feature.get("psi") is None else f"{feature['psi']:.3g}"
            p = "-" if feature.get("p_value") is None else f"{feature['p_value']:.3g}"
            lines.append(
                f"    {feature['feature']}{' (output)' if feature['kind'] == 'output' else ''}: PSI {psi}, "
                f"{feature['test']} p {p}, outliers {feature['outlier_share']:.1%}, missing "
                f"{feature['missing_share']:.1%}{' FLAGGED' if feature.get('flagged') else ''}"
            )
    return lines


def _sources_lines(report: Report, replica: str) -> list[str]:
    """A warning when the models' answers came from other replicas than the readiness's (a
    balancer in front): each replica's cache is its own."""
    others = [r for r in report.sources.get("models", []) if r != replica]
    if not others:
        return []
    return [
        f"note: through a balancer: the models below were read from {', '.join(report.sources['models'])}, "
        f"not only {replica}; what is loaded is each answering replica's own (--url one replica to see its cache)"
    ]


def _fleet_and_events(report: Report) -> list[str]:
    lines = []
    if report.fleet is not None:
        lines.append("")
        lines += fleet_lines(report.fleet)
    lines.append("")
    lines.append("recent events (newest first), from the state database:")
    for event in report.events:
        where = event["model"] + (f" v{event['version']}" if event.get("version") is not None else "")
        lines.append(f"  {event['at'][:19]}Z {event['kind']:<12} {where}: {event.get('reason') or ''}".rstrip())
    if not report.events:
        lines.append("  none")
    return lines


@dataclass(frozen=True, slots=True)
class VersionRow:
    """One version as both renderings show it."""

    model: str
    version: int
    aliases: list[str]
    default: bool
    state: str
    runtime: str
    failing: bool  # refused, or its last load failed and nothing is loaded
    behind: dict[str, int] = field(default_factory=dict)  # its aliases MLflow points elsewhere: alias -> there


def alias_text(alias: str, row: VersionRow) -> str:
    """An alias in a version's row: ``champion``, or ``champion (MLflow: v2)`` when MLflow points
    it at another version than this one, which serves it here meanwhile."""
    return f"{alias} (MLflow: v{row.behind[alias]})" if alias in row.behind else alias


@dataclass(frozen=True, slots=True)
class AliasRow:
    """A warm alias served at another version than MLflow's, as both renderings show it."""

    model: str
    alias: str
    registry_version: int
    serving_version: int | None
    reason: str
    since: str | None

    def describe(self) -> str:
        serving = f"v{self.serving_version} serves" if self.serving_version is not None else "nothing serves"
        since = f" (since {self.since[:19]}Z)" if self.since else ""
        return f"MLflow points at v{self.registry_version}, {serving} here: {self.reason}{since}"


def alias_rows(report: Report) -> list[AliasRow]:
    return [
        AliasRow(
            model=detail["name"],
            alias=alias,
            registry_version=behind["registry_version"],
            serving_version=behind.get("serving_version"),
            reason=behind.get("reason") or "",
            since=behind.get("since"),
        )
        for detail in report.models
        for alias, behind in sorted(detail.get("aliases_behind", {}).items())
    ]


def version_rows(report: Report) -> list[VersionRow]:
    """The versions worth a line, model by model, in the report's order."""
    rows = []
    for detail in report.models:
        default = detail.get("default_version")
        behind = {alias: b["registry_version"] for alias, b in detail.get("aliases_behind", {}).items()}
        for version in detail["versions"]:
            if not worth_a_line(version, default):
                continue
            failing = bool(version.get("refused") or (not version.get("loaded") and version.get("last_load_error")))
            rows.append(
                VersionRow(
                    model=detail["name"],
                    version=version["version"],
                    aliases=list(version["aliases"]),
                    default=version["version"] == default,
                    state=state_of(version),
                    runtime=runtime_of(version),
                    failing=failing,
                    behind={a: behind[a] for a in version["aliases"] if a in behind},
                )
            )
    return rows


def worth_a_line(version: dict[str, Any], default: int | None) -> bool:
    """Versions an operator looks for: loaded, aliased, the default, refused or failing."""
    return bool(
        version.get("loaded")
        or version.get("aliases")
        or version["version"] == default
        or version.get("refused")
        or version.get("last_load_error")
    )


def state_of(version: dict[str, Any]) -> str:
    if version.get("refused"):
        return f"refused: {version['refused']}"
    loaded = version.get("loaded")
    if loaded:
        return f"loaded {size_text(loaded['size_bytes'])}, {counted(loaded['uses'], 'use')}, {loaded['in_use']} in use"
    if version.get("last_load_error"):
        return f"failed: {version['last_load_error']}"
    return f"not loaded ({version.get('status', '?')})"


def runtime_of(version: dict[str, Any]) -> str:
    runtime = version.get("runtime")
    if not runtime:
        return "-"
    if runtime["runtime"] == "isolated":
        if not runtime.get("environment"):  # refused before it had one: the state says why
            return "isolated, no environment"
        details = [f"Python {runtime['python']}"] if runtime.get("python") else []
        pids = ",".join(str(p) for p in runtime.get("worker_pids") or [])
        details.append(f"workers {pids}" if pids else "no worker running")
        text = f"isolated env {runtime['environment']} ({', '.join(details)})"
        return text + (sandbox_of(runtime.get("sandbox")) if pids else "")
    return "in process"


def sandbox_of(sandbox: dict[str, Any] | None) -> str:
    """The layers confining a version's running workers, and those the host could not give."""
    if not sandbox:
        return ", no sandbox (GATEWAY_SANDBOX=off)"
    layers = ("environment", "filesystem", "network", "limits", "capabilities", "syscalls")
    held = [
        name for name in layers if not any(m == name or m.startswith(f"{name}.") for m in sandbox.get("missing", {}))
    ]
    text = f", sandbox: {', '.join(held)}"
    missing = sandbox.get("missing") or {}
    if missing:
        text += "; without " + "; ".join(f"{name} ({why})" for name, why in missing.items())
    return text


def size_text(size: int) -> str:
    """A size in the unit that shows it (gateway.sizes)."""
    return readable(size)


def workers_text(health: dict[str, Any]) -> str | None:
    """The isolated workers' own memory, which no version's size includes, or None if none runs."""
    if not health.get("worker_processes"):
        return None
    count = health["worker_processes"]
    return (
        f"{count} isolated worker process{'es' if count != 1 else ''}, {size_text(health.get('worker_bytes', 0))} "
        "of their own (each one's RSS at start; apart from the versions and the memory budget)"
    )


@dataclass(frozen=True, slots=True)
class ReplicaRow:
    """One replica of the fleet as both renderings show it."""

    replica: str
    state: str
    here: bool  # the replica the report was read from
    processes: int  # live ones (its workers), of those it reported
    memory: str  # held, of the budget
    models: str  # the models it holds, a few named
    heard: str  # since its last report
    quiet: bool  # every process of it silent for three heartbeats


def replica_rows(fleet: dict[str, Any]) -> list[ReplicaRow]:
    """Serving replicas first (by name), then sync-only ones, then those stopped."""
    rows = []
    for replica in fleet.get("replicas", []):
        processes = replica.get("processes", [])
        live = [p for p in processes if p["state"] != "stopped" and not p["quiet"]]
        models = replica.get("models", [])
        shown = ", ".join(models[:4]) + (f" and {len(models) - 4} more" if len(models) > 4 else "")
        budget = replica.get("budget_bytes", 0)
        memory = f"{size_text(replica.get('loaded_bytes', 0))} of {size_text(budget)}" if budget else "-"
        heard = min((p["seen_seconds_ago"] for p in processes), default=None)
        roles = {p["role"] for p in processes}
        rows.append(
            ReplicaRow(
                replica=replica["replica"],
                state=replica["state"] + (" (sync)" if roles == {"sync"} else ""),
                here=replica["replica"] == fleet.get("this_replica"),
                processes=len(live),
                memory=memory,
                models=shown or "-",
                heard=f"{heard:g} s ago" if heard is not None else "-",
                quiet=replica["state"] == "quiet",
            )
        )
    order = {"ready": 0, "draining": 1, "starting": 2, "quiet": 3, "stopped": 4}
    return sorted(rows, key=lambda r: (order.get(r.state.split(" ")[0], 5), r.state.endswith("(sync)"), r.replica))


def counted(count: int, noun: str) -> str:
    """``1 replica``, ``3 replicas``: a count and its noun, in the number it takes."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def fleet_lines(fleet: dict[str, Any]) -> list[str]:
    rows = replica_rows(fleet)
    quiet = [row.replica for row in rows if row.quiet]
    lines = [
        f"fleet: {counted(len(rows), 'replica')} on this state database"
        + (f", {len(quiet)} gone quiet ({', '.join(quiet)})" if quiet else "")
        + f"; this is {fleet.get('this_replica')}",
        "REPLICA\tSTATE\tPROCESSES\tMEMORY\tMODELS\tLAST HEARD",
    ]
    for row in rows:
        name = row.replica + (" (this one)" if row.here else "")
        lines.append(f"{name}\t{row.state}\t{row.processes}\t{row.memory}\t{row.models}\t{row.heard}")
    return lines
