"""Debian's Chromium, headless, for tests that look at a page as a person's browser renders it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.support.ci import missing


def chromium() -> str:
    """Debian's Chromium: skipped without it on a developer's machine; in CI (``.ci/run``
    installs it) pages must be seen in a browser, so a missing one fails."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    return found or missing("Chromium is not installed (apt-get install chromium): the pages must be seen")


def dump_dom(url: str, profile: Path, *, wait_ms: int = 0) -> str:
    """The DOM Chromium renders for ``url`` with every host but 127.0.0.1 unresolvable (a
    script or style from anywhere else would not load); ``wait_ms`` lets scripts run first."""
    result = subprocess.run(
        [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            f"--user-data-dir={profile}",
            *([f"--virtual-time-budget={wait_ms}"] if wait_ms else []),
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout
