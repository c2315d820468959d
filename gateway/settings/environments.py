"""Per-model Python environments and the workers that serve them."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from gateway.settings.section import SettingsSection, default_cache_dir


class EnvironmentSettings(SettingsSection):
    """Per-model Python environments and the workers that serve them."""

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

    env_dir: Path = Field(default_factory=lambda: default_cache_dir() / "envs")
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

    env_compile_bytecode: bool = False
    """Compile the bytecode of an environment's packages once, as it is built (by its base
    interpreter, running none of the environment's code). Its workers may not write to it, so
    without this each worker start compiles from source all it imports (MLflow, pandas...):
    about three times the CPU of a start from bytecode. The build then takes tens of seconds of
    CPU more: worth it where workers start often (restarts, GATEWAY_ENV_PROCESSES,
    GATEWAY_ENV_WORKER_IDLE_SECONDS)."""

    env_build_timeout_seconds: float = Field(default=600, gt=0)
    """Longest one uv step of an environment build may take before the version is refused."""

    env_http_timeout_seconds: float = Field(default=30, gt=0)
    """uv's timeout for the package index (UV_HTTP_TIMEOUT): an unreachable index fails the build."""

    env_max_concurrent_builds: int = Field(default=2, ge=1)
    """Environment builds running at once in this process (each in a loader thread)."""
