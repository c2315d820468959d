"""Code before the sandbox (issue 48, point 1): a requirement of the model's own ships a ``.pth``
file, which ``site`` runs when the interpreter starts. The worker starts without ``site``
(``-I -S``), puts its sandbox on, and only then lets ``site`` process its environment; so the
``.pth`` file's attacks (tests/support/pth_attack) run sandboxed, and its forged ``sandbox``
module comes too late. The wheel is built here, served from a find-links folder, and installed
by the real environment build (uv) from the model's requirements.

The control: the same wheel with GATEWAY_SANDBOX=off, where every attack succeeds.
"""

from __future__ import annotations

import base64
import hashlib
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
PORT, WRITE = "PROBE_PORT", "PROBE_WRITE"  # passed to workers (GATEWAY_ENV_PASS): where to attack
ATTACKS = ("environ", "write", "connect", "sandbox")


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


def build_wheel(folder: Path) -> Path:
    """A wheel of one module and a ``.pth`` file that imports it, as a hostile package ships one."""
    files = {
        "gateway_test_pth.py": ATTACK.read_bytes(),
        "gateway_test_pth.pth": b"import gateway_test_pth\n",
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
    async with gateway_for(hostile_registry, tmp_path, env_dir, sandbox="required", env_pass=[PORT, WRITE]) as gw:
        yield gw


async def test_a_requirements_pth_file_runs_only_inside_the_sandbox(required: Gateway, hostile_env: Path) -> None:
    seen = await attacks(required)
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
