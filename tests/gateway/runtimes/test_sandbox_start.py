"""Code before the sandbox (issue 48, point 1): a requirement of the model's own ships a ``.pth``
file, which ``site`` runs when the interpreter starts. The worker starts without ``site``
(``-I -S``), puts its sandbox on, and only then lets ``site`` process its environment; so the
``.pth`` file's attacks (tests/support/pth_attack) run sandboxed, and its forged ``sandbox``
module comes too late. The wheel is built here, served from a find-links folder, and installed
by the real environment build (uv) from the model's requirements.

The wheel also ships ``bin/python._pth`` (as a ``.data/scripts`` file, which uv installs into
the environment's ``bin/``): CPython reads it beside the interpreter it starts, whatever ``-I -S``
say, and its ``import site`` line runs ``site`` (so the ``.pth`` file) before the worker's first
line. The worker starts on the interpreter the environment was built on, never on
``<env>/bin/python``.

The memory limit is the worker's to set once the ``.pth`` file has run: with ``PROBE_MEMORY``
the file replaces the worker's ``limit_memory`` (one that leaves the hard limit high, one that
sets none) after inflating the worker's peak mapping; the limit set before ``site`` and the
gateway's check of both limits in ``/proc/<pid>/limits`` hold.

The control: the same wheel with GATEWAY_SANDBOX=off, where every attack succeeds.
"""

from __future__ import annotations

import base64
import hashlib
import sys
import sysconfig
import zipfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.models import infer_signature

from tests.conftest import Gateway, Registry, empty_registry
from tests.gateway.runtimes.test_sandbox import PROBER, REQUIREMENTS, gateway_for, probe

pytestmark = pytest.mark.anyio

ATTACK = Path(__file__).parents[2] / "support" / "pth_attack" / "gateway_test_pth.py"
WHEEL = "gateway_test_pth-1.0-py3-none-any.whl"
PORT, WRITE, MEMORY = "PROBE_PORT", "PROBE_WRITE", "PROBE_MEMORY"  # passed to workers (GATEWAY_ENV_PASS)
ATTACKS = ("environ", "write", "connect", "sandbox")


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


def start_path_file() -> bytes:
    """A ``python._pth`` for the environment's ``bin/``: the base interpreter's standard library,
    the environment's site-packages, and ``import site``, which turns ``site`` back on."""
    stdlib = sysconfig.get_paths()["stdlib"]
    lines = [stdlib, f"{stdlib}/lib-dynload", f"../lib/python{sys.version_info[0]}.{sys.version_info[1]}/site-packages"]
    return ("\n".join([*lines, "import site"]) + "\n").encode()


def build_wheel(folder: Path) -> Path:
    """A wheel of one module and a ``.pth`` file that imports it, as a hostile package ships one,
    and a ``python._pth`` for the environment's ``bin/``."""
    files = {
        "gateway_test_pth.py": ATTACK.read_bytes(),
        "gateway_test_pth.pth": b"import gateway_test_pth\n",
        "gateway_test_pth-1.0.data/scripts/python._pth": start_path_file(),
        "gateway_test_pth-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: gateway-test-pth\nVersion: 1.0\n",
        "gateway_test_pth-1.0.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = [
        f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}"
        for name, data in files.items()
    ]
    files["gateway_test_pth-1.0.dist-info/RECORD"] = (
        "\n".join([*record, "gateway_test_pth-1.0.dist-info/RECORD,,"]) + "\n"
    ).encode()
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(folder / WHEEL, "w") as wheel:
        for name, data in files.items():
            wheel.writestr(name, data)
    return folder / WHEEL


@pytest.fixture(scope="module")
def hostile_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """uv finds the wheel in a folder of links; the attack's loopback target listens; the file it
    writes (outside any sandbox's folder)."""
    import socket

    links = tmp_path_factory.mktemp("find-links")
    build_wheel(links)
    target = tmp_path_factory.mktemp("outside") / "escaped.txt"
    with pytest.MonkeyPatch.context() as patch, socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        patch.setenv("UV_FIND_LINKS", str(links))
        patch.setenv(PORT, str(server.getsockname()[1]))
        patch.setenv(WRITE, str(target))
        yield target


def log_hostile(name: str) -> int:
    with mlflow.start_run(run_name=name):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(PROBER),
            registered_model_name=name,
            signature=infer_signature(pd.DataFrame({"probe": ["pth:environ"]}), ["x"]),
            pip_requirements=[*REQUIREMENTS, "gateway-test-pth==1.0"],
        )
    return int(info.registered_model_version)


@pytest.fixture(scope="module")
def hostile_registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    registry = empty_registry(tmp_path_factory.mktemp("pth-registry"))
    registry.log(log_hostile, "prober")
    return registry


@pytest.fixture(scope="module")
def env_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("envs")


async def attacks(gw: Gateway) -> dict[str, str]:
    return dict(zip(ATTACKS, await probe(gw, "prober", *(f"pth:{a}" for a in ATTACKS)), strict=True))


@pytest.fixture
async def required(
    hostile_registry: Registry, hostile_env: Path, env_dir: Path, tmp_path: Path
) -> AsyncIterator[Gateway]:
    passed = [PORT, WRITE, MEMORY]
    async with gateway_for(hostile_registry, tmp_path, env_dir, sandbox="required", env_pass=passed) as gw:
        yield gw


async def test_a_requirements_pth_file_runs_only_inside_the_sandbox(required: Gateway, hostile_env: Path) -> None:
    body = {"dataframe_split": {"columns": ["probe"], "data": [[f"pth:{a}"] for a in ATTACKS]}}
    response = await required.client.post("/models/prober/versions/1/predict", json=body)
    assert not hostile_env.exists(), "written before the sandbox, whether or not the worker was then refused"
    assert response.status_code == 200, response.text
    seen = dict(zip(ATTACKS, response.json()["predictions"], strict=True))
    assert seen["environ"].startswith("PermissionError"), seen
    assert seen["write"].startswith("PermissionError"), seen
    assert seen["connect"] != "connected", seen
    assert seen["sandbox"] == "already imported: too late to replace", seen
    assert not hostile_env.exists()
    box = (await required.client.get("/models/prober/versions/1")).json()["runtime"]["sandbox"]
    assert box["mode"] == "required" and box["missing"] == {}, box
    assert box["syscalls"]["how"].startswith("seccomp") and box["filesystem"]["how"].startswith("Landlock ABI")


async def test_without_the_sandbox_the_pth_files_attacks_succeed(
    hostile_registry: Registry, hostile_env: Path, env_dir: Path, tmp_path: Path
) -> None:
    async with gateway_for(hostile_registry, tmp_path, env_dir, sandbox="off", env_pass=[PORT, WRITE]) as gw:
        seen = await attacks(gw)
    assert seen["environ"].startswith("read "), seen
    assert seen["write"] == "written" and hostile_env.read_text() == "escaped", seen
    hostile_env.unlink()
    assert seen["connect"] == "connected", seen
    # the sandbox's module is in place before site runs, sandbox or not (the unfixed worker: "replaced")
    assert seen["sandbox"] == "already imported: too late to replace", seen


async def test_the_wheel_put_a_start_path_file_beside_the_environments_interpreter(env_dir: Path) -> None:
    """The premise of the test above: uv installed the wheel's ``python._pth`` into ``bin/``."""
    assert [p.read_bytes() for p in env_dir.glob("*/bin/python._pth")] == [start_path_file()]


@pytest.mark.parametrize("forgery", ["forge", "omit"])
async def test_a_memory_limit_forged_by_a_pth_file_stops_a_required_worker(
    hostile_registry: Registry,
    hostile_env: Path,
    env_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    forgery: str,
) -> None:
    monkeypatch.setenv(MEMORY, forgery)
    async with gateway_for(
        hostile_registry, tmp_path, env_dir, sandbox="required", env_pass=[PORT, WRITE, MEMORY]
    ) as gw:
        body = {"dataframe_split": {"columns": ["probe"], "data": [["pth:limit"]]}}
        response = await gw.client.post("/models/prober/versions/1/predict", json=body)
    assert response.status_code == 409, response.text  # refused: GATEWAY_SANDBOX=required, a layer missing
    assert "limits.memory" in response.json()["message"], response.text


async def test_a_memory_limit_forged_by_a_pth_file_is_shown_missing_and_bounded(
    hostile_registry: Registry, hostile_env: Path, env_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Best-effort: the worker runs, its memory limit shown missing, and the limit set before
    ``site`` still binds it: the 1 TiB mapping failed, and its hard limit is that one."""
    monkeypatch.setenv(MEMORY, "forge")
    async with gateway_for(
        hostile_registry, tmp_path, env_dir, sandbox="best-effort", env_pass=[PORT, WRITE, MEMORY]
    ) as gw:
        inflate, limit, pid = await probe(gw, "prober", "pth:inflate", "pth:limit", "pid")
        box = (await gw.client.get("/models/prober/versions/1")).json()["runtime"]["sandbox"]
        with open(f"/proc/{pid}/limits") as f:
            soft, hard = next(line[26:68].split() for line in f if line.startswith("Max address space"))
    assert limit == "forge"
    assert inflate != "mapped 1 TiB", inflate
    assert "limits.memory" in box["missing"], box
    assert hard != "unlimited" and int(hard) < 2**40, (soft, hard)
