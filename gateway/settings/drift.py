"""Drift against the data a version was trained on (docs/user-guide.md: Drift references)."""

from __future__ import annotations

from pydantic import Field

from gateway.settings.section import SettingsSection


class DriftSettings(SettingsSection):
    """Drift against the data a version was trained on (docs/user-guide.md: Drift references)."""

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
