"""Environments built with real uv: one per resolved set, found again rather than rebuilt,
listed and pruned by `registry-gateway envs`."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import marshal
import os
import zipfile
from pathlib import Path

import mlflow
import pytest
from click.testing import CliRunner

from gateway.cli import main
from gateway.runtimes.environments import BuildOptions, EnvironmentRefused, EnvironmentStore
from gateway.runtimes.package_index import UV_INDEX_VARIABLES, package_index
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


@pytest.mark.parametrize("compile_bytecode", [True, False])
def test_an_environments_modules_are_compiled_once_as_it_is_built_running_none_of_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compile_bytecode: bool
) -> None:
    """GATEWAY_ENV_COMPILE_BYTECODE: its workers may not write to it (read-only to them, ``-B``),
    so the build compiles what they will import, for the path the environment ends up at (not
    the folder it was built in), and runs none of it: the hostile wheel of test_sandbox_start,
    whose ``.pth`` file (and ``bin/python._pth``) would write PROBE_WRITE, stays unrun."""
    from tests.gateway.runtimes.test_sandbox_start import WHEEL, build_wheel

    written = tmp_path / "escaped.txt"
    monkeypatch.setenv("UV_FIND_LINKS", str(build_wheel(tmp_path / "links").parent))
    monkeypatch.setenv("PROBE_WRITE", str(written))
    assert WHEEL.startswith("gateway_test_pth-1.0")
    store = EnvironmentStore(tmp_path / "envs", BuildOptions(compile_bytecode=compile_bytecode))
    env = store.ensure(Requirements("3.11", ("tabulate==0.9.0", "gateway-test-pth==1.0"), "requirements.txt"))
    assert not written.exists(), "the build ran the environment's code"
    for module in ("tabulate/__init__.py", "gateway_test_pth.py"):
        sources = list(env.path.glob(f"lib/python*/site-packages/{module}"))
        assert len(sources) == 1, sources
        cached = Path(importlib.util.cache_from_source(str(sources[0])))
        assert cached.is_file() is compile_bytecode, cached
        if compile_bytecode:
            code = marshal.loads(cached.read_bytes()[16:])  # after the header: flags, mtime, size
            assert code.co_filename == str(sources[0])


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


def tiny_wheel(folder: Path, name: str, version: str = "1.0") -> Path:
    """A pure-Python wheel built here (``<name>.VALUE == 1``), as a wheel folder on a host holds."""
    module = name.replace("-", "_")
    info = f"{module}-{version}.dist-info"
    files = {
        f"{module}/__init__.py": "VALUE = 1\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    digest = lambda text: base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()  # noqa: E731
    record = "".join(f"{path},sha256={digest(text)},{len(text.encode())}\n" for path, text in files.items())
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in {**files, f"{info}/RECORD": record + f"{info}/RECORD,,\n"}.items():
            archive.writestr(path, text)
    return wheel


@pytest.fixture
def only_pips_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No uv index setting, no pip setting but what a test gives, an empty uv cache."""
    for name in (*UV_INDEX_VARIABLES, "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))  # no user uv.toml or pip.conf
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))


def test_a_build_takes_pips_find_links_where_uv_has_no_index_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, only_pips_settings: None
) -> None:
    """Issue 49, point 14: a host whose pip finds its wheels in a folder (PIP_FIND_LINKS, as
    `make install` found torch's CPU wheel) built nothing in isolation: uv never looked there."""
    tiny_wheel(tmp_path / "wheels", "rg-probe-find-links")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "wheels"))
    env = EnvironmentStore(tmp_path / "envs").ensure(Requirements(None, ("rg-probe-find-links==1.0",), "r.txt"))
    assert "rg-probe-find-links==1.0" in (env.path / "resolved.txt").read_text()


def test_a_build_takes_the_index_settings_of_pip_conf(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, only_pips_settings: None
) -> None:
    tiny_wheel(tmp_path / "wheels", "rg-probe-pip-conf")
    conf = tmp_path / "pip.conf"
    conf.write_text(f"[global]\nfind-links = {tmp_path / 'wheels'}\n\n[install]\nno-index = false\n")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(conf))
    env = EnvironmentStore(tmp_path / "envs").ensure(Requirements(None, ("rg-probe-pip-conf==1.0",), "r.txt"))
    assert "rg-probe-pip-conf==1.0" in (env.path / "resolved.txt").read_text()


def test_a_failed_build_says_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, only_pips_settings: None
) -> None:
    (tmp_path / "no-wheels").mkdir()
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "no-wheels"))
    monkeypatch.setenv("PIP_NO_INDEX", "true")
    with pytest.raises(EnvironmentRefused) as refused:
        EnvironmentStore(tmp_path / "envs").ensure(Requirements(None, ("rg-probe-nowhere==1.0",), "r.txt"))
    message = str(refused.value)
    assert f"find-links {tmp_path / 'no-wheels'} (PIP_FIND_LINKS)" in message, message
    assert "no index (PIP_NO_INDEX)" in message and "rg-probe-nowhere" in message, message


def test_uvs_own_settings_leave_pips_unread(tmp_path: Path) -> None:
    index = package_index({"UV_DEFAULT_INDEX": "http://mirror.invalid/simple", "PIP_FIND_LINKS": "/w"}, home=tmp_path)
    assert index.options == () and "UV_DEFAULT_INDEX=http://mirror.invalid/simple" in index.asked
    assert "pip" not in index.identity  # the environments' keys as before: uv's settings alone
