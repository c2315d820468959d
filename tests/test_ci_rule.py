"""Under CI a test that lacks a tool fails, never skips (tests/support/ci.py), and CI is set."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.support.ci import in_ci, missing

ROOT = Path(__file__).resolve().parents[1]
# Skips that are not about a missing tool: what the host is, or what a partial run cannot know.
NOT_A_TOOL = (
    'pytest.skip("only a run of the whole suite knows its count',
    "pytest.skip(\"this machine's BLAS sums both layouts alike",
    'skipif(not hasattr(os, "fork")',
    'skipif(not Path("/proc/self/statm").exists()',
    'skipif(not Path("/proc/net/tcp").exists()',
    "skipif(not CUDA,",
    "skipif(CUDA,",
    "skipif(DRIVER_GPUS > 0,",
)
SKIPS = re.compile(r"pytest\.skip\(|importorskip\(|mark\.skipif\(")


@pytest.mark.parametrize("value", ["true", "True", "1", "yes"])
def test_a_ci_value_is_seen_and_a_missing_tool_fails(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CI", value)
    assert in_ci()
    with pytest.raises(pytest.fail.Exception, match="must run in CI"):
        missing("frobnicator is not installed")


def test_off_ci_a_missing_tool_skips(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    assert not in_ci()
    with pytest.raises(pytest.skip.Exception, match="frobnicator"):
        missing("frobnicator is not installed")


def test_ci_run_exports_ci_before_the_tests() -> None:
    """.ci/run sets CI=true itself (a runner that does not still gets the rule), before `make test`."""
    script = (ROOT / ".ci" / "run").read_text()
    exported = script.index("export CI=true")
    assert exported < script.index("\nmake test")
    shown = subprocess.run(
        ["bash", "-c", script[: exported + len("export CI=true")] + '\nprintf %s "$CI"'],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert shown.stdout == "true"


def test_every_skip_for_a_missing_tool_goes_through_the_ci_rule() -> None:
    """A test skipping on its own (pytest.skip, importorskip, skipif) escapes the CI rule: only
    the skips that are about the host, not a missing tool, may."""
    escaping = []
    for path in sorted(ROOT.joinpath("tests").rglob("*.py")):
        if path.name in ("ci.py", Path(__file__).name):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if SKIPS.search(line) and not any(allowed in line for allowed in NOT_A_TOOL):
                escaping.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not escaping, "skips that escape tests/support/ci.py's rule:\n" + "\n".join(escaping)
