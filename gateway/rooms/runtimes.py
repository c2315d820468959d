"""The runtimes room: where this process's versions run (here, or in worker processes on
environments uv builds), as the settings say.

Building it checks the host against what the settings demand: a CUDA device GATEWAY_DEVICE
names that the host lacks, or GATEWAY_SANDBOX=required where a layer is missing, stops the
start here. The CLI builds the same environment store and sandbox policy for its own commands
(``registry-gateway envs``, and ``serve``'s checks before any worker starts). Stopping the room
stops every worker process.
"""

from __future__ import annotations

from dataclasses import dataclass

import anyio.to_thread

from gateway.observability.tracing import Tracing
from gateway.runtimes.environments import BuildOptions, EnvironmentStore
from gateway.runtimes.placement import EnvironmentPolicy, Placer
from gateway.runtimes.sandbox import SandboxPolicy, check_host
from gateway.runtimes.sandbox import summary as sandbox_summary
from gateway.runtimes.worker import devices
from gateway.settings import GatewaySettings


@dataclass(eq=False)
class RuntimesRoom:
    placer: Placer

    @classmethod
    def build(cls, settings: GatewaySettings, tracing: Tracing) -> RuntimesRoom:
        return cls(placer=placer_for(settings, tracing))

    def sandbox_summary(self) -> str | None:
        """What confines isolated workers on this host, in a line (gateway.runtimes.sandbox)."""
        isolated = self.placer.isolated
        return sandbox_summary(isolated.sandbox, isolated.sandbox_missing()) if isolated is not None else None

    def worker_memory(self) -> tuple[int, int]:
        """Isolated worker processes running, and their own memory (gateway.runtimes.isolated)."""
        isolated = self.placer.isolated
        return isolated.baseline_bytes() if isolated is not None else (0, 0)

    async def stop(self) -> None:
        await anyio.to_thread.run_sync(self.placer.close)  # stops every worker process


def environment_store(settings: GatewaySettings, tracing: Tracing | None = None) -> EnvironmentStore:
    """The environments of GATEWAY_ENV_DIR, built as the settings say."""
    return EnvironmentStore(
        settings.env_dir,
        BuildOptions(
            allow_sdist=settings.env_allow_sdist,
            allow_direct_references=settings.env_allow_direct_references,
            require_python=settings.env_require_python,
            timeout_seconds=settings.env_build_timeout_seconds,
            http_timeout_seconds=settings.env_http_timeout_seconds,
            max_concurrent=settings.env_max_concurrent_builds,
            max_bytes=int(settings.env_max_disk_mb * 2**20),
            compile_bytecode=settings.env_compile_bytecode,
        ),
        span=tracing.span if tracing is not None else None,
    )


def placer_for(settings: GatewaySettings, tracing: Tracing | None = None) -> Placer:
    """Where this process's versions run: here, or in workers on environments built with uv.
    A CUDA device GATEWAY_DEVICE names that this host lacks stops the process here
    (``devices.DeviceUnavailable``): only ``auto`` falls back to the CPU."""
    if settings.role != "sync":
        devices.require(settings.device, f"GATEWAY_DEVICE={settings.device}")
    policy = EnvironmentPolicy(manager=settings.env_manager, isolate=settings.env_isolate, match=settings.env_match)
    return Placer.build(
        policy,
        environment_store(settings, tracing),
        max_workers=settings.env_max_workers,
        processes=settings.env_processes,
        sharing=settings.env_worker_sharing,
        device=settings.device,
        sandbox=sandbox_policy(settings),
    )


def sandbox_policy(settings: GatewaySettings) -> SandboxPolicy:
    """Isolated workers' sandbox, as the settings say; GATEWAY_SANDBOX=required on a host that
    lacks a layer stops the start here (SandboxUnavailable)."""
    memory_mb = settings.max_memory_mb if settings.sandbox_memory_mb is None else settings.sandbox_memory_mb
    policy = SandboxPolicy(
        mode=settings.sandbox,
        root=settings.artifact_cache_dir / "sandboxes",  # hard links to blobs/: one file system
        env_pass=tuple(settings.env_pass),
        allow_network=settings.sandbox_allow_network,
        memory_bytes=int(memory_mb * 2**20),
        disk_bytes=int(settings.sandbox_disk_mb * 2**20),
        cpu_seconds=settings.sandbox_cpu_seconds,
        call_seconds=settings.predict_timeout_seconds
        if settings.sandbox_call_seconds is None
        else settings.sandbox_call_seconds,
        load_seconds=settings.sandbox_load_seconds,
        max_answer_bytes=int((settings.sandbox_max_answer_mb or settings.max_decoded_mb) * 2**20),
        max_line_bytes=settings.sandbox_log_line_bytes,
        max_open_files=settings.sandbox_max_open_files,
        max_processes=settings.sandbox_max_processes,
    )
    if settings.env_manager == "uv" and settings.role != "sync":  # a sync process loads no model
        check_host(policy)
    return policy
