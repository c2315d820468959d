"""Environments built with real uv: one per resolved set, found again rather than rebuilt,
listed and pruned by `registry-gateway envs`."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
from click.testing import CliRunner

from gateway.cli import main
from gateway.runtimes.environments import EnvironmentRefused, EnvironmentStore
from gateway.runtimes.requirements import Requirements
from tests.gateway.runtimes.test_isolated_serving import REPORTER, SIGNATURE


def saved_model(path: Path, requirements: list[str]) -> Path:
    mlflow.pyfunc.save_model(str(path), python_model=str(REPORTER), signature=SIGNATURE, pip_requirements=requirements)
    return path


def test_two_spellings_of_one_set_share_one_environment_built_once(tmp_path: Path) -> None:
    store = EnvironmentStore(tmp_path / "envs")
    first = store.ensure(Requirements("3.11", ("tabulate==0.9.0",), "requirements.txt"))
    built_at = json.loads((first.path / "environment.json").read_text())["built_at"]
    again = store.ensure(Requirements("3.11", ("Tabulate == 0.9.0  ",), "requirements.txt"))
    assert again.key == first.key
    assert json.loads((again.path / "environment.json").read_text())["built_at"] == built_at  # not rebuilt
    assert [env.key for env in store.environments()] == [first.key]
    other = store.ensure(Requirements("3.11", ("tabulate==0.8.10",), "requirements.txt"))
    assert other.key != first.key


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("--index-url https://example.invalid/simple", "is a pip option"),
        ("tabulate @ https://example.invalid/tabulate.whl", "GATEWAY_ENV_ALLOW_DIRECT_REFERENCES"),
        ("./vendored/package", "GATEWAY_ENV_ALLOW_DIRECT_REFERENCES"),
        ("this-package-does-not-exist-registry-gateway==1.0", "this-package-does-not-exist-registry-gateway"),
    ],
)
def test_lines_that_are_not_plain_requirements_or_cannot_resolve_are_refused(
    tmp_path: Path, line: str, words: str
) -> None:
    with pytest.raises(EnvironmentRefused, match=words):
        EnvironmentStore(tmp_path / "envs").ensure(Requirements("3.11", (line,), "requirements.txt"))
    assert EnvironmentStore(tmp_path / "envs").environments() == []


def test_the_envs_command_builds_lists_and_prunes(tmp_path: Path) -> None:
    model = saved_model(tmp_path / "model", ["tabulate==0.9.0"])
    env = {"GATEWAY_ENV_DIR": str(tmp_path / "envs")}
    runner = CliRunner()
    built = runner.invoke(main, ["envs", "build", str(model)], env=env)
    assert built.exit_code == 0, built.output
    assert "does not satisfy it: tabulate==0.9.0 (not installed)" in built.output
    key = built.output.split("environment ", 1)[1].split()[0]
    listed = runner.invoke(main, ["envs", "list"], env=env)
    assert listed.exit_code == 0 and listed.output.splitlines()[1].startswith("KEY\tPYTHON")
    assert key in listed.output and "tabulate==0.9.0" in listed.output
    pruned = runner.invoke(main, ["envs", "prune", "--all"], env=env)
    assert pruned.exit_code == 0 and key in pruned.output
    assert "none built yet" in runner.invoke(main, ["envs", "list"], env=env).output
    missing = runner.invoke(main, ["envs", "build", str(tmp_path / "nowhere")], env=env)
    assert missing.exit_code != 0 and "no MLmodel" in missing.output


def test_an_environment_a_worker_runs_on_is_not_pruned(tmp_path: Path) -> None:
    store = EnvironmentStore(tmp_path / "envs")
    env = store.ensure(Requirements(None, ("tabulate==0.9.0",), "requirements.txt"))
    with store.in_use(env.key):
        assert store.prune(everything=True) == []
    assert store.prune(everything=True) == [env.key]


def test_an_unreachable_index_fails_the_build_at_once_with_uv_s_words(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing listens on port 9 here: the connection is refused, and the build must say so
    instead of hanging (ray #26332 sat PENDING). A package no earlier test resolved, so that
    uv's cache cannot answer for the index."""
    monkeypatch.setenv("UV_DEFAULT_INDEX", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "empty-cache"))
    with pytest.raises(EnvironmentRefused, match="127.0.0.1:9"):
        EnvironmentStore(tmp_path / "envs").ensure(Requirements(None, ("tabulate==0.9.0",), "requirements.txt"))


def test_a_request_resolved_once_finds_its_environment_again_without_asking_uv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A version loaded again (after an eviction, a restart) needs neither the index nor an
    interpreter search: the request resolved on this host maps to its environment on disk."""
    request = Requirements("3.11", ("tabulate==0.9.0",), "requirements.txt")
    first = EnvironmentStore(tmp_path / "envs").ensure(request)
    again = EnvironmentStore(tmp_path / "envs")  # as after a restart
    monkeypatch.setattr(again, "_run", lambda *args, **kwargs: pytest.fail("uv was asked again"))
    assert again.ensure(request) == first
    assert again.prune(everything=True) == [first.key]
    monkeypatch.undo()
    rebuilt = EnvironmentStore(tmp_path / "envs").ensure(request)  # pruned: resolved and built again
    assert rebuilt.key == first.key and rebuilt.python.exists()
