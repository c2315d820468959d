"""Canaries and shadows (version tags gateway.traffic.weight and gateway.traffic.shadow)."""

from __future__ import annotations

from pydantic import Field, field_validator

from gateway.settings.section import SettingsSection


class TrafficSettings(SettingsSection):
    """Canaries and shadows (version tags gateway.traffic.weight and gateway.traffic.shadow)."""

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

    @field_validator("route_key_header")
    @classmethod
    def _header_name(cls, value: str) -> str:
        value = value.strip()
        if not value or not all(c.isascii() and (c.isalnum() or c in "-_") for c in value):
            raise ValueError("must be an HTTP header name (letters, digits, '-' or '_')")
        return value
