"""The registry-gateway command as a user meets it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support.servers import BIN


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "registry-gateway"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_help_lists_the_commands() -> None:
    result = run("--help")
    assert result.returncode == 0
    assert "serve" in result.stdout and "demo-registry" in result.stdout
    serve = run("serve", "--help")
    assert serve.returncode == 0
    for option in ("--host", "--port", "--workers", "--role"):
        assert option in serve.stdout


def test_an_unknown_role_is_refused() -> None:
    result = run("serve", "--role", "leader")
    assert result.returncode != 0 and "--role" in result.stderr
    result = run("serve", env={"GATEWAY_ROLE": "leader"})
    assert result.returncode != 0 and "GATEWAY_ROLE" in result.stderr


def test_invalid_settings_fail_fast_naming_the_variable() -> None:
    result = run("serve", env={"GATEWAY_MAX_LOADED_MODELS": "zero"})
    assert result.returncode != 0
    assert "GATEWAY_MAX_LOADED_MODELS" in result.stderr


@pytest.mark.parametrize(("variable", "value"), [("GATEWAY_DATABASE_URL", "notaurl"), ("GATEWAY_LOG_LEVEL", "loud")])
def test_a_bad_setting_is_one_line_not_a_traceback(variable: str, value: str) -> None:
    result = run("serve", env={variable: value})
    assert result.returncode != 0
    assert result.stderr.startswith(f"Error: {variable}: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_a_misspelled_setting_and_a_digit_warm_alias_are_warned_about(tmp_path: Path) -> None:
    result = run(
        "db",
        "current",
        env={
            "GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path / 'state.db'}",
            "GATEWAY_MAX_LODED_MODELS": "3",
            "GATEWAY_WARM_ALIASES": "champion,2",
        },
    )
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if " WARNING " in line]
    assert any("GATEWAY_MAX_LODED_MODELS" in line and "GATEWAY_MAX_LOADED_MODELS?" in line for line in warnings)
    assert any("GATEWAY_WARM_ALIASES" in line and "'2'" in line for line in warnings), result.stderr
