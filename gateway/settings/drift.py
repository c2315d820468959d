"""Drift against the data a version was trained on (docs/user-guide.md: Drift)."""

from __future__ import annotations

from pydantic import Field

from gateway.settings.section import SettingsSection


class DriftSettings(SettingsSection):
    """Drift against the data a version was trained on (docs/user-guide.md: Drift): the
    reference (the sync leader's), the live windows, and the thresholds (version tags
    ``gateway.drift.psi_threshold``, ``gateway.drift.p_value``, ``gateway.drift.outlier_threshold``,
    ``gateway.drift.min_rows`` override them)."""

    # --- the reference (registry_sync/drift/builder.py) ---------------------------------

    drift_reference_interval_seconds: float = Field(default=60.0, ge=0)
    """How often the sync leader looks for served versions (an alias's, a traffic split's arms,
    each model's latest, those loaded in its process) without a drift reference, and computes
    theirs: once per version identity, from the first
    source found (the run's ``training`` dataset, the ``gateway.drift.reference`` tag, the
    artifact ``drift/reference.parquet`` or ``drift/reference.csv``). 0: no references are
    computed."""

    drift_reference_rows: int = Field(default=100_000, ge=100)
    """The most rows of a reference file profiled: a larger file is sampled to this many rows
    (uniformly, without replacement, with a fixed seed, so the same file gives the same
    profile)."""

    drift_reference_max_mb: float = Field(default=1024.0, gt=0)
    """The largest reference file read, in MiB (its size on disk or in S3): a larger one fails
    the reference with that reason rather than fill the leader's memory."""

    drift_output_rows: int = Field(default=10_000, ge=0)
    """How many of the reference's sampled rows the version predicts on, for the profile of its
    outputs (on the sync leader, through the version's own runtime). 0: no output profile."""

    drift_bins: int = Field(default=10, ge=2, le=100)
    """Quantile bins per numeric column of a reference."""

    drift_max_categories: int = Field(default=50, ge=1, le=1000)
    """The most categories kept per categorical column of a reference; the rest are counted
    together as one "other" share."""

    drift_retry_seconds: float = Field(default=3600.0, ge=0)
    """How long a failed reference (an unreadable file, columns that do not match the
    signature) waits before the sync leader tries it again; a change of the version's
    ``gateway.drift.*`` tags retries it at the next look."""

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
