"""No file of the checkout holds a merge's conflict markers: a Markdown table or a docstring
that kept both sides of a conflict still renders and imports, so nothing else would notice
(bench/README.md once held one for a whole session)."""

from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIPPED = {".git", "node_modules", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache", "demo", "fleet"}
SUFFIXES = {".py", ".md", ".toml", ".yaml", ".yml", ".cfg", ".json", ".txt", ".mako", ".proto", ".pyi", ".sh", ".env"}
# Built from parts so that this file does not hold the markers it looks for.
MARKER = re.compile("^(?:" + "<" * 7 + " |" + "=" * 7 + "$|" + ">" * 7 + " )", re.MULTILINE)


def _files() -> list[Path]:
    found = []
    for folder, dirs, names in os.walk(ROOT):
        dirs[:] = [
            name
            for name in dirs
            if name not in SKIPPED and not name.startswith(".venv") and (name == ".ci" or not name.startswith("."))
        ]
        for name in names:
            path = Path(folder, name)
            if path.suffix in SUFFIXES or name in {"Makefile", "run"}:
                found.append(path)
    return found


def test_no_file_holds_conflict_markers() -> None:
    files = _files()
    assert any(path.name == "README.md" for path in files)  # the walk sees the checkout
    marked = [str(path.relative_to(ROOT)) for path in files if MARKER.search(path.read_text(errors="replace"))]
    assert marked == []
