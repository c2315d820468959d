"""Batching, the inline fast path, queues and the prediction cache."""

from __future__ import annotations

from pydantic import Field, field_validator

from gateway.settings.section import SettingsSection


class PerformanceSettings(SettingsSection):
    """Batching, the inline fast path, queues and the prediction cache."""

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

    blas_threads: int = Field(default=1, ge=0)
    """Threads a BLAS call (OpenBLAS, MKL, BLIS: numpy's and scipy's linear algebra, so
    scikit-learn's) may use in a ``serve`` process and the workers it starts. 1 (the default):
    parallelism comes from concurrent requests, jobs' chunks and processes, and no pool of
    threads spins beside the event loop after each call (gateway/runtimes/blas.py says what it
    cost). More: a single large call (a big batch, a wide matrix) is faster on an otherwise idle
    host. 0: leave the libraries and OPENBLAS_NUM_THREADS, MKL_NUM_THREADS and BLIS_NUM_THREADS
    as the environment sets them. PyTorch's intra-op threads are its own
    (``torch.set_num_threads``), not limited here."""

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

    @field_validator("prediction_cache")
    @classmethod
    def _cache_kind(cls, value: str) -> str:
        value = value.strip()
        if value.lower() in ("off", "memory"):
            return value.lower()
        if value.startswith(("redis://", "rediss://", "unix://")):
            return value
        raise ValueError("must be 'off', 'memory' or a redis:// URL")
