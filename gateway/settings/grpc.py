"""The Open Inference Protocol over gRPC, beside HTTP."""

from __future__ import annotations

from pydantic import Field

from gateway.settings.section import SettingsSection


class GrpcSettings(SettingsSection):
    """The Open Inference Protocol over gRPC, beside HTTP."""

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
