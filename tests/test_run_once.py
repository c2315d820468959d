"""tests/support/run_once.py: what the run's processes (pytest-xdist's workers) build once."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from tests.conftest import Registry
from tests.support.run_once import RUN_DIR_VARIABLE, built_once, copy_built

ROOT = Path(__file__).resolve().parents[1]

# Two processes of one run asking at once: each appends its pid to `builders` when it builds.
_ASK = """
import os, sys, time
from pathlib import Path
from tests.support.run_once import built_once

asking = Path(sys.argv[1] + ".asking")

def build(folder: Path) -> None:
    with open(sys.argv[1], "a") as builders:
        builders.write(f"{os.getpid()}\\n")
    deadline = time.monotonic() + 60
    while len(list(asking.iterdir())) < 2:  # the other process asks meanwhile, not after
        assert time.monotonic() < deadline, "the other process never asked"
        time.sleep(0.01)
    (folder / "made").write_text("once")

asking.mkdir(exist_ok=True)
(asking / str(os.getpid())).touch()
print((built_once("thing", build) / "made").read_text())
"""


def test_processes_of_one_run_build_once_and_find_it_built(tmp_path: Path) -> None:
    builders = tmp_path / "builders"
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    env = {**os.environ, RUN_DIR_VARIABLE: str(run_dir), "PYTHONPATH": str(ROOT)}
    asking = [
        subprocess.Popen([sys.executable, "-c", _ASK, str(builders)], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    answers = [process.communicate(timeout=120)[0].strip() for process in asking]
    assert [process.returncode for process in asking] == [0, 0]
    assert answers == ["once", "once"]
    assert len(builders.read_text().splitlines()) == 1, builders.read_text()


def test_a_failed_build_leaves_nothing_and_the_next_ask_builds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(RUN_DIR_VARIABLE, str(tmp_path))

    def fail(folder: Path) -> None:
        (folder / "half").write_text("made")
        raise RuntimeError("broken build")

    with pytest.raises(RuntimeError, match="broken build"):
        built_once("thing", fail)
    assert not (tmp_path / "thing").exists()
    built = built_once("thing", lambda folder: (folder / "whole").write_text("made"))
    assert sorted(p.name for p in built.iterdir()) == [".built", "whole"]
    copy_built(built, tmp_path / "copy")
    assert sorted(p.name for p in (tmp_path / "copy").iterdir()) == ["whole"]  # the marker stays behind


def test_a_workers_copy_of_the_session_registry_names_its_own_files(sqlite_registry: Registry) -> None:
    """The copy's artifact locations (in MLflow's database and each version's MLmodel) are moved
    to the copy: a test that breaks a version's files on purpose breaks this worker's copy only,
    never the run's original that the other workers copy."""
    root = sqlite_registry.root.resolve()
    built = Path(os.environ[RUN_DIR_VARIABLE]).resolve()
    with closing(sqlite3.connect(root / "mlflow.db")) as db:
        dump = "\n".join(db.iterdump())
    assert str(built) not in dump and f"file://{root}/artifacts/models/" in dump
    mlmodels = list((root / "artifacts").rglob("MLmodel"))
    assert len(mlmodels) >= sum(len(numbers) for numbers in sqlite_registry.versions.values())
    for mlmodel in mlmodels:
        assert str(built) not in mlmodel.read_text() and str(root) in mlmodel.read_text(), mlmodel
