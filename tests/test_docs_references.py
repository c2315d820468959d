"""What the docs name exists: every ``GATEWAY_*`` variable is a setting, every link's anchor and
every `README "Section"` reference is a heading of the file it names, and no table is empty
(issue 49: docs named GATEWAY_MEMORY_BUDGET_MB, the README's "Settings" table after it had
moved, and showed a Settings table with no row)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from gateway.settings import GatewaySettings

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "bench").glob("*.md"))]
DEPLOY = [p for p in sorted((ROOT / "deploy").rglob("*")) if p.is_file() and p.suffix not in {".png", ".json"}]
CODE = [*sorted((ROOT / "gateway").rglob("*.py")), *sorted((ROOT / "registry_sync").rglob("*.py"))]
NAMING = [*PAGES, *DEPLOY, *CODE, ROOT / "Makefile"]

# Names that are rightly no setting, each with its reason.
NOT_SETTINGS = {
    "GATEWAY_API_KEY": "the key `registry-gateway status --key` presents, a client's (click's envvar)",
    "GATEWAY_FUZZ_EXAMPLES": "how long the fuzz tests run (docs/development.md), read by the tests",
    "GATEWAY_MAX_LODED_MODELS": "the misspelling docs/operations.md shows the startup warning for",
}
SETTINGS = {f"GATEWAY_{name.upper()}" for name in GatewaySettings.model_fields}
# `GATEWAY_RECORDS_*` names a family: some setting must start with it.
NAME = re.compile(r"\bGATEWAY_[A-Z0-9_]*[A-Z0-9](_\*)?")
# `README "Settings"`, `README's "Settings" table`, `bench/README.md, "A fleet"`.
SECTION_REFERENCE = re.compile(r"\b((?:[\w.-]+/)*(?:README|[\w-]+\.md))(?:'s)?,? \"([^\"\n]+)\"")
LINK = re.compile(r"\]\(([^)\s]*)\)")


def _relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _all_lines(paths: list[Path]) -> Iterator[tuple[Path, int, str]]:
    for path in paths:
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            yield path, number, line


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation but `-` and `_` dropped, spaces to `-`."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def headings(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # a `# comment` in a code block is none
    return [m.group(1).strip() for m in re.finditer(r"^#{1,6} (.+)$", text, flags=re.M)]


def _page(name: str, where: Path) -> Path:
    """The file a reference names: `README` is the repository's, a path is from the root or the file's folder."""
    if name == "README":
        return ROOT / "README.md"
    from_root = ROOT / name
    return from_root if from_root.is_file() else where.parent / name


def test_every_gateway_variable_named_is_a_setting() -> None:
    wrong = []
    for path, number, line in _all_lines(NAMING):
        for match in NAME.finditer(line):
            name = match.group(0)
            if name.endswith("_*"):
                ok = any(s.startswith(name[:-1]) for s in SETTINGS)
            else:
                ok = name in SETTINGS or name in NOT_SETTINGS
            if not ok:
                wrong.append(f"{_relative(path)}:{number}: {name}")
    assert not wrong, f"names no setting (gateway/settings/) has: {wrong}"


def test_the_allowed_names_are_still_no_settings_and_still_named() -> None:
    named = {m.group(0) for path in NAMING for m in NAME.finditer(path.read_text())}
    assert not set(NOT_SETTINGS) & SETTINGS, "an allowed name became a setting: drop it from NOT_SETTINGS"
    assert set(NOT_SETTINGS) <= named, f"allowed but named nowhere: {set(NOT_SETTINGS) - named}"


def test_every_anchor_a_page_links_is_a_heading() -> None:
    wrong = []
    for path, number, line in _all_lines([*PAGES, ROOT / "deploy" / "README.md"]):
        for target in LINK.findall(line):
            if "#" not in target or "://" in target:
                continue
            file, anchor = target.split("#", 1)
            page = (path.parent / file).resolve() if file else path
            if page.suffix == ".md" and anchor not in {slug(h) for h in headings(page)}:
                wrong.append(f"{_relative(path)}:{number}: {target}")
    assert not wrong, f"links to no heading: {wrong}"


def test_every_section_a_file_refers_to_is_a_heading() -> None:
    wrong = []
    for path, number, line in _all_lines([*PAGES, *DEPLOY, ROOT / "Makefile"]):
        for name, section in SECTION_REFERENCE.findall(line):
            page = _page(name, path)
            if not page.is_file() or not any(h.startswith(section) for h in headings(page)):
                wrong.append(f'{_relative(path)}:{number}: {name} "{section}"')
    assert not wrong, f"refer to sections that are not there: {wrong}"


def test_no_table_is_empty() -> None:
    empty = []
    for path in PAGES:
        lines = path.read_text().splitlines() + [""]
        empty += [
            f"{_relative(path)}:{number + 1}"
            for number, line in enumerate(lines[:-1])
            if re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", line.strip()) and not lines[number + 1].startswith("|")
        ]
    assert not empty, f"tables with no row under their header: {empty}"
