"""Gateway configuration, read from the environment (prefix ``GATEWAY_``).

MLflow's own variables (``MLFLOW_TRACKING_URI``, ``MLFLOW_REGISTRY_URI``,
``MLFLOW_S3_ENDPOINT_URL``, ``AWS_*``) keep their own names and are read by MLflow.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "registry-gateway"


def _default_database_url() -> str:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(Path.home(), ".local", "share")
    return f"sqlite:///{Path(base) / 'registry-gateway' / 'state.db'}"


class GatewaySettings(BaseSettings):
    """Every knob of one gateway process."""

    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore", use_attribute_docstrings=True)

    max_loaded_models: int = Field(default=16, ge=1)
    """Most model versions held in memory at once; the least recently used goes first."""

    max_memory_mb: float = Field(default=2048, gt=0)
    """Memory budget for loaded models, in MiB, using each model's measured size."""

    default_alias: str = "champion"
    """Alias served by ``/models/{name}/predict`` when no ``X-Model-Version`` header is sent.
    A model without this alias is served at ``latest``."""

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

    inference_threads: int = Field(default=4, ge=1)
    """Threads that run predict calls (inference never runs on the event loop)."""

    log_level: str = "info"
    """Log level of the gateway and uvicorn."""

    database_url: str = Field(default_factory=_default_database_url)
    """The state database (versions seen, pinned digests, routes, events): a SQLAlchemy URL.
    sqlite (the default, upgraded automatically) for one host; PostgreSQL for many replicas."""

    poll_interval_seconds: float = Field(default=30.0, gt=0)
    """How often the registry is polled for new versions, alias moves, tag changes and deletions."""

    warm_aliases: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["champion"])
    """Comma-separated aliases swapped blue-green: when one moves, the new version is fetched,
    verified, loaded and warmed before it takes traffic. Other aliases move at once."""

    verify_interval_seconds: float = Field(default=300.0, gt=0)
    """How often versions that aliases point at are re-hashed from the artifact store, to catch
    bytes changed in place."""

    follow_interval_seconds: float = Field(default=1.0, gt=0)
    """How often this process checks the state database for changes made by the sync."""

    webhook_secret: SecretStr | None = None
    """Secret of the MLflow webhook (``MlflowClient.create_webhook(secret=...)``); without it,
    ``POST /webhooks/mlflow`` is off."""

    admin_token: SecretStr | None = None
    """Bearer token for ``POST /admin/sync``; without it the endpoint is off."""

    # --- scale-out (roles, leader lease) ---
    role: Literal["all", "gateway", "sync"] = "all"
    """What this process does (``serve --role`` sets it): ``all`` serves models and competes
    for the sync lease; ``gateway`` serves models and never polls MLflow; ``sync`` only runs
    the sync under the lease (plus health, metrics, webhooks and ``/admin/sync``)."""

    lease_seconds: float | None = Field(default=None, gt=0)
    """How long the sync leader's lease lasts unrenewed; the leader renews it every third of
    this. Unset: the poll interval, between 1 and 30 s. A dead leader is replaced within this
    plus a third of it, and the new leader polls at once."""

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

    max_queue: int = Field(default=256, ge=1)
    """Requests one version may hold waiting for a predict; past it the answer is 503 with
    ``Retry-After``."""

    prediction_cache: str = "off"
    """Cache answers of deterministic versions by version sha256 and request body: ``off``,
    ``memory`` (this process) or a ``redis://`` URL (shared by replicas). sklearn and pytorch
    versions count as deterministic unless tagged ``gateway.deterministic=false``; other
    flavors only when tagged ``gateway.deterministic=true``."""

    prediction_cache_max_mb: float = Field(default=64, gt=0)
    """Memory budget of ``GATEWAY_PREDICTION_CACHE=memory``, in MiB (least recently used go first)."""

    prediction_cache_ttl_seconds: int = Field(default=3600, ge=1)
    """How long a cached answer lives in Redis."""

    @field_validator("warm_aliases", mode="before")
    @classmethod
    def _split_aliases(cls, value: object) -> object:
        if isinstance(value, str):
            return [alias.strip() for alias in value.split(",") if alias.strip()]
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

    @property
    def serves_models(self) -> bool:
        """Every role but ``sync`` serves predictions."""
        return self.role != "sync"

    @property
    def artifact_cache_max_bytes(self) -> int:
        return int(self.artifact_cache_max_mb * 1024 * 1024)

    @property
    def max_memory_bytes(self) -> int:
        return int(self.max_memory_mb * 1024 * 1024)
