"""The sandbox of isolated workers (docs/security.md: Untrusted models)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from gateway.runtimes.sandbox import REFUSED_PREFIXES, refused_pass_name
from gateway.settings.section import SettingsSection, comma_list


class SandboxSettings(SettingsSection):
    """The sandbox of isolated workers (docs/security.md: Untrusted models)."""

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

    @field_validator("env_pass", mode="before")
    @classmethod
    def _split_env_pass(cls, value: object) -> object:
        return comma_list(value)
