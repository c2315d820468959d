"""The ``registry-gateway`` command."""

from __future__ import annotations

import ipaddress
import logging
import logging.config
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from gateway.jobs import cli as jobs_cli
from gateway.jobs import role as job_role
from gateway.observability.logs import logging_config
from gateway.observability.tracing import TracingError, exporter_protocol
from gateway.runtimes.blas import limit_blas_threads
from gateway.settings import GatewaySettings, SettingsError, doubts, load_settings

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from registry_sync.keys import KeyStore

log = logging.getLogger("gateway.cli")

# MLflow's HTTP client retries for minutes by default; a gateway would rather answer
# 503 quickly and serve what it already has. Users can still set these themselves.
# MLflow's client as a server's: short retries and timeouts, and no download progress bars
# (tqdm's, drawn on stderr: not a log line, and not JSON under GATEWAY_LOG_FORMAT=json).
_MLFLOW_CLIENT_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}


def _load_settings() -> GatewaySettings:
    """The settings, or exit non-zero with one line per bad variable; then logging is set up
    (warnings only, until ``serve`` is ready to log at GATEWAY_LOG_LEVEL) and what looks like
    a mistake (a misspelled variable...) is logged as a warning."""
    try:
        settings = load_settings()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    logging.config.dictConfig(logging_config(settings.log_format, logging.WARNING))
    if settings.tracing == "otlp":
        try:
            exporter_protocol(os.environ)
        except TracingError as exc:
            raise click.ClickException(str(exc)) from None
    for doubt in doubts(settings):
        log.warning("%s", doubt)
    return settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="registry-gateway")
def main() -> None:
    """Serve every version of every model in an MLflow model registry over HTTP.

    Settings come from GATEWAY_* environment variables (docs/settings.md); the registry
    from MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI.
    """


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8000, show_default=True, type=int, help="Port to bind.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1), help="Worker processes.")
@click.option(
    "--graceful-timeout",
    default=30,
    show_default=True,
    type=int,
    help="Seconds in-flight requests get to finish on shutdown.",
)
@click.option(
    "--role",
    type=click.Choice(["all", "gateway", "sync", "jobs"]),
    default=None,
    help="all: serve models and compete to lead the sync (the default, GATEWAY_ROLE); "
    "gateway: serve models, never poll MLflow; sync: only the sync, under the leader lease; "
    "jobs: run jobs' chunks at a lower OS priority (GATEWAY_JOBS_NICE), take no requests.",
)
@click.option(
    "--insecure",
    is_flag=True,
    help="Bind a non-loopback address although GATEWAY_AUTH is off (anyone who reaches the port "
    "can call every model and load any version).",
)
@click.option(
    "--grpc-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Also serve the Open Inference Protocol over gRPC on this port (GATEWAY_GRPC_PORT), on --host.",
)
def serve(
    host: str, port: int, workers: int, graceful_timeout: int, role: str | None, insecure: bool, grpc_port: int | None
) -> None:
    """Run the gateway."""
    import uvicorn

    if role is not None:
        os.environ["GATEWAY_ROLE"] = role  # every worker builds its settings from the environment
    if grpc_port is not None:
        os.environ["GATEWAY_GRPC_PORT"] = str(grpc_port)
    os.environ["GATEWAY_GRPC_HOST"] = host  # gRPC binds where HTTP does, under the same --insecure check
    # The replica's name in the fleet, stable across restarts of this command (what it served
    # is kept under it); every worker shares it.
    os.environ.setdefault("GATEWAY_REPLICA_ID", f"{socket.gethostname()}:{port}")
    settings = _load_settings()  # fail fast, before any worker starts
    if (refused := job_role.misuse(settings)) is not None:
        raise click.ClickException(refused)
    if settings.role != "sync":
        from gateway.runtimes.worker import devices

        try:
            devices.require(settings.device, f"GATEWAY_DEVICE={settings.device}")
        except devices.DeviceUnavailable as exc:
            raise click.ClickException(str(exc)) from None
    if settings.role != "sync" and settings.sandbox == "required":
        from gateway.rooms.runtimes import sandbox_policy
        from gateway.runtimes.sandbox import SandboxUnavailable

        try:
            sandbox_policy(settings)  # a host that lacks a layer of isolated workers' sandbox
        except SandboxUnavailable as exc:
            raise click.ClickException(str(exc)) from None
    if settings.auth == "off" and not is_loopback(host) and not insecure:
        raise click.ClickException(
            f"refusing to serve on {host} with GATEWAY_AUTH=off: anyone who can reach the port could call "
            "every model, read every version and load any version into memory. Set GATEWAY_AUTH=keys and "
            "create keys with 'registry-gateway keys create', bind 127.0.0.1, or pass --insecure "
            "if something in front of the gateway already authenticates callers."
        )
    _say_database(settings)
    _prepare_database(settings.database_url)
    logging.getLogger().setLevel(settings.log_level_number)
    for key, value in _MLFLOW_CLIENT_DEFAULTS.items():
        os.environ.setdefault(key, value)
    limit_blas_threads(settings.blas_threads)  # before uvicorn's workers start: they inherit it
    if settings.role == job_role.JOBS:
        log.info("running jobs' chunks only, at niceness %d", job_role.lower_priority(settings))
    uvicorn.run(
        "gateway.app:app_factory",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=settings.log_level,
        log_config=logging_config(settings.log_format, settings.log_level_number),
        access_log=False,  # the gateway writes its own (gateway.observability.logs), naming model and version
        timeout_graceful_shutdown=graceful_timeout,
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
    )


def is_loopback(host: str) -> bool:
    """Only this machine can connect: 'localhost' or a loopback address (a name other than
    'localhost' may resolve anywhere, so it counts as reachable from outside)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def database_shown(url: str) -> str:
    """A database URL as commands print it: its password hidden."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def _say_database(settings: GatewaySettings) -> None:
    """Every command that touches the state database says which (on stderr: stdout stays the
    command's own output, a key's secret alone on its last line); with GATEWAY_LOG_FORMAT=json,
    as a JSON log line like every other line on stderr."""
    line = f"state database: {database_shown(settings.database_url)} (GATEWAY_DATABASE_URL)"
    if settings.log_format == "json":
        # handed to the handlers whatever the level (the CLI logs warnings only until serve is
        # ready): in text it is always printed, so in JSON too
        log.handle(log.makeRecord(log.name, logging.INFO, __file__, 0, "%s", (line,), None))
    else:
        click.echo(line, err=True)


def _prepare_database(url: str) -> None:
    """sqlite upgrades itself; any other database must already be at the current schema,
    and belong to the registry this gateway reads."""
    from registry_sync.database import SchemaOutdated, check_schema, is_sqlite, make_engine
    from registry_sync.repository import StateStore, WrongRegistry

    engine = make_engine(url)
    try:
        check_schema(engine, auto_upgrade=is_sqlite(url))
        # imported once the schema is known good: it imports MLflow (about 1.5 s of CPU), which a
        # serve refused for its database's schema never needs
        from registry_sync.registry import RegistryReader

        StateStore(engine).claim(RegistryReader().registry_uri)
    except (SchemaOutdated, WrongRegistry) as exc:
        raise click.ClickException(str(exc)) from exc
    except Exception as exc:  # unreachable server, bad credentials, bad URL
        raise click.ClickException(f"cannot open the state database: {exc}") from exc
    finally:
        engine.dispose()


@main.group()
def db() -> None:
    """The state database (GATEWAY_DATABASE_URL)."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Migrate the state database to the schema this version needs."""
    from registry_sync.database import current_revision, head_revision, make_engine, upgrade

    settings = _load_settings()
    _say_database(settings)
    engine = make_engine(settings.database_url, sqlite_synchronous=settings.database_sqlite_synchronous)
    try:
        before = current_revision(engine)
        upgrade(engine)
        click.echo(f"state database at revision {head_revision()} (was {before or 'empty'})")
    except Exception as exc:
        raise click.ClickException(f"upgrade failed: {type(exc).__name__}: {exc}") from exc
    finally:
        engine.dispose()


@db.command("current")
def db_current() -> None:
    """Print the schema revision of the state database and the one this version needs."""
    from registry_sync.database import current_revision, head_revision, make_engine

    settings = _load_settings()
    _say_database(settings)
    engine = make_engine(settings.database_url, sqlite_synchronous=settings.database_sqlite_synchronous)
    try:
        click.echo(f"current: {current_revision(engine) or 'empty'}; needed: {head_revision()}")
    finally:
        engine.dispose()


@main.group()
def keys() -> None:
    """API keys of callers (GATEWAY_AUTH=keys), in the state database (GATEWAY_DATABASE_URL).

    Gateways that are running see a new or revoked key within GATEWAY_FOLLOW_INTERVAL_SECONDS."""


@keys.command("create")
@click.argument("name")
@click.option(
    "--scopes",
    required=True,
    help="Comma-separated: predict:<glob> (models whose names match, e.g. predict:iris*), "
    "read (/models, versions, /events), admin (/admin/*), feedback (POST /feedback: labels).",
)
@click.option("--rate", type=float, default=None, help="Requests a second, with bursts of as many (unset: no limit).")
@click.option("--concurrency", type=int, default=None, help="Requests in flight at once (unset: no limit).")
def keys_create(name: str, scopes: str, rate: float | None, concurrency: int | None) -> None:
    """Create a key; its secret is printed once, alone on the last line."""
    from registry_sync.keys import Scopes

    with _key_store() as store:
        key, secret = store.create(name, Scopes.parse(scopes), rate=rate, concurrency=concurrency, actor=_actor())
    click.echo(f"API key '{key.name}' created: scopes {key.scopes}; {key.describe_limits()}")
    click.echo(
        "The secret on the next line is shown once and never stored (only its sha256 is); "
        "send it as 'Authorization: Bearer <secret>' or 'X-API-Key: <secret>'."
    )
    click.echo(secret)


@keys.command("list")
def keys_list() -> None:
    """Every key, revoked ones included (never a secret: its first characters at most)."""
    with _key_store() as store:
        found = store.keys()
    if not found:
        click.echo("no API keys; create one with 'registry-gateway keys create NAME --scopes ...'")
        return
    click.echo("NAME\tPREFIX\tSCOPES\tLIMITS\tCREATED\tSTATE")
    for key in found:
        state = "active" if key.active else f"revoked {key.revoked_at:%Y-%m-%d %H:%M:%S}Z"
        click.echo(
            f"{key.name}\t{key.prefix}...\t{key.scopes}\t{key.describe_limits()}\t"
            f"created {key.created_at:%Y-%m-%d %H:%M:%S}Z\t{state}"
        )


@keys.command("revoke")
@click.argument("name")
def keys_revoke(name: str) -> None:
    """Revoke a key: every gateway refuses it from its next look at the keys."""
    with _key_store() as store:
        store.revoke(name, actor=_actor())
    click.echo(f"API key '{name}' revoked")


@contextmanager
def _key_store() -> Iterator[KeyStore]:
    """The keys of GATEWAY_DATABASE_URL (see :func:`_state_engine`)."""
    from registry_sync.keys import KeyStore

    with _state_engine() as engine:
        yield KeyStore(engine)


@contextmanager
def _state_engine() -> Iterator[Engine]:
    """The state database of GATEWAY_DATABASE_URL (sqlite is upgraded; another database must
    be at the current schema); its errors become one line and a non-zero exit."""
    from registry_sync.database import check_schema, is_sqlite, make_engine
    from registry_sync.errors import RegistryError

    settings = _load_settings()
    _say_database(settings)
    engine = make_engine(settings.database_url, sqlite_synchronous=settings.database_sqlite_synchronous)
    try:
        try:
            check_schema(engine, auto_upgrade=is_sqlite(settings.database_url))
        except RegistryError as exc:
            raise click.ClickException(str(exc)) from None
        except Exception as exc:  # unreachable server, bad credentials
            raise click.ClickException(f"cannot open the state database: {exc}") from None
        try:
            yield engine
        except RegistryError as exc:
            raise click.ClickException(str(exc)) from None
    finally:
        engine.dispose()


@main.command()
@click.option("--caller", default=None, help="Only this caller (a key's name, oidc:<sub>).")
@click.option("--model", default=None, help="Only this model.")
@click.option("--since", default=None, help="From this UTC day on (YYYY-MM-DD).")
@click.option("--until", default=None, help="Up to this UTC day, included (YYYY-MM-DD).")
@click.option(
    "--csv", "csv_path", type=click.Path(dir_okay=False), default=None, help="Write the rows to this CSV file."
)
@click.option(
    "--parquet",
    "parquet_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the rows to this Parquet file.",
)
def usage(
    caller: str | None,
    model: str | None,
    since: str | None,
    until: str | None,
    csv_path: str | None,
    parquet_path: str | None,
) -> None:
    """Usage per caller, model, version and UTC day, summed over the fleet (what every serving
    process added at its GATEWAY_USAGE_FLUSH_SECONDS), as a table or exported."""
    from registry_sync.usage import UsageStore, parse_day

    try:
        first = parse_day(since) if since is not None else None
        last = parse_day(until) if until is not None else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since/--until") from None
    with _state_engine() as engine:
        lines = UsageStore(engine).lines(
            callers=[caller] if caller is not None else None, model=model, since=first, until=last, limit=10**9
        )
    rows = [line.as_dict() for line in lines]
    if csv_path is not None or parquet_path is not None:
        import pandas as pd

        frame = pd.DataFrame(rows, columns=USAGE_COLUMNS)
        if csv_path is not None:
            frame.to_csv(csv_path, index=False)
            click.echo(f"{len(frame)} rows written to {csv_path}")
        if parquet_path is not None:
            frame.to_parquet(parquet_path, index=False)
            click.echo(f"{len(frame)} rows written to {parquet_path}")
        return
    if not rows:
        click.echo("no usage counted (yet: each process adds its own at GATEWAY_USAGE_FLUSH_SECONDS)")
        return
    click.echo("\t".join(c.upper() for c in USAGE_COLUMNS))
    for row in rows:
        click.echo("\t".join(str(row[c]) for c in USAGE_COLUMNS))


USAGE_COLUMNS = ["day", "caller", "model", "version", "requests", "rows", "errors", "predict_seconds", "tokens"]


@main.group()
def quotas() -> None:
    """Quotas of callers per model, per UTC day or month, in the state database.

    Gateways that are running read them within GATEWAY_USAGE_FLUSH_SECONDS."""


@quotas.command("set")
@click.argument("name")
@click.option("--caller", required=True, help="A key's name, oidc:<sub> (a token's subject) or group:<name>.")
@click.option("--models", default="*", show_default=True, help="A glob over model names (summed together).")
@click.option("--per", "period", type=click.Choice(["day", "month"]), default="day", show_default=True)
@click.option("--requests", "requests_", type=click.IntRange(min=1), default=None, help="At most this many requests.")
@click.option("--rows", type=click.IntRange(min=1), default=None, help="At most this many input rows.")
@click.option("--tokens", type=click.IntRange(min=1), default=None, help="At most this many tokens (OpenAI routes).")
def quotas_set(
    name: str, caller: str, models: str, period: str, requests_: int | None, rows: int | None, tokens: int | None
) -> None:
    """Create or replace a quota: one of --requests, --rows or --tokens."""
    from registry_sync.quotas import Quota, QuotaStore

    given = [(unit, amount) for unit, amount in (("requests", requests_), ("rows", rows), ("tokens", tokens)) if amount]
    if len(given) != 1:
        raise click.UsageError("give exactly one of --requests, --rows or --tokens")
    unit, amount = given[0]
    with _state_engine() as engine:
        quota = QuotaStore(engine).put(Quota(name, caller, models, period, unit, amount), actor=_actor())
    click.echo(f"quota '{quota.name}' set: {quota.describe()}")


@quotas.command("list")
def quotas_list() -> None:
    """Every quota."""
    from registry_sync.quotas import QuotaStore

    with _state_engine() as engine:
        found = QuotaStore(engine).quotas()
    if not found:
        click.echo("no quotas; set one with 'registry-gateway quotas set NAME --caller ... --requests N'")
        return
    click.echo("NAME\tCALLER\tMODELS\tAMOUNT\tUNIT\tPER")
    for q in found:
        click.echo(f"{q.name}\t{q.caller}\t{q.models}\t{q.amount}\t{q.unit}\t{q.period}")


@quotas.command("delete")
@click.argument("name")
def quotas_delete(name: str) -> None:
    """Delete a quota: gateways stop checking it from their next usage flush."""
    from registry_sync.quotas import QuotaStore

    with _state_engine() as engine:
        QuotaStore(engine).delete(name)
    click.echo(f"quota '{name}' deleted")


def _actor() -> str:
    return f"cli@{socket.gethostname()}:{os.getpid()}"


@main.command()
@click.option("--url", default="http://127.0.0.1:8000", show_default=True, help="The running gateway's base URL.")
@click.option("--key", envvar="GATEWAY_API_KEY", default=None, help="An API key with the read scope (GATEWAY_API_KEY).")
@click.option("--model", default=None, help="Only this model (and its events).")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(min=1), help="Models shown at most.")
@click.option("--json", "as_json", is_flag=True, help="Everything read, as JSON.")
def status(url: str, key: str | None, model: str | None, limit: int, as_json: bool) -> None:
    """A running gateway at a glance: readiness, models and the versions each serves, where
    they run, canary splits, recent events. Read from the gateway's own routes."""
    import json

    from gateway.status_report import Reader, StatusUnavailable, collect, render

    try:
        report = collect(Reader(url, key=key), model=model, limit=limit)
    except StatusUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(report.as_dict(), indent=2) if as_json else render(report))


@main.group()
def envs() -> None:
    """The Python environments built for versions whose requirements the gateway's own
    environment does not satisfy (GATEWAY_ENV_DIR)."""


@envs.command("list")
def envs_list() -> None:
    """Every built environment: key, Python, size, last use, requirements."""
    from gateway.rooms.runtimes import environment_store

    store = environment_store(_load_settings())
    found = store.environments()
    click.echo(f"environments in {store.root}")
    if not found:
        click.echo("none built yet")
        return
    click.echo("KEY\tPYTHON\tSIZE_MIB\tLAST_USED\tREQUIREMENTS")
    for env in found:
        used = _utc(env.last_used)
        click.echo(
            f"{env.key}\t{env.python_version}\t{env.size_bytes / 2**20:.0f}\t{used}\t{' '.join(env.requirements)}"
        )


@envs.command("build")
@click.argument("model")
def envs_build(model: str) -> None:
    """Build (or find) the environment of MODEL: a model directory, or a models:/ URI read from
    MLFLOW_TRACKING_URI. What a gateway would do on first loading it, ahead of time."""
    import tempfile

    from mlflow.models import Model

    from gateway.rooms.runtimes import environment_store
    from gateway.runtimes.environments import EnvironmentRefused, loader_needs
    from gateway.runtimes.requirements import check, read_requirements

    store = environment_store(_load_settings())
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(model)
        if model.startswith("models:/"):
            import mlflow.artifacts

            path = Path(mlflow.artifacts.download_artifacts(model, dst_path=scratch))
        if not (path / "MLmodel").is_file():
            raise click.ClickException(f"{model} is not a model directory (no MLmodel)")
        requirements = read_requirements(path)
        verdict = check(requirements)
        click.echo(f"this process {'satisfies' if verdict.satisfied else 'does not satisfy'} it: {verdict.reason}")
        try:
            env = store.ensure(requirements, loader_needs=loader_needs(Model.load(str(path / "MLmodel"))))
        except EnvironmentRefused as exc:
            raise click.ClickException(exc.reason) from None
    click.echo(f"environment {env.key} (Python {env.python_version}) at {env.path}")
    if env.note:
        click.echo(f"note: {env.note}")


@envs.command("prune")
@click.option("--all", "everything", is_flag=True, help="Remove every environment no worker runs on.")
def envs_prune(everything: bool) -> None:
    """Remove environments no worker runs on, least recently used first, down to
    GATEWAY_ENV_MAX_DISK_MB (or all of them with --all)."""
    from gateway.rooms.runtimes import environment_store

    store = environment_store(_load_settings())
    removed = store.prune(everything=everything)
    click.echo(f"removed {len(removed)} environments from {store.root}" + "".join(f"\n  {k}" for k in removed))


def _utc(timestamp: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


@main.command("demo-registry")
@click.option(
    "--path",
    "path",
    default="demo",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for the demo registry (sqlite database and artifacts).",
)
@click.option("--base-url", default=None, help="Also print curl lines for a gateway at this URL.")
def demo_registry(path: Path, base_url: str | None) -> None:
    """Build a small MLflow registry to try the gateway on, and print how to use it."""
    from gateway.demo import build_demo_registry

    summary = build_demo_registry(path.resolve())
    click.echo(summary.describe(base_url))


@main.command()
@click.argument("where", metavar="DIRECTORY", required=False)
@click.option("--model", default=None, help="Only this model's records.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(min=1), help="The last this many records.")
@click.option("--json", "as_json", is_flag=True, help="The events themselves, one CloudEvent (JSON) a line.")
def records(where: str | None, model: str | None, limit: int, as_json: bool) -> None:
    """Inference records a file sink wrote in DIRECTORY, a path or the file:///directory URL that
    GATEWAY_RECORDS_SINK takes (default: that of a file:// GATEWAY_RECORDS_SINK), newest last.
    Reads only the files."""
    from gateway.observability.records.listing import RecordsUnavailable, last_records, render
    from gateway.observability.records.sinks import InvalidSinkUrl, file_sink_directory

    named = where is not None
    if where is None:
        where = _load_settings().records_sink
        if where is None or not where.startswith("file:"):
            raise click.ClickException("name a directory, or set GATEWAY_RECORDS_SINK=file:///directory")
    if where.startswith("file:"):
        try:
            directory = file_sink_directory(where)
        except InvalidSinkUrl as exc:
            message = str(exc).removeprefix("GATEWAY_RECORDS_SINK ") if named else str(exc)
            raise click.ClickException(message) from None
    else:
        directory = Path(where)
    try:
        found = last_records(directory, model=model, limit=limit)
    except RecordsUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        for line in found.lines:
            click.echo(line.decode("utf-8", errors="replace"))
    else:
        click.echo(
            render(found.events) if found.events else f"no records{f' of {model}' if model else ''} in {directory}"
        )
    if found.skipped:
        click.echo(f"skipped {found.skipped} lines that are not records", err=True)


@main.command()
@click.argument("model")
@click.argument("version")
@click.option(
    "--tables",
    required=True,
    help="The inference tables' root: a directory or a URI (s3://bucket/prefix); Delta tables as "
    "GATEWAY_RECORDS_SINK names them (delta+file:///dir, delta+s3://bucket/prefix), or found by their log.",
)
@click.option(
    "--since",
    type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M"]),
    default=None,
    help="Only requests from this time on (UTC).",
)
@click.option(
    "--model-type",
    type=click.Choice(["classifier", "regressor"]),
    default=None,
    help="How MLflow scores the predictions (default: regressor when a label is a non-integral number).",
)
@click.option("--column", default=None, help="The output column scored, when a row has several.")
@click.option(
    "--experiment",
    default="registry-gateway evaluations",
    show_default=True,
    help="The MLflow experiment the evaluation's run goes to.",
)
@click.option("--json", "as_json", is_flag=True, help="The run's id and metrics as one JSON object.")
def evaluate(
    model: str,
    version: str,
    tables: str,
    since: datetime | None,
    model_type: str | None,
    column: str | None,
    experiment: str,
    as_json: bool,
) -> None:
    """Score VERSION of MODEL on its production predictions joined with their labels from the
    inference tables, with mlflow.models.evaluate (the predictions already made: no model is
    loaded), and log the metrics to a run in MLflow (MLFLOW_TRACKING_URI), linked to the
    version's LoggedModel when it has one."""
    import json

    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from gateway.observability.records.evaluation import TablesUnavailable, joined, model_type_of
    from gateway.observability.records.evaluation import evaluate as run_evaluation
    from registry_sync.writeback import logged_model_id

    for name, value in _MLFLOW_CLIENT_DEFAULTS.items():
        os.environ.setdefault(name, value)
    when = since.replace(tzinfo=UTC) if since is not None else None
    try:
        rows = joined(tables, model, version, since=when, column=column)
        click.echo(rows.describe(), err=True)
        registered = MlflowClient().get_model_version(model, version)
        model_id = registered.model_id or logged_model_id(registered.source or "")
        run_id, metrics = run_evaluation(
            rows,
            model=model,
            version=version,
            model_type=model_type or model_type_of(rows.frame),  # type: ignore[arg-type]
            experiment=experiment,
            model_id=model_id,
            described={"tables": tables, "since": when.isoformat() if when is not None else ""},
        )
    except TablesUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    except MlflowException as exc:
        raise click.ClickException(f"MLflow: {exc.message}") from None
    if as_json:
        click.echo(json.dumps({"run_id": run_id, "model_id": model_id, "metrics": metrics}, sort_keys=True))
        return
    click.echo(f"run {run_id}" + (f" (LoggedModel {model_id})" if model_id else ""))
    for key, figure in sorted(metrics.items()):
        click.echo(f"  {key}: {figure:.6g}")


main.add_command(jobs_cli.jobs)

if __name__ == "__main__":
    main()
