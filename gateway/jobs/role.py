"""``serve --role jobs``: a process that loads models to run jobs' chunks and nothing else.

On a host it shares with serving processes it runs at a lower OS priority
(``GATEWAY_JOBS_NICE``): the kernel gives the serving processes the cores first, so a request
does not wait behind a chunk's read, predict or write, and the chunk has its own interpreter
(no GIL shared with an event loop answering requests). It predicts a chunk in one call. While
one reports to the state database, serving processes leave the chunks to it
(``GATEWAY_JOBS_ON_SERVING=auto``).
"""

from __future__ import annotations

import os

from gateway.settings import GatewaySettings

JOBS = "jobs"


def misuse(settings: GatewaySettings) -> str | None:
    """Why these settings make no sense for a ``--role jobs`` process, or None."""
    if settings.role != JOBS:
        return None
    if not settings.jobs_enabled:
        return "--role jobs runs jobs' chunks, and GATEWAY_JOBS_ENABLED=false turns them off"
    if settings.jobs_max_chunks_per_process == 0:
        return "--role jobs runs jobs' chunks, and GATEWAY_JOBS_MAX_CHUNKS_PER_PROCESS=0 lets it run none"
    if settings.grpc_port is not None:
        return "--role jobs takes no requests: serve gRPC (GATEWAY_GRPC_PORT, --grpc-port) from a serving process"
    return None


def lower_priority(settings: GatewaySettings) -> int:
    """Lower this process's priority by GATEWAY_JOBS_NICE in a ``--role jobs`` process (its
    uvicorn workers inherit it); the niceness it runs at."""
    if settings.role != JOBS or settings.jobs_nice == 0:
        return os.nice(0)
    return os.nice(settings.jobs_nice)
