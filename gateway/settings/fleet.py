"""Roles, the sync lease and a fleet of replicas: names, warm starts, heartbeats, drains."""

from __future__ import annotations

import socket
from typing import Literal

from pydantic import Field, field_validator

from gateway.settings.section import SettingsSection


class FleetSettings(SettingsSection):
    """Roles, the sync lease and a fleet of replicas: names, warm starts, heartbeats, drains."""

    role: Literal["all", "gateway", "sync", "jobs"] = "all"
    """What this process does (``serve --role`` sets it): ``all`` serves models and competes
    for the sync lease; ``gateway`` serves models and never polls MLflow; ``sync`` only runs
    the sync under the lease (plus health, metrics, webhooks and ``/admin/sync``); ``jobs``
    loads models to run jobs' chunks, at a lower OS priority (``GATEWAY_JOBS_NICE``), never
    polls MLflow and is not sent requests (keep it out of the balancer)."""

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

    @property
    def replica(self) -> str:
        """GATEWAY_REPLICA_ID, else this host's name (``serve`` sets ``<hostname>:<port>``)."""
        return self.replica_id or socket.gethostname()

    @property
    def serves_models(self) -> bool:
        """Every role but ``sync`` loads models and predicts (a ``jobs`` process for chunks only)."""
        return self.role != "sync"
