"""The JSON shapes the gateway answers with, as they appear in the OpenAPI page."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field


def utc_iso(moment: datetime | float) -> str:
    """Every timestamp in an answer: ISO 8601 in UTC, ``2026-11-22T10:15:40.812345+00:00``.
    A float is Unix time; a datetime without a zone is UTC (sqlite keeps none)."""
    if isinstance(moment, datetime):
        aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    else:
        aware = datetime.fromtimestamp(moment, tz=UTC)
    return aware.astimezone(UTC).isoformat()


class ErrorBody(BaseModel):
    """Every error, MLflow-style."""

    error_code: str = Field(examples=["RESOURCE_DOES_NOT_EXIST"])
    message: str = Field(examples=["Model 'iris' has no alias 'champion'"])


class PredictionBody(BaseModel):
    predictions: Any = Field(examples=[[0, 2]])


class LoadState(BaseModel):
    """A version held in this process's memory."""

    flavor: str
    size_bytes: int = Field(description="Measured memory the loaded model holds")
    device_bytes: int = Field(
        default=0, description="Measured memory its tensors hold on its GPU (0 on the CPU; not in size_bytes)"
    )
    load_seconds: float
    loaded_at: str = Field(description="When it finished loading (ISO 8601, UTC)")
    last_used: str = Field(description="When it last served a request (ISO 8601, UTC)")
    in_use: int = Field(description="Requests using it right now")
    uses: int
    path: Literal["fast", "pyfunc"] = Field(
        description="fast: JSON bodies it reads exactly go to the flavor's own predict as one array "
        "(the rest through pyfunc); pyfunc: every body goes through MLflow's pyfunc"
    )
    path_reason: str = Field(
        description="Why: the fast path's input, and what the warm-up request through both paths showed; "
        "or why there is no fast path",
        examples=["fast path: sklearn on double columns; the warm-up request answered as through pyfunc"],
    )


class RuntimeState(BaseModel):
    """Where a version runs in this process, and why (docs/operations.md: Models with their own environments)."""

    runtime: Literal["in_process", "isolated"] = Field(
        description="in_process: in the gateway's own process and Python; isolated: in a worker process on "
        "an environment built from the version's own requirements"
    )
    reason: str = Field(description="Why: the requirements this process does or does not meet, or the setting")
    environment: str | None = Field(default=None, description="The environment's key (isolated versions)")
    python: str | None = Field(default=None, description="The Python it runs on")
    mismatches: list[str] = Field(default_factory=list, description="Requirements this process does not meet")
    note: str | None = Field(default=None, description="Something to know, e.g. its Python is not on this host")
    device: str = Field(default="cpu", description="Where it computes: cpu, or cuda:N for a PyTorch version on a GPU")
    device_reason: str | None = Field(
        default=None,
        description="Why there (PyTorch versions): GATEWAY_DEVICE, its gateway.device tag, "
        "or why it fell back to the CPU",
        examples=["GATEWAY_DEVICE=auto: this host has CUDA"],
    )
    worker_pid: int | None = Field(default=None, description="The worker process serving it, while loaded")
    worker_pids: list[int] = Field(
        default_factory=list, description="Every worker process holding it (GATEWAY_ENV_PROCESSES)"
    )
    sandbox: dict[str, Any] | None = Field(
        default=None,
        description="What its workers are confined to (GATEWAY_SANDBOX; docs/security.md): each layer "
        "(environment, filesystem, network, limits, syscalls) with how it is enforced or why not, and "
        "``missing``: the layers this host could not provide. None: in process, or GATEWAY_SANDBOX=off",
    )


class VersionSummary(BaseModel):
    version: int
    status: str
    aliases: list[str] = Field(description="Aliases this gateway serves with this version")
    sha256: str | None = Field(description="The pinned digest of its artifacts, once fetched")
    refused: str | None = Field(description="Why the version is refused and never serves, if it is")
    first_seen: str = Field(description="When the sync first saw it (ISO 8601, UTC)")
    loaded: LoadState | None
    last_load_error: str | None = None
    runtime: RuntimeState | None = Field(
        default=None, description="Where it runs here and why; decided when it is first loaded on this host"
    )


class VersionDetail(VersionSummary):
    name: str
    source: str
    run_id: str | None
    tags: dict[str, str]
    flavors: list[str] = Field(description="The flavors MLflow saved (python_function, sklearn...)")
    signature: dict[str, Any] | None = Field(description="Input, output and params schema, parsed")
    input_example: Any | None = Field(
        description="A ready-to-send request body for this version's predict endpoint, when one was logged"
    )


class ModelSummary(BaseModel):
    name: str
    aliases: dict[str, int] = Field(description="alias -> version as this gateway serves it")
    registry_aliases: dict[str, int] = Field(
        description="alias -> version as MLflow sets it (differs from aliases while a warm swap is under way)"
    )
    latest_version: int | None = Field(description="Highest READY version")
    versions: list[int] = Field(description="Newest first")
    loaded_versions: list[int] = Field(description="Versions held in this process's memory, newest first")
    isolated_versions: dict[str, str] = Field(
        default_factory=dict,
        description="Loaded versions served by an isolated worker: version -> the environment's key",
    )


class AliasBehind(BaseModel):
    """A warm alias this gateway serves at another version than the one MLflow names."""

    registry_version: int = Field(description="The version MLflow's alias points at")
    serving_version: int | None = Field(description="The version this gateway serves for it meanwhile")
    reason: str = Field(
        description="Why: a swap under way, the version is refused, or the swap to it fails (and is retried)"
    )
    since: str | None = Field(default=None, description="When the swap first failed (ISO 8601, UTC), if it fails")


class ModelDetail(BaseModel):
    name: str
    aliases: dict[str, int]
    registry_aliases: dict[str, int]
    aliases_behind: dict[str, AliasBehind] = Field(
        default_factory=dict,
        description="Aliases served at another version than MLflow's, and why (alias -> what and why)",
    )
    latest_version: int | None
    default_version: int | None = Field(description="What /models/{name}/predict serves with no X-Model-Version header")
    versions: list[VersionSummary] = Field(description="Newest first")


class ModelList(BaseModel):
    models: list[ModelSummary]
    registry: str = Field(description="The MLflow registry this gateway follows (any password hidden)")
    note: str | None = Field(
        default=None, description="Why there are no models, when there are none (an empty or unread registry)"
    )


class EventBody(BaseModel):
    id: int
    at: str = Field(description="ISO 8601, UTC")
    model: str
    version: int | None
    alias: str | None
    kind: str = Field(examples=["swapped"])
    reason: str
    actor: str = Field(description="Which process and role wrote it")


class EventList(BaseModel):
    events: list[EventBody]


class SyncBody(BaseModel):
    models: int
    new_versions: int
    alias_moves: int
    verified: int
    refused: int
    failed: int
    seconds: float
    generation: int
    error: str | None
    fleet_behind: list[str] = []
    """Replicas holding a synced model that did not report its warm aliases at their targets
    within ``fleet_timeout`` (empty: every one serves them; gateway.fleet.catchup)."""


class Health(BaseModel):
    """``/health/live``: the process is up."""

    status: str = Field(examples=["ok"])


class ReadyHealth(Health):
    """``/health/ready``: also what this process is, and while not ready, why."""

    replica: str | None = Field(default=None, description="This process's replica id (GATEWAY_REPLICA_ID)")
    loaded_models: int | None = Field(default=None, description="Versions in memory (null in the sync role)")
    loaded_bytes: int | None = Field(default=None, description="Their measured size (null in the sync role)")
    worker_processes: int | None = Field(
        default=None, description="Isolated worker processes running (versions on environments of their own)"
    )
    worker_bytes: int | None = Field(
        default=None,
        description="Those workers' own memory (each one's RSS at start, before any version), counted once per "
        "worker apart from loaded_bytes and GATEWAY_MAX_MEMORY_MB; GATEWAY_ENV_MAX_WORKERS bounds it",
    )
    sandbox: str | None = Field(
        default=None,
        description="What confines isolated workers here (GATEWAY_SANDBOX), and the layers this host cannot "
        "provide; null without isolated workers (GATEWAY_ENV_MANAGER=local, the sync role)",
        examples=["best-effort: every layer (environment, filesystem, network, limits, capabilities, syscalls)"],
    )
    role: str = Field(examples=["all"], description="all, gateway or sync (serve --role)")
    leader: bool = Field(description="Whether this process holds the sync leader lease now")
    reason: str | None = Field(default=None, description="What it waits for (503 only)")
    registry: str = Field(description="The MLflow registry this process follows (any password hidden)")
    registered_models: int | None = Field(
        default=None, description="Registered models this process knows and can serve (null in the sync role)"
    )
    note: str | None = Field(
        default=None,
        description="Set when ready with nothing to serve: the registry has no models, or was never read",
    )


class ArmDetail(BaseModel):
    """One version's share of a model's default-route requests."""

    version: int
    weight: float = Field(description="Percent of default-route requests, as the weight tag sets it")
    shadow: float = Field(description="Percent of default-route requests also sent here after the primary")
    served_weight: float = Field(description="What it takes in this process: 0 until warm here, or rolled back")
    warm: bool = Field(description="Loaded, verified and warmed in this process")
    rolled_back: str | None = Field(description="Why the guard took its weight away (until its tag changes)")
    shadow_paused_s: float | None = Field(
        default=None,
        description="Seconds left of the pause of its shadows in this process, after they failed "
        "GATEWAY_SHADOW_PAUSE_AFTER_FAILURES times in a row (null: they run)",
    )


class ArmStats(BaseModel):
    """One arm's answers in this process: counts since start, rates and quantiles on the guard's window."""

    arm: str = Field(examples=["canary"])
    version: int
    requests: int
    errors: int = Field(
        description="The errors the guard judges: 5xx, timeouts, the model raising"
        " (and client errors with GATEWAY_CANARY_COUNT_CLIENT_ERRORS)"
    )
    client_errors: int = Field(description="The callers' other 4xx (bad bodies, input that does not fit)")
    window: int = Field(
        description="Judged answers in the guard's window (the last GATEWAY_CANARY_MIN_REQUESTS;"
        " client errors only with GATEWAY_CANARY_COUNT_CLIENT_ERRORS)"
    )
    error_rate: float = Field(description="Judged errors over the window")
    p50_ms: float | None
    p99_ms: float | None


class ArmCounts(BaseModel):
    """What one arm and version answered since a replica started."""

    arm: str = Field(examples=["canary"], description="default, canary or shadow")
    version: int
    requests: int = Field(description="Answers; for a shadow, the copies that ran")
    errors: int = Field(description="Error answers the guard judges (see stats); for a shadow, the copies that failed")
    agreed: int = Field(0, description="Shadows: answers equal to the primary's")
    differed: int = Field(0, description="Shadows: answers unlike the primary's")
    dropped: int = Field(0, description="Shadows: copies that never ran (a full queue)")


class ArmTotal(ArmCounts):
    """One arm and version, summed over the live replicas."""

    error_rate: float | None = Field(description="errors / requests (None: no requests)")


class ReplicaTraffic(BaseModel):
    """One replica's counts for the model: this one's now, the others' as last published."""

    replica: str = Field(examples=["gw-7f9c:41:9a3e02b1"], description="host:pid:random, new at each start")
    this_replica: bool = Field(description="The process that answered this request (its counts are live)")
    seen_at: str = Field(description="When it published them (ISO 8601, UTC; the database's clock)")
    age_seconds: float
    stale: bool = Field(description="Not seen for a while: stopped, or cut off from the database; not in the total")
    counts: list[ArmCounts]


class TrafficDetail(BaseModel):
    """A model's split: as configured (version tags, from the state database) and as served here
    and by every replica."""

    name: str
    default_version: int | None
    arms: list[ArmDetail]
    stats: list[ArmStats] = Field(description="This process only: each replica judges its own answers")
    shadow_agreement: dict[str, float] = Field(description="Shadow answers compared here: agree, differ")
    shadow_dropped: int
    guard: dict[str, float] = Field(description="The guard's thresholds")
    replica: str = Field(description="This process's replica id")
    replicas: list[ReplicaTraffic] = Field(
        description="Every replica's counts (published to the state database each follow interval while the "
        "model has a split), this one first"
    )
    total: list[ArmTotal] = Field(description="The counts summed over the replicas that are not stale")
    replicas_note: str | None = Field(None, description="Why other replicas are missing, if the database could not say")


class FleetHolding(BaseModel):
    """A version a process holds in memory, as it last reported."""

    name: str
    version: int
    size_bytes: int
    last_served: str | None = Field(description="When a request last used it (null: loaded or warmed only)")
    in_use: int = Field(description="Requests using it at that report")


class FleetProcess(BaseModel):
    """One serving or syncing process (a worker of a replica), as it last reported itself."""

    member: str = Field(description="host:pid:random, new at every start")
    role: str = Field(description="all, gateway or sync")
    state: str = Field(description="starting, ready, draining or stopped")
    leader: bool = Field(description="Holds the sync lease now")
    quiet: bool = Field(description="Not heard from for three heartbeats (and not stopped): hung, cut off or killed")
    seen_seconds_ago: float = Field(description="Since its last report, on the state database's clock")
    started_at: str
    warm_rule: str = Field(description="What it warmed at start and which alias moves it follows")
    loaded_bytes: int
    budget_bytes: int = Field(description="GATEWAY_MAX_MEMORY_MB, in bytes (0 for a sync-only process)")
    max_models: int = Field(description="GATEWAY_MAX_LOADED_MODELS (0 for a sync-only process)")
    holdings: list[FleetHolding]


class FleetReplica(BaseModel):
    """A replica: every process that reports under one GATEWAY_REPLICA_ID (the workers of one
    ``serve``), the newest first."""

    replica: str
    state: str = Field(
        description="ready, starting, draining or stopped: the most serving of its live processes; "
        "quiet when every one of them has gone quiet"
    )
    loaded_bytes: int = Field(description="Held by its live processes together")
    budget_bytes: int = Field(description="Their budgets together")
    models: list[str] = Field(description="Models its live processes hold a version of")
    processes: list[FleetProcess]


class FleetModel(BaseModel):
    """Where a model is held: each replica and the versions it holds."""

    name: str
    replicas: dict[str, list[int]] = Field(examples=[{"gateway-1:8000": [3], "gateway-2:8000": [2, 3]}])


class FleetView(BaseModel):
    """``GET /fleet``: every process that reports to this state database, by replica, and which
    replica holds which model (from their last reports: every GATEWAY_HEARTBEAT_SECONDS)."""

    this_replica: str
    this_member: str
    quiet_after_seconds: float
    replicas: list[FleetReplica]
    models: list[FleetModel] = Field(description="Held models, by name; only what live processes hold")


class FeedbackResult(BaseModel):
    """What became of one label."""

    request_id: str
    row: int | None = Field(default=None, description="The answer's row the label is for, as the item named it")
    status: Literal["accepted", "unknown", "expired", "duplicate", "invalid"]
    reason: str | None = Field(default=None, description="Why it was not accepted (absent when accepted)")
    model: str | None = Field(default=None, description="The model that answered the request (accepted labels)")
    version: int | None = None
    arm: str | None = Field(default=None, description="The route that chose the version: default, canary, named")


class FeedbackAnswer(BaseModel):
    """``POST /feedback``: a result per item, in the order sent, and how many of each status."""

    counts: dict[str, int] = Field(examples=[{"accepted": 99, "unknown": 1}])
    results: list[FeedbackResult]


class ArmQualityBody(BaseModel):
    """Live quality of a version on one arm (or ``all`` of them) over its latest labels."""

    arm: str = Field(description="default, canary, named, or all (every arm together)")
    task: Literal["classification", "regression"] | None
    labels: int = Field(description="Labels in the window (at most window)")
    window: int = Field(description="The latest this many labels count (GATEWAY_QUALITY_WINDOW)")
    metrics: dict[str, float] = Field(
        examples=[{"accuracy": 0.96, "precision_macro": 0.96, "recall_macro": 0.96, "f1_macro": 0.96}]
    )


class VersionQualityBody(BaseModel):
    """``GET /models/{name}/versions/{version}/quality``: read from the state database now."""

    model: str
    version: int
    arms: list[ArmQualityBody]


class QualityRow(ArmQualityBody):
    model: str
    version: int


class QualityList(BaseModel):
    """``GET /quality``: every version and arm with labels, as this process last computed them."""

    read_at: str | None = Field(description="When the windows were last read (every GATEWAY_QUALITY_INTERVAL_SECONDS)")
    interval_seconds: float
    rows: list[QualityRow]


class DriftFeatureBody(BaseModel):
    """One feature's (or output's) drift over the fleet's window against the reference."""

    feature: str = Field(examples=["petal length (cm)"])
    kind: Literal["input", "output"]
    psi: float | None = Field(description="Population stability index over the reference's bins (None: no value)")
    test: Literal["ks", "chi2"] = Field(description="ks: Kolmogorov-Smirnov on the bins (numbers); chi2: categories")
    statistic: float | None
    p_value: float | None
    missing_share: float
    outlier_share: float = Field(description="Outside the reference's range, unseen categories, not of the type")
    rows: int
    flagged: bool


class DriftReferenceBody(BaseModel):
    """Where a version's reference came from, as the state database holds it."""

    status: str = Field(description="ready, failed, or none (no source: a baseline is collected)")
    source_kind: str | None = Field(
        default=None, description="Where it came from; baseline: the first requests served (weaker)"
    )
    source_uri: str | None = None
    reason: str | None = Field(default=None, description="Why it failed, or why there is none")
    outputs_reason: str | None = Field(
        default=None, description="Why a ready reference has no profile of the outputs (no output figures)"
    )
    rows: int = 0
    computed_at: str | None = None
    weaker: bool = Field(
        default=False,
        description="A baseline of the first requests served: says whether traffic moved since the version "
        "began serving, not whether it looks like the data it was trained on",
    )


class DriftWindowBody(BaseModel):
    rows: int = Field(description="Rows binned in the fleet's window (sampled: GATEWAY_DRIFT_SAMPLE)")
    requests: int
    mismatched_requests: int = Field(description="Requests whose columns were not the reference's (outliers)")
    unreadable_requests: int = Field(description="Sampled requests that could not be read as a table")
    processes: int = Field(description="Serving processes whose windows were summed")
    seconds: float = Field(description="GATEWAY_DRIFT_WINDOW_SECONDS")
    max_rows_per_process: int = Field(description="GATEWAY_DRIFT_WINDOW_ROWS")


class DriftThresholdsBody(BaseModel):
    psi: float
    p_value: float
    outlier_share: float
    min_rows: int


class VersionDriftBody(BaseModel):
    """``GET /models/{name}/versions/{version}/drift``: as this process last computed it."""

    model: str
    version: int
    status: Literal["ok", "drifting", "not_enough_rows", "no_figures"]
    reason: str | None = Field(default=None, description="Why there are no figures, or not enough rows")
    reference: DriftReferenceBody | None
    window: DriftWindowBody | None = None
    thresholds: DriftThresholdsBody | None = None
    flagged: list[str] = Field(default_factory=list, description="Flagged features, worst first")
    features: list[DriftFeatureBody] = Field(default_factory=list, description="Largest PSI first")
    read_at: str | None = None


class DriftRow(BaseModel):
    model: str
    version: int
    status: Literal["ok", "drifting", "not_enough_rows"]
    rows: int
    max_psi: float
    flagged: list[str]
    reference: str | None = Field(description="The reference's source kind (baseline: weaker)")
    weaker: bool
    worst: list[DriftFeatureBody] = Field(description="The features with the largest PSI, worst first (up to 5)")


class DriftList(BaseModel):
    """``GET /drift``: every version with a drift window, drifting ones first, as last computed."""

    read_at: str | None
    interval_seconds: float
    rows: list[DriftRow]


class UsageLineBody(BaseModel):
    caller: str = Field(description="A key's name, oidc:<sub> for a token, '-' without keys")
    model: str
    version: int
    day: str = Field(description="The UTC day, YYYY-MM-DD")
    requests: int
    rows: int = Field(description="Input rows, where the request decoded to a frame or an array")
    errors: int = Field(description="Requests answered 4xx or 5xx once a version was chosen")
    predict_seconds: float
    tokens: int = Field(description="usage.total_tokens of the OpenAI routes' answers, where reported")


class QuotaBody(BaseModel):
    name: str
    caller: str = Field(description="A key's name, oidc:<sub>, or group:<name> (each member its own)")
    models: str = Field(description="A glob over model names, summed together")
    period: str = Field(description="day or month, UTC")
    unit: str = Field(description="requests, rows or tokens")
    amount: int
    used: int | None = Field(
        default=None, description="This period's use, as the fleet's flushed usage has it (not for a group)"
    )
    resets_at: str = Field(description="When the period ends (ISO 8601, UTC)")


class UsageReport(BaseModel):
    usage: list[UsageLineBody]
    quotas: list[QuotaBody]
