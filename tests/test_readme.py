"""The README documents what the code has."""

from __future__ import annotations

from pathlib import Path

from gateway.settings import GatewaySettings

README = (Path(__file__).parent.parent / "README.md").read_text()


def test_every_setting_is_documented() -> None:
    for field in GatewaySettings.model_fields:
        assert f"`GATEWAY_{field.upper()}`" in README, f"GATEWAY_{field.upper()} is missing from the README"


def test_the_two_commands_are_there() -> None:
    assert "make demo" in README and "make test" in README
