"""Production figures written back to MLflow (docs/observability.md: Production figures in MLflow)."""

from __future__ import annotations

from pydantic import Field

from gateway.settings.section import SettingsSection


class WritebackSettings(SettingsSection):
    """Production figures written back to MLflow (docs/observability.md: Production figures in MLflow)."""

    mlflow_writeback_seconds: float = Field(default=0.0, ge=0)
    """How often the sync leader logs each served version's production figures to MLflow:
    ``production_requests``, ``production_error_rate`` and ``production_p99_ms`` (summed over the
    fleet, over the interval since the last write), plus live quality where labels arrive, as
    metrics on the version's LoggedModel (a version without one, logged by MLflow 2.x: on a run
    of ``GATEWAY_MLFLOW_WRITEBACK_EXPERIMENT``), and the latest of them with their time in the
    version tag ``gateway.production``. 0 (the default): nothing is written to MLflow."""

    mlflow_writeback_experiment: str = Field(default="registry-gateway production", min_length=1)
    """The MLflow experiment that holds one run per written-back version (``<model> v<version>``,
    created when first needed): the run each figure is logged through, and where a version
    without a LoggedModel keeps its figures."""
