"""Which versions are held in memory and how requests reach them: the model cache, default
routes, bodies, threads and streams."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from gateway.errors import InvalidSelector
from gateway.settings.section import SettingsSection, default_cache_dir, default_target
from gateway.wire.selectors import parse_selector


class ServingSettings(SettingsSection):
    """Which versions are held in memory and how requests reach them: the model cache, default
    routes, bodies, threads and streams."""

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

    artifact_cache_dir: Path = Field(default_factory=default_cache_dir)
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

    @property
    def default_target(self) -> tuple[str, str | None] | None:
        """GATEWAY_DEFAULT_MODEL as (name, selector or None), or None when unset."""
        return default_target(self.default_model) if self.default_model else None

    @property
    def artifact_cache_max_bytes(self) -> int:
        return int(self.artifact_cache_max_mb * 1024 * 1024)

    @property
    def max_memory_bytes(self) -> int:
        return int(self.max_memory_mb * 1024 * 1024)
