"""``registry-gateway jobs submit|list|status|wait|cancel``: jobs through a running gateway's HTTP API.

``wait`` follows a job until it ends: on a terminal, a progress bar (rows done of the total, rows
a second, time left; rich's, installed with MLflow's dependencies); otherwise one plain line per
change, for logs and CI. It exits 0 when the job succeeded, 1 otherwise (partial, failed,
cancelled), so scripts can chain on it.
"""

from __future__ import annotations

import sys
from typing import Any

import click
import httpx
import orjson

from gateway.jobs.views import MAX_WAIT_SECONDS, rows_text

_ENDED = frozenset({"succeeded", "partial", "failed", "cancelled"})


class JobsClient:
    def __init__(self, url: str, key: str | None, *, timeout: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            answer = self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise click.ClickException(f"no gateway answered at {self._client.base_url} ({exc})") from None
        if answer.is_error:
            try:
                message = answer.json().get("message", answer.text)
            except ValueError:
                message = answer.text[:200]
            raise click.ClickException(f"{method} {path} answered {answer.status_code}: {message}")
        return answer.json()


def _line(job: dict[str, Any]) -> str:
    rows = rows_text(job)
    failed = f", {job['chunks_failed']} chunks failed" if job.get("chunks_failed") else ""
    error = f" ({job['error']})" if job.get("error") else ""
    return (
        f"{job['id']}\t{job['state']}\t{job['model']} v{job['version']}\trows {rows}\t"
        f"chunks {job['chunks_done']}/{job['chunks_total']}{failed}{error}"
    )


_url = click.option("--url", default="http://127.0.0.1:8000", show_default=True, help="The running gateway's URL.")
_key = click.option("--key", envvar="GATEWAY_API_KEY", default=None, help="An API key (GATEWAY_API_KEY).")


@click.group()
def jobs() -> None:
    """Asynchronous predictions and batch scoring jobs on a running gateway."""


@jobs.command("submit")
@click.argument("model")
@_url
@_key
@click.option("--version", default=None, help="A version number or alias (default: the model's default version).")
@click.option("--input", "inputs", multiple=True, help="An input URI, glob or folder (repeat for several).")
@click.option("--output", default=None, help="The output folder or S3 prefix.")
@click.option("--output-format", type=click.Choice(["parquet", "csv", "jsonl"]), default="parquet", show_default=True)
@click.option("--id-column", default=None, help="A column carried from input to output, to join rows back.")
@click.option("--request", "request_file", type=click.File("rb"), default=None, help="An inline job's predict body.")
@click.option("--callback", default=None, help="A URL told when the job ends (signed).")
@click.option("--wait", "then_wait", is_flag=True, help="Then wait for it, as 'jobs wait' does.")
def submit(
    model: str,
    url: str,
    key: str | None,
    version: str | None,
    inputs: tuple[str, ...],
    output: str | None,
    output_format: str,
    id_column: str | None,
    request_file: Any,
    callback: str | None,
    then_wait: bool,
) -> None:
    """Submit a job for MODEL: files (--input, --output) or one predict body (--request FILE, - for stdin)."""
    body: dict[str, Any]
    if request_file is not None:
        body = {"request": orjson.loads(request_file.read())}
    elif inputs and output:
        body = {"input": list(inputs) if len(inputs) > 1 else inputs[0], "output": output}
        body["output_format"] = output_format
        if id_column:
            body["id_column"] = id_column
    else:
        raise click.UsageError("give --input and --output (a file job) or --request (an inline job)")
    if callback:
        body["callback"] = callback
    path = f"/models/{model}/versions/{version}/jobs" if version else f"/models/{model}/jobs"
    client = JobsClient(url, key)
    job = client.call("POST", path, json=body)
    click.echo(job["id"])
    if then_wait:
        sys.exit(_wait(client, job["id"], interval=1.0))


@jobs.command("list")
@_url
@_key
@click.option("--model", default=None)
@click.option("--state", default=None)
def list_jobs(url: str, key: str | None, model: str | None, state: str | None) -> None:
    """The latest jobs (at most 100)."""
    params = {name: value for name, value in (("model", model), ("state", state)) if value}
    for job in JobsClient(url, key).call("GET", "/jobs", params=params)["jobs"]:
        click.echo(_line(job))


@jobs.command("status")
@click.argument("job_id")
@_url
@_key
@click.option("--json", "as_json", is_flag=True, help="The job as the API shows it.")
def status(job_id: str, url: str, key: str | None, as_json: bool) -> None:
    """One job's state, progress and failed chunks."""
    job = JobsClient(url, key).call("GET", f"/jobs/{job_id}")
    if as_json:
        click.echo(orjson.dumps(job, option=orjson.OPT_INDENT_2).decode())
        return
    click.echo(_line(job))
    for failed in job.get("failed_chunks", []):
        click.echo(f"  chunk {failed['index']}: {failed['reason']}")


@jobs.command("cancel")
@click.argument("job_id")
@_url
@_key
def cancel(job_id: str, url: str, key: str | None) -> None:
    """Cancel a job."""
    click.echo(_line(JobsClient(url, key).call("DELETE", f"/jobs/{job_id}")))


@jobs.command("wait")
@click.argument("job_id")
@_url
@_key
@click.option(
    "--interval",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0.01),
    help="The longest wait between two reads of the job; its end shows at once.",
)
def wait(job_id: str, url: str, key: str | None, interval: float) -> None:
    """Follow a job until it ends (a progress bar on a terminal); exit 0 if it succeeded."""
    sys.exit(_wait(JobsClient(url, key), job_id, interval=interval))


def _wait(client: JobsClient, job_id: str, *, interval: float) -> int:
    job = client.call("GET", f"/jobs/{job_id}")
    if sys.stdout.isatty():
        job = _wait_with_bar(client, job, interval)
    else:
        shown = None
        while True:
            line = _line(job)
            if line != shown:
                click.echo(line)
                shown = line
            if job["state"] in _ENDED:
                break
            job = _next_read(client, job_id, interval)
    for failed in job.get("failed_chunks", []):
        click.echo(f"  chunk {failed['index']}: {failed['reason']}")
    return 0 if job["state"] == "succeeded" else 1


def _next_read(client: JobsClient, job_id: str, interval: float) -> dict[str, Any]:
    """The job once it ended or ``interval`` seconds later: the gateway holds the answer
    (``?wait=``), so its end shows at once, not up to an interval late."""
    wait = min(interval, MAX_WAIT_SECONDS)
    return client.call("GET", f"/jobs/{job_id}", params={"wait": f"{wait:g}"}, timeout=wait + 30.0)  # type: ignore[no-any-return]


def _wait_with_bar(client: JobsClient, job: dict[str, Any], interval: float) -> dict[str, Any]:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        Task,
        TextColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class RowsPerSecond(ProgressColumn):
        def render(self, task: Task) -> Text:
            return Text(f"{task.speed:,.0f} rows/s" if task.speed else "? rows/s")

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("rows"),
        RowsPerSecond(),
        TimeRemainingColumn(),
    )
    with Progress(*columns) as progress:
        task = progress.add_task(f"{job['id']} {job['state']}", total=job.get("rows_total"))
        while True:
            progress.update(task, completed=job["rows_done"], description=f"{job['id']} {job['state']}")
            if job["state"] in _ENDED:
                break
            job = _next_read(client, job["id"], interval)
    click.echo(_line(job))
    return job
