"""docs/settings.md is generated from the settings class: a setting added, renamed or
re-documented without `make docs` fails here, naming the command."""

from __future__ import annotations

from pathlib import Path

from gateway.settings import GatewaySettings
from gateway.settings_reference import render

REFERENCE = Path(__file__).resolve().parents[1] / "docs" / "settings.md"


def test_the_settings_reference_is_current() -> None:
    assert REFERENCE.read_text() == render(), "docs/settings.md is stale: run `make docs`"


def test_every_setting_has_a_row_with_words() -> None:
    rows = {line.split("|")[1].strip(" `"): line for line in render().splitlines() if line.startswith("| `GATEWAY_")}
    assert set(rows) == {f"GATEWAY_{name.upper()}" for name in GatewaySettings.model_fields}
    for name, row in rows.items():
        assert len(row.split("|")[3].strip()) > 10, f"{name} has no description (a docstring under its field)"
