"""Who may call what, and how much: API keys and the rate, concurrency and load limits."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from gateway.settings.section import SettingsSection


class AccessSettings(SettingsSection):
    """Who may call what, and how much: API keys and the rate, concurrency and load limits."""

    auth: Literal["off", "keys", "oidc", "keys+oidc"] = "off"
    """``keys``: every request needs an API key (``registry-gateway keys create``) with the scope
    its route requires, sent as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``; health
    and metrics stay open (``GATEWAY_METRICS_AUTH``), webhooks keep their own signature.
    ``oidc``: the same, with a JWT from the identity provider (``GATEWAY_OIDC_*``) as
    ``Authorization: Bearer <token>`` instead of a key; ``keys+oidc``: either.
    ``off``: anyone who reaches the port may call everything (``serve`` then binds only a
    loopback address unless ``--insecure``)."""

    metrics_auth: Literal["off", "on"] = "off"
    """``on``: ``/health/*`` and ``/metrics`` need a key with the ``read`` scope too (with
    ``GATEWAY_AUTH`` on). Off by default: probes and scrapers must not need keys."""

    model_rate: float | None = Field(default=None, gt=0)
    """Predict requests a second per model, for every model (a token bucket with a burst of as
    many, at least 1); past it 429 with ``Retry-After``. Unset: no limit."""

    model_concurrency: int | None = Field(default=None, ge=1)
    """Predict requests in flight at once per model, for every model; past it 429. Unset: no limit."""

    rate_limit_redis: str | None = None
    """A ``redis://`` URL: the rate and concurrency limits (of keys and of models) are shared by
    every process on the same state database through it. Unset: each process counts alone.
    Redis unreachable: each process counts alone until it answers again (and
    ``gateway_limits_redis_errors`` counts it); never an error for the caller."""

    max_loads_per_minute: int | None = Field(default=None, ge=1)
    """Most cold loads (versions loaded for a request because they were not in memory) this
    process starts in a minute; past it 503 with ``Retry-After``, so a loop over cold versions
    cannot thrash the model cache. Warm-alias swaps do not count. Unset: no limit."""

    @field_validator("rate_limit_redis")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis:// (or rediss://, unix://) URL")
        return value

    @field_validator("auth", "metrics_auth", mode="before")
    @classmethod
    def _lower_mode(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value
