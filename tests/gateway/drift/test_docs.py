"""docs/user-guide.md's "Drift" states the live side's settings' defaults, the version tags the
code reads, and the metrics a gateway exports, as the code has them."""

from __future__ import annotations

import re
from pathlib import Path

from gateway.metrics import GatewayMetrics
from gateway.settings import GatewaySettings
from registry_sync.drift.verdict import _TAGS, TAG_PREFIX

GUIDE = (Path(__file__).resolve().parents[3] / "docs" / "user-guide.md").read_text()
SECTION = " ".join(GUIDE.split("\n## Drift\n", 1)[1].split("\n## ", 1)[0].split())  # one space between words

# What the guide writes after each setting's name, and the default that text stands for.
SHOWN = {
    "drift_sample": ("default 0.1", 0.1),
    "drift_baseline_rows": ("1,000", 1000),
    "drift_window_seconds": ("an hour", 3600.0),
    "drift_window_rows": ("20,000", 20_000),
    "drift_interval_seconds": ("10", 10.0),
    "drift_min_rows": ("200", 200),
    "drift_psi_threshold": ("0.2", 0.2),
    "drift_p_value": ("0.001", 0.001),
    "drift_outlier_threshold": ("0.05", 0.05),
}


def test_the_guide_states_each_live_drift_settings_default() -> None:
    fields = GatewaySettings.model_fields
    for name, (text, value) in SHOWN.items():
        assert fields[name].default == value, name
        assert f"`GATEWAY_{name.upper()}` ({text})" in SECTION, name
    named = set(re.findall(r"`GATEWAY_(DRIFT_[A-Z_]+)`", SECTION))
    assert named == {name.upper() for name in SHOWN} | {"DRIFT_BUFFER_MB"}


def test_the_guide_names_the_tags_and_the_metrics() -> None:
    for tag in _TAGS:
        assert f"`{TAG_PREFIX}{tag}`" in SECTION, tag
    exported = {name for name in GatewayMetrics().registry._names_to_collectors}
    for metric in re.findall(r"`(gateway_(?:feature|drift)_[a-z_]+)", SECTION):
        assert metric in exported, metric
