"""docs/user-guide.md's "Drift references" states the settings' defaults and the sources as the code has them."""

from __future__ import annotations

import re
from pathlib import Path

from gateway.settings import GatewaySettings
from registry_sync.drift.sources import ARTIFACT_PATHS, TAG, TRAINING

GUIDE = (Path(__file__).resolve().parents[3] / "docs" / "user-guide.md").read_text()
SECTION = GUIDE.split("## Drift references", 1)[1].split("\n## ", 1)[0]

# What the guide writes after each setting's name, and the default that text stands for.
SHOWN = {
    "drift_reference_interval_seconds": ("60 s", 60.0),
    "drift_reference_rows": ("100,000", 100_000),
    "drift_reference_max_mb": ("1 GiB", 1024.0),
    "drift_output_rows": ("10,000", 10_000),
    "drift_bins": ("10", 10),
    "drift_max_categories": ("50", 50),
    "drift_retry_seconds": ("an hour", 3600.0),
}


def test_the_guide_states_each_drift_reference_settings_default() -> None:
    fields = GatewaySettings.model_fields
    named = set(re.findall(r"`GATEWAY_(DRIFT_[A-Z_]+)`", SECTION))
    assert {name.upper() for name in SHOWN} == named
    for name, (text, value) in SHOWN.items():
        assert fields[name].default == value, name
        assert f"`GATEWAY_{name.upper()}` ({text})" in SECTION, name


def test_the_guide_names_the_sources_the_code_reads() -> None:
    assert f"`{TAG}`" in SECTION and f'context="{TRAINING}"' in SECTION
    for path in ARTIFACT_PATHS:
        assert f"`{path}`" in SECTION, path
