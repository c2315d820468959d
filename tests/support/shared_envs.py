"""Models' environments that several test files serve from, built once a run.

tests/gateway/runtimes/test_sandbox.py, test_sandbox_wire.py and test_isolated_serving.py log
models with the same requirements (scikit-learn 1.5.2), so the gateway builds the same
environment for them: each file built it again in a folder of its own (uv venv and uv pip
install), and the workers of the two that did not compile its bytecode compiled MLflow,
pandas and scikit-learn from source at every start (a worker may not write to its
environment): about 5 s of CPU a start against 2 s from bytecode, and these files start
dozens of workers.

Built once a run (tests/support/run_once.py) by the gateway's own EnvironmentStore with its
bytecode compiled (GATEWAY_ENV_COMPILE_BYTECODE), it is linked into each file's environment
folder: a gateway there resolves the model's requirements (uv pip compile), finds the
environment under its key, and builds nothing. Hard links (one file system), so a file's
copy costs no disk; nothing writes to an environment once built (its workers may not), and
a gateway that prunes its folder removes only its own links.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import shutil
from collections.abc import Sequence
from pathlib import Path

import mlflow

from gateway.runtimes.environments import BuildOptions, EnvironmentStore
from gateway.runtimes.requirements import Requirements
from tests.support.run_once import built_once


def _build(lines: tuple[str, ...], root: Path) -> None:
    store = EnvironmentStore(root / "envs", BuildOptions(compile_bytecode=True))
    asked = Requirements(python=platform.python_version(), lines=lines, source="tests/support/shared_envs.py")
    env = store.ensure(asked)
    (root / "key").write_text(env.key)


def _link(source: str, destination: str) -> None:
    try:
        os.link(source, destination)
    except OSError:  # another file system: a copy
        shutil.copy2(source, destination)


def with_environment(env_dir: Path, requirements: Sequence[str]) -> Path:
    """``env_dir`` holding the environment of a model logged here with ``pip_requirements``
    (its requirements.txt: this MLflow, then those), built once this run; returns the
    environment's folder."""
    lines = (f"mlflow=={mlflow.__version__}", *requirements)
    name = "env-" + hashlib.sha256(json.dumps(lines).encode()).hexdigest()[:16]
    built = built_once(name, functools.partial(_build, lines))
    key = (built / "key").read_text()
    env_dir.mkdir(parents=True, exist_ok=True)
    shutil.copytree(built / "envs" / key, env_dir / key, copy_function=_link, symlinks=True, dirs_exist_ok=True)
    return env_dir / key
