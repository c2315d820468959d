"""Asynchronous predictions and batch scoring jobs (docs/user-guide.md: Jobs)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from gateway.settings.section import SettingsSection, comma_list


class JobsSettings(SettingsSection):
    """Asynchronous predictions and batch scoring jobs (docs/user-guide.md: Jobs)."""

    jobs_enabled: bool = True
    """Whether this process accepts jobs (``POST /models/<name>/jobs``) and runs their chunks.
    A ``--role sync`` process never runs chunks, whatever this says."""

    jobs_max_chunks_per_process: int = Field(default=2, ge=0)
    """At most this many chunks run at once in one process. Their predict calls take turns (one
    job's batch of a version at a time, beside its requests' batches), so the second chunk reads
    its input, or commits its output and records its end, while the first predicts: 2 (the
    default) keeps the model busy; more adds little. In a serving process a chunk predicts
    GATEWAY_JOBS_PREDICT_SHARE of the time while requests come. 0: this process runs none (it
    still accepts jobs; others run them)."""

    jobs_batch_rows: int = Field(default=10_000, ge=1)
    """Rows per predict call of a chunk while its version has requests (one queued, or one
    within the last second): between two such calls a chunk gives way to them. With none, and
    always in a ``--role jobs`` process, a chunk is predicted in one call."""

    jobs_predict_share: float = Field(default=0.25, gt=0, le=1)
    """The share of the time a chunk in a serving process spends in its predict calls while its
    version has requests: after a call of t seconds it waits t × (1 − share) / share before the
    next, so requests arriving then are neither queued behind its batch nor share the GIL with
    it. Lower: a request's p99 during a job nearer its idle one, and the job's rows a second
    lower while requests come (bounded by the share). 1: no wait. With no requests, and in a
    ``--role jobs`` process, a chunk never waits. 0.25 (0.5 before 26 Nov): requests come first."""

    jobs_on_serving: Literal["auto", "always", "never"] = "auto"
    """Whether a serving process (``--role all`` or ``gateway``) runs chunks. ``auto``: only
    while no ``--role jobs`` process reports to the same state database (then those run them,
    at their lower priority, and requests keep the serving processes' cores). ``always``: also
    beside jobs processes. ``never``: only jobs processes run chunks (none running: jobs wait)."""

    jobs_nice: int = Field(default=10, ge=0, le=19)
    """How much a ``--role jobs`` process lowers its OS priority (``nice``) when it starts, so
    that on a host it shares with serving processes the kernel gives them the cores first. 0:
    the same priority as theirs."""

    jobs_chunk_rows: int = Field(default=200_000, ge=1)
    """Rows a Parquet chunk aims at (whole row groups, from the footer; GATEWAY_JOBS_CHUNK_BYTES
    bounds wide rows). What a chunk costs besides its rows (its claim and finish, its part's
    file) is paid once a chunk: fewer, larger chunks pay it less often, at the cost of fewer to
    share among replicas and more to redo when one dies. Lower it for a slow model."""

    jobs_chunk_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    """Bytes a CSV or JSON lines chunk aims at (cut at line starts)."""

    jobs_lease_seconds: float = Field(default=30.0, gt=0)
    """How long a claimed chunk stays with its process without a heartbeat (renewed every third
    of it): past it, a chunk of a process that died is claimed again by another and redone."""

    jobs_poll_seconds: float = Field(default=1.0, gt=0)
    """How often an idle process looks for chunks to claim. A job submitted to it wakes it at
    once; on a PostgreSQL state database, so does one submitted to any other process (NOTIFY):
    the poll is then only what finds a chunk whose wake-up was lost."""

    jobs_on_bad_chunk: Literal["fail", "finish"] = "finish"
    """``fail``: a job fails at its first bad chunk (the rest are cancelled). ``finish``: the job
    runs every chunk and ends ``partial``, its bad chunks listed with their range and reason."""

    jobs_roots: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Comma-separated folders (absolute paths or ``file:///``) and S3 prefixes (``s3://bucket/prefix``)
    a file job may read its inputs from and write its output under; empty (the default): wherever
    this process's own filesystem and S3 credentials reach. Set it wherever a caller with a
    ``predict:`` scope is not trusted with every file the gateway can read and write."""

    jobs_max_open: int = Field(default=1000, ge=1)
    """Jobs queued or running at once, fleet-wide: a submission past it is answered 429."""

    jobs_max_chunks: int = Field(default=100_000, ge=1)
    """Chunks one file job may split into; a bigger input is refused at submission."""

    jobs_max_files: int = Field(default=10_000, ge=1)
    """Input files one file job may name (a glob or prefix matching more is refused)."""

    jobs_max_result_bytes: int = Field(default=16 * 1024 * 1024, ge=1)
    """The largest inline job result kept in the state database: a larger answer fails the job
    (send such inputs as a file job)."""

    jobs_retention_hours: float = Field(default=72.0, gt=0)
    """How long a finished job (its state, chunks and an inline result) is kept, then deleted."""

    jobs_max_attempts: int = Field(default=5, ge=1)
    """Claims of one chunk (its processes died, or it was given back when its version could not
    be loaded for the moment) before it fails."""

    jobs_output_retries: int = Field(default=4, ge=0)
    """Retries, with exponential backoff from 0.5 s, of a chunk's output write that failed for a
    reason that may pass; then the job fails (its input untouched)."""

    @field_validator("jobs_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: object) -> object:
        return comma_list(value)

    jobs_callback_secret: SecretStr | None = None
    """The HMAC secret that signs job callbacks (``X-Gateway-Signature``, as MLflow signs its
    webhooks); unset: callbacks are sent unsigned."""

    jobs_callback_attempts: int = Field(default=10, ge=1)
    """Deliveries of a job's callback (one POST each) before it is given up, while the
    receiver is down or answers other than 2xx. Delivery is at least once: a receiver
    de-duplicates on ``X-Gateway-Delivery-Id``, the same on every delivery of one job's end."""

    jobs_callback_backoff_seconds: float = Field(default=30.0, gt=0)
    """The wait before a callback's second delivery, doubled before each next one (at most an
    hour): with the default 10 attempts, about three hours from the job's end to the last."""
