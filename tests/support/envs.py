"""Environments of their own for other projects' tooling whose pins clash with the gateway's
(the kserve SDK, MLServer): the Makefile builds them (``make kserve-env``, ``make mlserver-env``;
``make test`` builds both) into ignored folders at the repository's root, and tests run their
programs as subprocesses. A test whose environment is missing is skipped with the command that
builds it, except in CI (``CI=true``), where it must run: there it fails instead."""

from __future__ import annotations

from pathlib import Path

from tests.support.ci import missing

ROOT = Path(__file__).resolve().parents[2]


def env_bin(folder: str, target: str) -> Path:
    """``<root>/<folder>/bin`` once ``make <target>`` has built it (its ``.installed`` stamp)."""
    env = ROOT / folder
    if not (env / ".installed").exists() or not (env / "bin" / "python").exists():
        message = f"{folder} is not built: run `make {target}` (`make test` builds it)"
        missing(message)
    return env / "bin"
