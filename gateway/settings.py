"""Gateway configuration, read from the environment (prefix ``GATEWAY_``).

MLflow's own variables (``MLFLOW_TRACKING_URI``, ``MLFLOW_REGISTRY_URI``,
``MLFLOW_S3_ENDPOINT_URL``, ``AWS_*``) keep their own names and are read by MLflow.

Every value is checked here, when the settings load: a bad one is a :class:`SettingsError`
whose message has one line per bad variable, naming it, never a traceback from wherever the
value was first used. What is valid but surely a mistake (a misspelled variable, a warm
alias no request can name) is a warning (:func:`doubts`).
"""

from __future__ import annotations

import difflib
import logging
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from gateway.dataplane.policy import TESTED_FLAVORS
from gateway.errors import InvalidSelector
from gateway.runtimes.sandbox import REFUSED_PREFIXES, refused_pass_name
from gateway.runtimes.worker import devices
from gateway.wire.selectors import parse_selector, split_model_reference

PREFIX = "GATEWAY_"
LogLevel = Literal["critical", "error", "warning", "info", "debug", "trace"]


class SettingsError(Exception):
    """Settings that cannot be used; the message has one line per variable, naming it."""


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "registry-gateway"


DEFAULT_DATABASE_FILE = "gateway-state.db"


def _default_database_url() -> str:
    """``gateway-state.db`` in the working directory (as ``mlflow server`` keeps ``mlflow.db``):
    ``serve``, ``keys`` and ``db`` run from one directory open the same one, and each directory
    (each registry tried) has its own. Resolved here, so a process that changes directory
    later, and the line each command prints, name the same file."""
    return f"sqlite:///{Path.cwd() / DEFAULT_DATABASE_FILE}"


def default_target(value: str) -> tuple[str, str | None]:
    """GATEWAY_DEFAULT_MODEL as (model name, version selector or None for its default route):
    ``name@alias`` and ``name/version`` split at the last ``@`` or ``/`` (MLflow allows neither
    in an alias; a version is digits or ``latest``)."""
    return split_model_reference(value)


class GatewaySettings(BaseSettings):
    """Every knob of one gateway process."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="ignore", use_attribute_docstrings=True)

    max_loaded_models: int = Field(default=16, ge=1)
    """Most model versions held in memory at once; the least recently used goes first."""

    max_memory_mb: float = Field(default=2048, gt=0)
    """Memory budget for loaded models, in MiB, using each model's measured size (for one in an
    isolated worker, what its load added to the worker; the workers' own memory is counted
    apart, bounded by GATEWAY_ENV_MAX_WORKERS)."""

    default_alias: str = "champion"
    """Alias served by ``/models/{name}/predict`` when no ``X-Model-Version`` header is sent.
    A model without this alias is served at ``latest``."""

    default_model: str | None = None
    """The model ``mlflow models serve``'s routes serve (``POST /invocations``): ``name`` (its
    default route: the default alias, else latest, canaries included), ``name@alias`` or
    ``name/version``. Unset: ``/invocations`` answers 404 saying so."""

    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1)
    """Largest request body accepted; larger ones get 413."""

    predict_timeout_seconds: float = Field(default=30.0, gt=0)
    """A predict call slower than this answers 504 (the call itself finishes in the background)."""

    artifact_cache_dir: Path = Field(default_factory=_default_cache_dir)
    """Where downloaded model artifacts are kept; a version is downloaded once per host."""

    artifact_cache_max_mb: float = Field(default=10240, gt=0)
    """Disk budget of the artifact cache, in MiB; least recently used artifacts that no loaded
    model uses are removed past it."""

    registry_timeout_seconds: float = Field(default=10.0, gt=0)
    """How long startup waits for the first registry sync before serving from the state database."""

    load_retry_seconds: float = Field(default=2.0, ge=0)
    """After a version fails to load, requests for it fail fast for this long before
    another load is tried."""

    load_threads: int = Field(default=4, ge=1)
    """Threads that download and load models; more cold versions than this wait their turn."""

    tune_allocator: bool = True
    """On glibc, keep large blocks mmapped and cap malloc arenas at 2 (gateway/dataplane/heap.py), so
    memory of unloaded models goes back to the system: without it RSS outgrew the model
    budget under churn (bench/README.md, memory section). Off: the C library's defaults."""

    inference_threads: int = Field(default=4, ge=1)
    """Threads that run predict calls, except small fast-path batches (``inline_predict_ms``)."""

    # --- streams (predict_stream over SSE and the OpenAI routes: docs/protocols.md) ---

    max_streams: int = Field(default=1000, ge=1)
    """Streams open at once in this process; past it a new stream is answered 503 (Retry-After)
    at once. Each holds its version's lease and, while its model computes a chunk, a stream thread."""

    stream_threads: int = Field(default=32, ge=1)
    """Threads that step the models' generators (one chunk at a time per stream): the streams
    computing a chunk at the same moment, not the streams open."""

    stream_idle_timeout_seconds: float = Field(default=60.0, gt=0)
    """A stream whose model yields nothing for this long is ended with an error event (504 if
    nothing was sent yet), and its generator closed; one whose client reads nothing for this long
    is closed."""

    log_level: LogLevel = "info"
    """Log level of the gateway and uvicorn: critical, error, warning, info, debug or trace."""

    access_log: bool = True
    """A line per request in the log: the gateway's own access log (uvicorn's is always off),
    naming the model, version and arm that answered. Off saves formatting and writing
    that line, about a third of what a small prediction costs on one core
    (docs/performance.md); the request metrics count every request either way."""

    forwarded_allow_ips: str = "127.0.0.1,::1"
    """Comma-separated addresses (or networks, e.g. ``10.0.0.0/8``; ``*`` for any) of proxies
    whose ``X-Forwarded-For`` and ``X-Forwarded-Proto`` the gateway believes: a request from one
    of them is logged with the client the header names (its port unknown); from anyone else,
    with the address it came from, whatever it sends. The default trusts a proxy on this host
    (deploy/local_fleet.py); behind HAProxy, Envoy or nginx elsewhere, name them (compose: ``*``,
    where only the proxy reaches the gateways). uvicorn's ``--forwarded-allow-ips``."""

    database_url: str = Field(default_factory=_default_database_url)
    """The state database (versions seen, pinned digests, routes, events, API keys): a SQLAlchemy
    URL. sqlite (the default, ``gateway-state.db`` in the directory the command runs in, upgraded
    automatically) for one host; PostgreSQL for many replicas."""

    poll_interval_seconds: float = Field(default=30.0, gt=0)
    """How often the registry is polled for new versions, alias moves, tag changes and deletions."""

    warm_aliases: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["champion"])
    """Comma-separated aliases swapped blue-green: when one moves, the new version is fetched,
    verified, loaded and warmed before it takes traffic. Other aliases move at once."""

    verify_interval_seconds: float = Field(default=300.0, gt=0)
    """Each served version (routed, or loaded by the leading process) has its bytes checked
    against its pin once per interval, the checks spread evenly over it, to catch bytes
    changed in place: one LIST in direct S3, else a download."""

    full_sync_interval_seconds: float = Field(default=600.0, gt=0)
    """How often a poll reads every version of every model. Other polls read every model and
    its aliases, and the versions only of models whose versions changed (MLflow's
    ``last_updated_timestamp``) or that are served here; version tags of other models change
    no timestamp, so they are seen at the next full read, or at once with the webhook."""

    follow_interval_seconds: float = Field(default=1.0, gt=0)
    """How often this process checks the state database for changes made by the sync."""

    webhook_secret: SecretStr | None = None
    """Secret of the MLflow webhook (``MlflowClient.create_webhook(secret=...)``); without it,
    ``POST /webhooks/mlflow`` is off."""

    admin_token: SecretStr | None = None
    """Bearer token for ``POST /admin/sync``; without it the endpoint is off."""

    # --- authentication and limits ---
    auth: Literal["off", "keys"] = "off"
    """``keys``: every request needs an API key (``registry-gateway keys create``) with the scope
    its route requires, sent as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``; health
    and metrics stay open (``GATEWAY_METRICS_AUTH``), webhooks keep their own signature.
    ``off``: anyone who reaches the port may call everything (``serve`` then binds only a
    loopback address unless ``--insecure``)."""

    metrics_auth: Literal["off", "on"] = "off"
    """``on``: ``/health/*`` and ``/metrics`` need a key with the ``read`` scope too (with
    ``GATEWAY_AUTH=keys``). Off by default: probes and scrapers must not need keys."""

    model_rate: float | None = Field(default=None, gt=0)
    """Predict requests a second per model, for every model (a token bucket with a burst of as
    many, at least 1); past it 429 with ``Retry-After``. Unset: no limit."""

    model_concurrency: int | None = Field(default=None, ge=1)
    """Predict requests in flight at once per model, for every model; past it 429. Unset: no limit."""

    rate_limit_redis: str | None = None
    """A ``redis://`` URL: the rate and concurrency limits (of keys and of models) are shared by
    every process on the same state database through it. Unset: each process counts alone.
    Redis unreachable: each process counts alone until it answers again (and
    ``gateway_limits_redis_errors`` counts it); never an error for the caller."""

    max_loads_per_minute: int | None = Field(default=None, ge=1)
    """Most cold loads (versions loaded for a request because they were not in memory) this
    process starts in a minute; past it 503 with ``Retry-After``, so a loop over cold versions
    cannot thrash the model cache. Warm-alias swaps do not count. Unset: no limit."""

    # --- what the gateway loads ---
    allowed_flavors: Annotated[list[str], NoDecode] = Field(default_factory=lambda: list(TESTED_FLAVORS))
    """Comma-separated flavors a version may load with (the one whose loader MLflow runs:
    ``sklearn``, ``xgboost``, ``transformers``..., ``python_function`` for a PythonModel or
    models-from-code, ``custom_loader`` for a loader module of the model's own); ``*`` allows
    every flavor. Default: every flavor of the tested matrix (docs/user-guide.md: Flavors), not
    ``custom_loader`` nor flavors the gateway is not tested with. Another flavor answers 409
    naming this setting, and ``/events`` has a ``refused`` event."""

    allow_pickle: bool = True
    """``false``: refuse (409, an event) versions whose loading unpickles bytes: scikit-learn
    saved with pickle or cloudpickle, PyTorch saved with ``torch.save``, a pickled PythonModel,
    statsmodels, a LightGBM scikit-learn model, transformers weights in ``.bin`` files, a skops
    model that trusts types its own MLmodel lists. On by default because MLflow's
    default for many flavors is pickle: it trusts whoever can write the registry and its
    artifact store to run code in the gateway (docs/security.md: "What the gateway loads")."""

    allowed_artifact_uris: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Comma-separated URI prefixes (``s3://models/``, ``mlflow-artifacts:/``,
    ``file:///srv/mlruns/``) that versions' artifacts must lie under; a version elsewhere is
    refused (409, an event) before anything is downloaded. Empty (the default): anywhere the
    registry points."""

    max_body_rows: int = Field(default=100_000, ge=1)
    """Most rows a CSV or Parquet request body may hold; more answers 413."""

    max_decoded_mb: float = Field(default=256, gt=0)
    """Most memory, in MiB, a CSV or Parquet request body may take once decoded (a small
    compressed Parquet file can decode to gigabytes: its metadata is checked first); more
    answers 413."""

    # --- scale-out (roles, leader lease) ---
    role: Literal["all", "gateway", "sync"] = "all"
    """What this process does (``serve --role`` sets it): ``all`` serves models and competes
    for the sync lease; ``gateway`` serves models and never polls MLflow; ``sync`` only runs
    the sync under the lease (plus health, metrics, webhooks and ``/admin/sync``)."""

    lease_seconds: float | None = Field(default=None, gt=0)
    """How long the sync leader's lease lasts unrenewed; the leader renews it every third of
    this. Unset: the poll interval, between 1 and 30 s. A dead leader is replaced within this
    plus a third of it, and the new leader polls at once."""

    # --- a fleet of replicas (docs/operations.md: Running a fleet) ---
    replica_id: str | None = None
    """This replica's name in the fleet, stable across its restarts: what it served is kept
    under it, and warmed again when it starts (``GATEWAY_WARM_START``). ``serve`` sets
    ``<hostname>:<port>`` when unset; the workers of one ``serve --workers N`` share it. On
    Kubernetes, a StatefulSet's pod names are stable, a Deployment's are not."""

    warm_start: Literal["auto", "aliases", "served"] = "auto"
    """What a process warms before it is ready, and which warm-alias moves it follows
    (docs/ARCHITECTURE.md: Warm what you serve). ``aliases``: every warm alias that fits the
    cache, most recently served first (a lone ``serve``). ``served``: only what this replica
    served within ``GATEWAY_WARM_RECENT_SECONDS`` (a fleet's replica: ready at once when it has
    no history). ``auto``: ``served`` for ``--role gateway`` and when another serving replica
    reports to the same state database, else ``aliases``. In both, a warm alias a process does
    not hold is loaded and warmed by its first request."""

    warm_recent_seconds: float = Field(default=3600.0, gt=0)
    """A model this replica answered a request for within this long counts as served lately: its
    warm aliases' moves are swapped here, and a restart warms it again."""

    heartbeat_seconds: float = Field(default=5.0, gt=0)
    """How often a process reports itself to the state database (its state, memory and the
    versions it holds: ``GET /fleet``); one silent for three of these is shown as gone quiet."""

    drain_seconds: float = Field(default=5.0, ge=0)
    """On SIGTERM, how long a process keeps serving after ``/health/ready`` turned 503 (and its
    answers began closing their connections), so that balancers and Kubernetes stop sending it
    new requests before it stops accepting; then it finishes what is in flight within
    ``--graceful-timeout`` and unloads its models. SIGINT (Ctrl-C) and a second SIGTERM stop at
    once. 0: stop accepting at SIGTERM (behind a proxy that retries elsewhere)."""

    # --- performance ---
    batch_max_size: int = Field(default=64, ge=1)
    """Most requests for one version coalesced into one predict call. Batching is on for
    flavors whose predict is row-independent (sklearn, pytorch) and for versions tagged
    ``gateway.batching=true``; a version tagged ``gateway.batching=false`` never batches.
    1 turns batching off everywhere."""

    batch_max_wait_ms: float = Field(default=0.0, ge=0)
    """How long a batch may wait for more requests, and only while requests are arriving
    together: a lone request never waits. 0 (the default) takes what queued while the previous
    batch ran, which is what CPU models want; a model whose every call costs a lot whatever
    its size (a GPU) gains from waiting a few milliseconds."""

    inline_predict_ms: float = Field(default=1.0, ge=0)
    """A batch of a version with a fast path that computes on the CPU (sklearn; pytorch on the
    CPU) runs on the event loop, not in the inference pool, when a batch of that version at
    least as large took less than this many milliseconds of CPU: it saves two thread switches
    and the GIL's back and forth, about as much as a small model's predict. 0 runs every
    batch in the pool."""

    max_queue: int = Field(default=256, ge=1)
    """Requests one version may hold waiting for a predict; past it the answer is 503 with
    ``Retry-After``."""

    prediction_cache: str = "off"
    """Cache answers of deterministic versions by version sha256 and request body: ``off``,
    ``memory`` (this process) or a ``redis://`` URL (shared by replicas). sklearn, pytorch,
    xgboost, lightgbm and catboost versions count as deterministic unless tagged
    ``gateway.deterministic=false``; other flavors only when tagged ``gateway.deterministic=true``."""

    prediction_cache_max_mb: float = Field(default=64, gt=0)
    """Memory budget of ``GATEWAY_PREDICTION_CACHE=memory``, in MiB (least recently used go first)."""

    prediction_cache_ttl_seconds: int = Field(default=3600, ge=1)
    """How long a cached answer lives in Redis."""

    # --- canaries and shadows (version tags gateway.traffic.weight and gateway.traffic.shadow) ---
    route_key_header: str = "X-Route-Key"
    """Request header whose value assigns a default-route request to a canary by a stable hash
    of (model, value): the same on every replica and across restarts. Without it, at random."""

    canary_max_error_rate: float = Field(default=0.05, ge=0, le=1)
    """The guard takes a canary's weight away when its error rate exceeds the default
    version's (on the same window) by more than this."""

    canary_max_latency_ratio: float = Field(default=2.0, gt=0)
    """... or when its p99 latency exceeds the default version's by more than this factor."""

    canary_min_latency_delta_ms: float = Field(default=25.0, ge=0)
    """... and only when that p99 is also this many milliseconds above the default's: a p99 of
    a few milliseconds doubles from noise alone."""

    canary_min_requests: int = Field(default=200, ge=1)
    """Requests a canary answers in this process before the guard judges it; also the window
    (the last this many answers of each arm) the guard compares."""

    canary_count_client_errors: bool = False
    """The guard judges server errors only (5xx, timeouts, the model raising): a caller's other
    4xx say nothing of the version, and a sticky route key lands all of one caller's on one
    arm. True: judge them as errors too (they are counted per arm in /traffic either way)."""

    shadow_queue_size: int = Field(default=256, ge=1)
    """Shadow requests waiting to run; past it they are dropped (and counted), never waited for."""

    shadow_concurrency: int = Field(default=32, ge=1)
    """Shadow requests running at once in a process: together they join the shadow version's
    queue and share its batches like any request. A shadow joins that queue (GATEWAY_MAX_QUEUE)
    only while it is less than half full, and a version that does not batch runs one shadow at
    a time."""

    shadow_pause_after_failures: int = Field(default=20, ge=0)
    """A shadow version whose shadows fail this many times in a row pauses: its copies are
    dropped for a second, then for twice as long each time the first shadow after a pause
    fails too (up to a minute), until one answers. A failure costs the primaries CPU like an
    answer. 0: never pause."""

    shadow_tolerance: float = Field(default=1e-6, ge=0)
    """Relative tolerance within which a shadow's float answers agree with the primary's."""
    grpc_port: int | None = Field(default=None, ge=0, le=65535)
    """Serve the Open Inference Protocol over gRPC (and grpc.health.v1) on this port too, in the
    same process as HTTP; off when unset. ``serve --grpc-port`` sets it."""
    grpc_host: str = "127.0.0.1"
    """The address the gRPC server binds; ``serve`` sets it to its ``--host``."""
    grpc_acceptors: int = Field(default=8, ge=1, le=256)
    """How many gRPC servers listen on the port together (SO_REUSEPORT: the kernel hands each
    connection to one of them). grpc.aio's server takes new calls one at a time, each a turn
    of the event loop, so calls from many clients reach the batcher one by one and each pays
    a whole predict; N servers take up to N at once, and those share a batch. Calls that
    share one connection still arrive one at a time, and a batch of them waits for the next
    while they keep coming (at most 1 ms: gateway/dataplane/batching.py). Past 8 the bench
    gained nothing, and 64 cost a single connection's calls about 6% more CPU each."""

    # --- per-model Python environments (docs/operations.md: Models with their own environments) ---

    env_manager: Literal["uv", "local"] = "uv"
    """How versions whose requirements this process does not satisfy are served. ``uv``: in a
    worker process on an environment built from their own requirements with uv; ``local``:
    in this process anyway, as before environments existed, with one warning per version."""

    env_isolate: Literal["mismatched", "always"] = "mismatched"
    """Which versions run in a worker of their own environment: those whose requirements this
    process does not satisfy (``mismatched``), or every version (``always``)."""

    env_match: Literal["minor", "exact"] = "minor"
    """When an installed release satisfies a model's exact pin ``==X.Y.Z``: any X.Y.* (``minor``),
    or X.Y.Z only (``exact``). MLflow's own pin is met by the same major version either way."""

    env_dir: Path = Field(default_factory=lambda: _default_cache_dir() / "envs")
    """Where environments (and uv's cache, beside them) are kept; shared by the gateways of a host."""

    env_max_disk_mb: float = Field(default=20480, gt=0)
    """Disk budget of the environments; past it, the least recently used ones no worker runs on
    are removed after each build."""

    env_max_workers: int = Field(default=8, ge=1)
    """Worker processes alive at once in this gateway process (GATEWAY_ENV_PROCESSES per
    environment); a version needing more is answered 503 until another's last version goes.
    Each costs its own memory (a few hundred MiB), apart from GATEWAY_MAX_MEMORY_MB: /status shows it."""

    env_processes: int = Field(default=1, ge=1, le=64)
    """Worker processes per environment, each holding every version loaded on it; a batch goes
    to one that is not busy. More than one lets an isolated version use several cores."""

    env_worker_sharing: Literal["model", "version"] = "model"
    """Which isolated versions may share a worker process: the versions of one model (``model``),
    or none (``version``: a process per version). Versions of different models never share one,
    even on the same environment (which is built once and shared): in one process, a model's
    code could read or patch another's inputs, outputs and memory."""

    env_worker_idle_seconds: float = Field(default=0, ge=0)
    """Unload an isolated version no request used for this long (its worker stops with its last
    version; the next request loads it again, a cold load). 0: never, only the memory budget
    and GATEWAY_MAX_LOADED_MODELS evict."""

    env_allow_sdist: bool = False
    """Let uv build source distributions (runs their build code); off: wheels only."""

    env_allow_direct_references: bool = False
    """Let requirement lines name URLs and local paths (``pkg @ https://...``, ``./pkg``)."""

    env_require_python: bool = False
    """Refuse a version whose Python (major.minor) has no interpreter on this host, instead of
    building its environment on the gateway's own Python (with a note in its status)."""

    env_build_timeout_seconds: float = Field(default=600, gt=0)
    """Longest one uv step of an environment build may take before the version is refused."""

    env_http_timeout_seconds: float = Field(default=30, gt=0)
    """uv's timeout for the package index (UV_HTTP_TIMEOUT): an unreachable index fails the build."""

    env_max_concurrent_builds: int = Field(default=2, ge=1)
    """Environment builds running at once in this process (each in a loader thread)."""

    # --- the sandbox of isolated workers (docs/security.md: Untrusted models) ---

    sandbox: Literal["best-effort", "required", "off"] = "best-effort"
    """What confines isolated workers (GATEWAY_ENV_ISOLATE=always puts every version in one):
    an environment from an allow list, Landlock (read-only its interpreter and its versions'
    files), no network, rlimits, seccomp. ``best-effort``: what the host offers, the rest said
    at start and in the status; ``required``: the gateway does not start (and a worker does not
    load) without every layer; ``off``: workers get the gateway's environment, as before."""

    env_pass: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Comma-separated names of variables a sandboxed worker gets from the gateway's environment,
    for models that truly need one; never the gateway's own (``GATEWAY_*``, ``MLFLOW_*``,
    ``AWS_*``...), which are refused."""

    sandbox_allow_network: bool = False
    """Honour the ``gateway.network=allow`` version tag: such versions get workers of their own
    with the network open. Off: the tag is ignored (and the status says so)."""

    sandbox_memory_mb: float | None = Field(default=None, ge=0)
    """Address space a sandboxed worker may map beyond what it maps once started (the
    interpreter and MLflow), in MiB; past it the worker exits and its callers get 503. Unset:
    GATEWAY_MAX_MEMORY_MB (no worker may hold more than the whole budget); 0: no limit (PyTorch
    on CUDA reserves far more address space than it uses)."""

    sandbox_disk_mb: float = Field(default=512, ge=0)
    """What a sandboxed worker may write, in MiB: its scratch folder (``HOME``, ``TMPDIR``) is a
    tmpfs of this size in a mount namespace of its own (in memory, gone with the worker; where
    the host refuses one, the folder stays on the artifact cache's disk and the status says the
    total is unbounded), and no file it writes may be larger (RLIMIT_FSIZE). 0: no limit."""

    sandbox_cpu_seconds: float = Field(default=300, ge=0)
    """CPU time (all its threads) a sandboxed worker may use in one call, in one load, or between
    two calls (a thread its model started) before the gateway kills the worker (its callers get
    503, it is started again); 0: no limit."""

    sandbox_call_seconds: float | None = Field(default=None, ge=0)
    """Wall time one predict call to a sandboxed worker (or one chunk of a stream) may take
    before the gateway kills the worker (its callers get 503, it is started again): a model
    that sleeps holds only its own worker, and not for longer than this. Unset:
    GATEWAY_PREDICT_TIMEOUT_SECONDS (past it no caller waits for the answer); 0: no limit."""

    sandbox_load_seconds: float = Field(default=600, ge=0)
    """Wall time one load or unload in a sandboxed worker (a model's ``load_context``, its
    ``__del__``) may take before the gateway kills the worker: a model that sleeps there holds
    a load thread (or an eviction) no longer than this. 0: no limit."""

    sandbox_max_answer_mb: float | None = Field(default=None, gt=0)
    """Largest answer, in MiB, the gateway reads from an isolated worker (a predict's output, a
    stream's chunk). A worker announcing more (a model's code can write to its socket) is
    killed before any of it is read, its callers get 503, and it is started again. Unset:
    GATEWAY_MAX_DECODED_MB."""

    sandbox_log_line_bytes: int = Field(default=64 * 1024, ge=256)
    """Longest line of an isolated worker's output (a model's prints, a traceback) the gateway
    logs; the rest of a longer line is read and dropped, and the log line says how much."""

    sandbox_max_open_files: int = Field(default=1024, ge=0)
    """RLIMIT_NOFILE of a sandboxed worker; 0: the gateway's own."""

    sandbox_max_processes: int = Field(default=0, ge=0)
    """0: a sandboxed worker starts no process (seccomp denies fork, execve and clones that are
    not threads); N: RLIMIT_NPROC N in its own user namespace (threads count, root is exempt)."""

    # --- devices (docs/operations.md: PyTorch on a GPU) ---

    device: str = "auto"
    """Where PyTorch versions compute: ``auto`` (CUDA's first device where this host has one,
    else the CPU; ``MLFLOW_DEFAULT_PREDICTION_DEVICE``, when set, decides instead), ``cpu``,
    ``cuda`` or ``cuda:N``. A version's MLflow tag ``gateway.device`` overrides it. Only ``auto``
    falls back to the CPU (with the reason in the version's status, ``runtime.device_reason``):
    ``cuda``/``cuda:N`` on a host without that device stops the gateway at start, and a version
    tagged for a device it cannot have fails to load, saying why. Other flavors run on the CPU."""

    log_format: Literal["text", "json"] = "text"
    """``text``: one readable line per event. ``json``: one JSON object per line (time, level,
    logger, message, and the request id of the request it is about), for log pipelines."""

    tracing: Literal["off", "otlp"] = "off"
    """``otlp``: export OpenTelemetry traces (a span per request, its queue wait, the batch that
    ran it, codec, loads, warm-ups, sync passes, environment builds) to an OTLP receiver, as the
    standard ``OTEL_EXPORTER_OTLP_*``, ``OTEL_SERVICE_NAME`` and ``OTEL_TRACES_SAMPLER[_ARG]``
    variables say. ``off`` (the default) costs nothing: no span is made."""

    tracing_spans: Literal["all", "requests"] = "all"
    """Which spans a sampled request makes. ``all``: its request span, its ``queue`` wait and the
    ``batch`` that ran it (with ``decode``, ``predict`` and ``encode``). ``requests``: the request
    span alone, with those times as its attributes (``gateway.queue.seconds``,
    ``gateway.batch.size``, ``gateway.batch.predict.seconds``...): one span where there were six,
    for a tracing backend that stores or bills by the span. It measured no cheaper for the
    gateway itself (docs/observability.md: What it costs)."""

    mlflow_traces: bool = False
    """MLflow's own traces of the models served in this process (a ``ResponsesAgent`` traces every
    call, as does code under ``@mlflow.trace``), which MLflow logs per call to the tracking server
    it knows (here, the registry's): about 25 ms a request (bench/README.md, Streams), and a
    trace per served request in the registry's experiments. Off (the default): MLflow's tracing
    is disabled in the gateway's process; the gateway's own traces (``tracing``) do not depend on it."""

    records_sink: str | None = None
    """Where inference records (each sampled request's inputs and outputs, as CloudEvents) go:
    ``file:///dir`` (rotating JSON-lines files), ``http(s)://...`` (batched POSTs) or
    ``redis://host:port/db?stream=name`` (a Redis stream). Unset (the default): none are made."""

    records_sample: float = Field(default=1.0, ge=0, le=1)
    """The share of requests recorded when a sink is set; a version's MLflow tag
    ``gateway.records.sample`` overrides it for that version."""

    records_redact: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Comma-separated input column (or tensor) names whose values never reach a record; a body
    whose columns cannot be read is recorded without its inputs while any name is set."""

    records_queue_mb: float = Field(default=64, gt=0)
    """Most memory that records waiting for their sink may hold; past it (a slow or dead sink)
    records are dropped and counted (``gateway_records_dropped_total``), never waited for."""

    records_http_mode: Literal["structured", "binary"] = "structured"
    """CloudEvents HTTP mode of an http(s) sink: ``structured`` posts batches
    (``application/cloudevents-batch+json``); ``binary`` posts one event per request, its
    attributes in ``ce-*`` headers."""

    records_batch_size: int = Field(default=100, ge=1)
    """Most records one write to a sink carries."""

    records_file_max_mb: float = Field(default=100, gt=0)
    """Size at which a file sink's ``records.jsonl`` rotates."""

    records_file_backups: int = Field(default=10, ge=0)
    """Rotated files a file sink keeps (``records.jsonl.1`` ...); older ones are deleted."""

    records_redis_maxlen: int = Field(default=100_000, ge=1)
    """A Redis stream sink's approximate length bound (``XADD ... MAXLEN ~``)."""

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        return devices.parse(value)

    @field_validator("route_key_header")
    @classmethod
    def _header_name(cls, value: str) -> str:
        value = value.strip()
        if not value or not all(c.isascii() and (c.isalnum() or c in "-_") for c in value):
            raise ValueError("must be an HTTP header name (letters, digits, '-' or '_')")
        return value

    @field_validator("warm_aliases", mode="before")
    @classmethod
    def _split_aliases(cls, value: object) -> object:
        if isinstance(value, str):
            return [alias.strip() for alias in value.split(",") if alias.strip()]
        return value

    @field_validator("allowed_flavors", "allowed_artifact_uris", "records_redact", "env_pass", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("allowed_flavors")
    @classmethod
    def _some_flavor(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("must name at least one flavor (or '*' for any)")
        return value

    @field_validator("allowed_artifact_uris")
    @classmethod
    def _uri_prefixes(cls, value: list[str]) -> list[str]:
        for prefix in value:
            if ":" not in prefix and not prefix.startswith("/"):
                raise ValueError(f"'{prefix}' is not a URI prefix (s3://bucket/path, mlflow-artifacts:/, file:///dir)")
        return value

    @field_validator("env_pass")
    @classmethod
    def _passable(cls, value: list[str]) -> list[str]:
        refused = [name for name in value if refused_pass_name(name)]
        if refused:
            raise ValueError(
                f"{', '.join(refused)}: the gateway's own settings and credentials never reach a worker "
                f"(names starting {', '.join(REFUSED_PREFIXES)})"
            )
        return value

    @field_validator("replica_id")
    @classmethod
    def _replica_name(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        if len(value) > 256:
            raise ValueError("must be at most 256 characters")
        return value

    @field_validator("warm_start", mode="before")
    @classmethod
    def _lower_warm_start(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_level(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        # The URL may hold a password: the message never repeats it.
        value = value.strip()
        try:
            make_url(value).get_dialect()
        except NoSuchModuleError:  # an ArgumentError too: first
            scheme = value.partition(":")[0]
            raise ValueError(
                f"SQLAlchemy has no database dialect '{scheme}'; use sqlite or postgresql+psycopg"
            ) from None
        except ArgumentError:
            raise ValueError(
                "not a SQLAlchemy URL; e.g. sqlite:////var/lib/registry-gateway/state.db "
                "or postgresql+psycopg://user:password@host/db"
            ) from None
        return value

    @field_validator("default_model")
    @classmethod
    def _model_target(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        name, selector = default_target(value)
        if not name:
            raise ValueError("must be a model name, name@alias or name/version")
        if selector is not None:
            try:
                parse_selector(selector)
            except InvalidSelector as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("default_alias")
    @classmethod
    def _alias_not_empty(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("must not be empty")
        return value

    @field_validator("prediction_cache")
    @classmethod
    def _cache_kind(cls, value: str) -> str:
        value = value.strip()
        if value.lower() in ("off", "memory"):
            return value.lower()
        if value.startswith(("redis://", "rediss://", "unix://")):
            return value
        raise ValueError("must be 'off', 'memory' or a redis:// URL")

    @field_validator("rate_limit_redis")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis:// (or rediss://, unix://) URL")
        return value

    @field_validator("records_sink")
    @classmethod
    def _records_sink(cls, value: str | None) -> str | None:
        if value is None or not value.strip() or value.strip().lower() == "off":
            return None
        value = value.strip()
        if not value.startswith(("file://", "http://", "https://", "redis://", "rediss://")):
            raise ValueError("must be file:///dir, an http(s):// URL or redis://host:port/db?stream=name")
        return value

    @field_validator("log_format", "tracing", "tracing_spans", "records_http_mode", mode="before")
    @classmethod
    def _lower_choice(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("auth", "metrics_auth", mode="before")
    @classmethod
    def _lower_mode(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @property
    def default_target(self) -> tuple[str, str | None] | None:
        """GATEWAY_DEFAULT_MODEL as (name, selector or None), or None when unset."""
        return default_target(self.default_model) if self.default_model else None

    @property
    def log_level_number(self) -> int:
        """For :mod:`logging`, which has no name for uvicorn's ``trace`` (5) until uvicorn adds it."""
        return 5 if self.log_level == "trace" else logging.getLevelNamesMapping()[self.log_level.upper()]

    @property
    def replica(self) -> str:
        """GATEWAY_REPLICA_ID, else this host's name (``serve`` sets ``<hostname>:<port>``)."""
        return self.replica_id or socket.gethostname()

    @property
    def serves_models(self) -> bool:
        """Every role but ``sync`` serves predictions."""
        return self.role != "sync"

    @property
    def artifact_cache_max_bytes(self) -> int:
        return int(self.artifact_cache_max_mb * 1024 * 1024)

    @property
    def max_decoded_bytes(self) -> int:
        return int(self.max_decoded_mb * 1024 * 1024)

    @property
    def max_memory_bytes(self) -> int:
        return int(self.max_memory_mb * 1024 * 1024)

    @property
    def records_queue_bytes(self) -> int:
        return int(self.records_queue_mb * 1024 * 1024)


def env_name(field: str) -> str:
    return f"{PREFIX}{field.upper()}"


def load_settings() -> GatewaySettings:
    """The settings in the environment, or a :class:`SettingsError` naming each bad variable."""
    try:
        return GatewaySettings()
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "?"
            message = str(error["msg"]).removeprefix("Value error, ")
            lines.append(f"{env_name(field)}: {message}")
        raise SettingsError("\n".join(dict.fromkeys(lines))) from None


def doubts(settings: GatewaySettings, environ: Mapping[str, str] | None = None) -> list[str]:
    """Settings that load but are surely mistakes, one line each, naming the variable:
    ``GATEWAY_*`` variables that are no setting (a misspelling is ignored, silently, by the
    settings themselves) and warm aliases that no selector can name."""
    environ = os.environ if environ is None else environ
    known = {env_name(field) for field in GatewaySettings.model_fields}
    found = []
    for variable in sorted(environ):
        name = variable.upper()  # the settings read the environment case-insensitively
        if name.startswith(PREFIX) and name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            found.append(f"{variable} is not a setting and is ignored{hint}")
    for alias in settings.warm_aliases:
        try:
            kind = parse_selector(alias).kind
        except InvalidSelector:
            found.append(f"GATEWAY_WARM_ALIASES: '{alias}' is not an alias name (letters, digits, '_' or '-')")
            continue
        if kind == "version":
            found.append(
                f"GATEWAY_WARM_ALIASES: '{alias}' is all digits, which selects a version number, never an alias"
            )
        elif kind == "latest":
            found.append("GATEWAY_WARM_ALIASES: 'latest' selects the highest READY version, never an alias")
    return found
