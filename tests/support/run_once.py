"""What one test run builds once for all of its processes.

pytest-xdist runs the suite in several worker processes, and each built its own session
fixtures: the migrated MLflow database template, and the session registries (seven model
versions logged into a sqlite registry and as many into an `mlflow server`: about 20 s of CPU
a worker, four workers on 2 cores). Built once in a folder every process of the run shares,
each worker copies them instead.

The folder is named by ``RUN_DIR_VARIABLE``, set by the first process of the run that imports
this module (the xdist controller, through tests/conftest.py, before it starts its workers,
which inherit it; or plain pytest) and removed when that process exits.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

RUN_DIR_VARIABLE = "REGISTRY_GATEWAY_TESTS_RUN_DIR"
_BUILT = ".built"


def claim_run_dir() -> Path:
    """The run's shared folder: made by the first process of the run (which removes it when it
    exits), found by the others."""
    named = os.environ.get(RUN_DIR_VARIABLE)
    if named and Path(named).is_dir():
        return Path(named)
    directory = tempfile.mkdtemp(prefix="registry-gateway-run-")
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    os.environ[RUN_DIR_VARIABLE] = directory
    return Path(directory)


def built_once(name: str, build: Callable[[Path], None]) -> Path:
    """The folder ``name`` of the run's shared folder, filled by ``build`` (given the empty
    folder) in whichever process asks first; the others wait for it (a file lock) and find it
    done. A build that raised leaves nothing: the next to ask builds again."""
    root = claim_run_dir()
    target = root / name
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not (target / _BUILT).is_file():
                shutil.rmtree(target, ignore_errors=True)
                target.mkdir()
                try:
                    build(target)
                except BaseException:
                    shutil.rmtree(target, ignore_errors=True)
                    raise
                (target / _BUILT).touch()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return target


def copy_built(source: Path, destination: Path) -> None:
    """A copy of what :func:`built_once` made, at ``destination`` (made if missing)."""
    shutil.copytree(source, destination, dirs_exist_ok=True, ignore=shutil.ignore_patterns(_BUILT))
