"""The registry-gateway command as a user meets it."""

from __future__ import annotations

import os
import subprocess

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
