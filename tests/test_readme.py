"""The README guides, and the documents it leads to say what the code has."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.settings import GatewaySettings

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
GUIDE_LINES = 300  # issue 25: the README is what it is, the two commands, a tour, where to read on


def test_every_setting_is_in_the_settings_reference() -> None:
    reference = (ROOT / "docs" / "settings.md").read_text()
    for field in GatewaySettings.model_fields:
        assert f"`GATEWAY_{field.upper()}`" in reference, f"GATEWAY_{field.upper()} is missing from docs/settings.md"


def test_the_readme_is_a_guide_with_the_two_commands() -> None:
    assert "make demo" in README and "make test" in README
    assert len(README.splitlines()) <= GUIDE_LINES
    for page in ("user-guide", "protocols", "operations", "security", "performance", "troubleshooting", "settings"):
        assert f"(docs/{page}.md)" in README, f"the README does not lead to docs/{page}.md"


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_file_a_page_links_is_in_the_repository(page: Path) -> None:
    # A clone has only the repository: a link to ../shared/... or a moved file is a dead end.
    targets = [t for t in re.findall(r"\]\(([^)#\s]+)", page.read_text()) if "://" not in t]
    for target in targets:
        path = (page.parent / target).resolve()
        assert path.is_relative_to(ROOT.resolve()) and path.exists(), (
            f"{page.name} links {target}, not in the repository"
        )
