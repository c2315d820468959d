"""Drift: live traffic against each version's reference (docs/user-guide.md: Drift)."""

from __future__ import annotations

from pydantic import Field

from gateway.settings.section import SettingsSection


class DriftSettings(SettingsSection):
    """Drift per version and feature: the reference (the sync leader's), the live windows, the
    thresholds (version tags ``gateway.drift.psi_threshold``, ``gateway.drift.p_value``,
    ``gateway.drift.outlier_threshold``, ``gateway.drift.min_rows`` override them)."""

    # --- the live side: sampling, windows, figures (gateway/drift/) ---

    drift_sample: float = Field(default=0.1, ge=0, le=1)
    """Share of answered predict requests (MLflow scoring and Open Inference Protocol REST) whose
    body and answer are binned for drift, off the request path; on the path, a draw and an
    append. 0: no drift figures from this process."""

    drift_buffer_mb: float = Field(default=8.0, gt=0)
    """Sampled requests waiting to be binned (each second, in a thread); past it they are
    dropped and counted (``gateway_drift_dropped_total{reason="buffer_full"}``)."""

    drift_window_seconds: float = Field(default=3600.0, gt=0)
    """A version's drift window: its rows sampled within this many seconds (kept as 12 slices,
    so the window moves a twelfth of this at a time)."""

    drift_window_rows: int = Field(default=20_000, ge=1)
    """... and at most about this many of the latest of them per process (the oldest slices leave
    first); the fleet's window is the sum over processes."""

    drift_interval_seconds: float = Field(default=10.0, gt=0)
    """How often each process publishes its windows to the state database and reads the
    fleet's, computes the figures (the gauges, ``/drift``, ``/status``) and, on the sync
    leader, writes the drift events: never per request."""

    drift_min_rows: int = Field(default=200, ge=1)
    """Rows the fleet's window must hold before a feature can be flagged (tag ``gateway.drift.min_rows``)."""

    drift_psi_threshold: float = Field(default=0.2, ge=0)
    """A feature is flagged when its PSI is at least this and its test's p-value below
    ``GATEWAY_DRIFT_P_VALUE`` (tag ``gateway.drift.psi_threshold``). PSI under 0.1 is usually
    read as stable, 0.1 to 0.25 as a moderate shift, over 0.25 as a large one."""

    drift_p_value: float = Field(default=0.001, gt=0, le=1)
    """... the p-value (Kolmogorov-Smirnov for numbers, chi-square for categories) below which
    the shift is not the noise of a small window (tag ``gateway.drift.p_value``)."""

    drift_outlier_threshold: float = Field(default=0.05, ge=0, le=1)
    """A feature is also flagged when more than this share of its rows are outliers (outside the
    reference's range, unseen categories, not of the column's type), and a version when more
    than this share of its requests had other columns than its reference (tag
    ``gateway.drift.outlier_threshold``)."""

    drift_baseline_rows: int = Field(default=1000, ge=0)
    """A version with no reference source (no training dataset, tag or artifact) is given a
    baseline profiled from the first this many rows it serves, marked as weaker wherever it is
    shown. 0: no baseline."""
