"""The README documents what the code has."""

from __future__ import annotations

import re
from pathlib import Path

from gateway.settings import GatewaySettings

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()


def test_every_setting_is_documented() -> None:
    for field in GatewaySettings.model_fields:
        assert f"`GATEWAY_{field.upper()}`" in README, f"GATEWAY_{field.upper()} is missing from the README"


def test_the_two_commands_are_there() -> None:
    assert "make demo" in README and "make test" in README


def test_every_file_the_readme_links_is_in_the_repository() -> None:
    # A clone has only the repository: a link to ../shared/... or a moved file is a dead end.
    targets = [t for t in re.findall(r"\]\(([^)#\s]+)", README) if "://" not in t]
    assert "docs/ARCHITECTURE.md" in targets
    for target in targets:
        path = (ROOT / target).resolve()
        assert path.is_relative_to(ROOT.resolve()) and path.exists(), f"README links {target}, not in the repository"
