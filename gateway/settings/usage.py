"""Usage per caller and model, and the quotas checked against it (``gateway.admission.usage``)."""

from __future__ import annotations

from pydantic import Field

from gateway.settings.section import SettingsSection


class UsageSettings(SettingsSection):
    """Usage per caller and model, and the quotas checked against it."""

    usage_flush_seconds: float = Field(default=10.0, ge=0, le=3600)
    """How often each serving process adds the usage it counted (requests, rows, errors,
    predict seconds and tokens per caller, model, version and UTC day) to the state
    database's rows, and reads the quotas and the fleet's sums back. Without Redis
    (``GATEWAY_RATE_LIMIT_REDIS``) this is also how late a replica sees the others' use: a
    quota can be overshot by what the other replicas serve in one interval. 0: usage is not
    counted and quotas are not checked."""

    usage_metrics_by_caller: bool = False
    """Label the ``gateway_usage_*`` Prometheus counters by caller as well as by model and
    version: one series per caller, model and version (a caller per token subject can be
    many). Off: ``GET /usage`` and ``registry-gateway usage`` have it per caller."""
