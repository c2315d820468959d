"""What the HTTP server logs and whose forwarded headers it believes."""

from __future__ import annotations

import logging

from pydantic import field_validator

from gateway.settings.section import LogLevel, SettingsSection


class HttpServerSettings(SettingsSection):
    """What the HTTP server logs and whose forwarded headers it believes."""

    log_level: LogLevel = "info"
    """Log level of the gateway and uvicorn: critical, error, warning, info, debug or trace."""

    access_log: bool = True
    """A line per request in the log: the gateway's own access log (uvicorn's is always off),
    naming the model, version and arm that answered. Off saves formatting and writing
    that line, about a third of what a small prediction costs on one core
    (docs/performance.md); the request metrics count every request either way."""

    forwarded_allow_ips: str = "127.0.0.1,::1"
    """Comma-separated addresses (or networks, e.g. ``10.0.0.0/8``; ``*`` for any) of proxies
    whose ``X-Forwarded-For`` and ``X-Forwarded-Proto`` the gateway believes: a request from one
    of them is logged with the client the header names (its port unknown); from anyone else,
    with the address it came from, whatever it sends. The default trusts a proxy on this host
    (deploy/local_fleet.py); behind HAProxy, Envoy or nginx elsewhere, name them (compose: ``*``,
    where only the proxy reaches the gateways). uvicorn's ``--forwarded-allow-ips``."""

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_level(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @property
    def log_level_number(self) -> int:
        """For :mod:`logging`, which has no name for uvicorn's ``trace`` (5) until uvicorn adds it."""
        return 5 if self.log_level == "trace" else logging.getLevelNamesMapping()[self.log_level.upper()]
