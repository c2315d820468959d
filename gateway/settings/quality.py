"""Ground truth and live quality: which answers may get a label, how long they wait for one,
the window of labels quality is computed over, and the guard's quality rule."""

from __future__ import annotations

from pydantic import Field

from gateway.settings.section import SettingsSection


class QualitySettings(SettingsSection):
    """Ground truth (``POST /feedback``), live quality per version and arm, and the guard's
    quality rule (version tags ``gateway.guard.min_labels``, ``gateway.guard.max_quality_drop``)."""

    feedback_sample: float = Field(default=0.0, ge=0, le=1)
    """Share of answered predict requests whose prediction is kept so that a label can be joined
    to it later (``POST /feedback``); a label for a request not kept answers ``unknown``. 0 (the
    default): no answer is kept. Off unless asked for: each kept answer is a row written to the
    state database, and keeping every answer cost a one-core gateway at c32 about 30% of its
    throughput (``bench/paired.py --env GATEWAY_FEEDBACK_SAMPLE=1``, docs/user-guide.md):
    keep the share the labels you will send need."""

    feedback_retention_hours: float = Field(default=168.0, gt=0)
    """How long a kept prediction waits for its label; a label sent later answers ``expired``
    (for as long again; after that, ``unknown``). Labels themselves are kept as long, from when
    they were received."""

    feedback_buffer_mb: float = Field(default=16.0, gt=0)
    """Predictions waiting in memory to be written to the state database (in batches, off the
    request path); past it they are dropped and counted (``gateway_feedback_dropped_total``)."""

    feedback_max_items: int = Field(default=1000, ge=1)
    """Labels one ``POST /feedback`` may carry; more is 413."""

    quality_window: int = Field(default=1000, ge=1)
    """Live quality of a version and arm is computed over its latest this many labels."""

    quality_interval_seconds: float = Field(default=10.0, gt=0)
    """How often each process reads the labels' windows from the state database, computes
    quality (the gauges, ``/status``) and lets the guard judge canaries on it: never per request."""

    guard_min_labels: int = Field(default=200, ge=2)
    """Labels the canary and its default version must both have in the window before the guard
    judges the canary's quality (a version tag ``gateway.guard.min_labels`` overrides it)."""

    guard_max_quality_drop: float = Field(default=0.05, ge=0)
    """The guard rolls a canary back when its accuracy is below the default version's by more
    than this (a classifier), or its mean absolute error above it by more than this fraction of
    the default's (a regressor), and the difference is significant (a version tag
    ``gateway.guard.max_quality_drop`` overrides it)."""

    guard_quality_confidence: float = Field(default=0.99, gt=0.5, lt=1)
    """Confidence at which the drop must be significant: a one-sided two-proportion z-test on
    accuracy, a one-sided Welch t-test on absolute errors."""
