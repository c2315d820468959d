"""MLServer with mlserver-mlflow serving registry versions: the one place that knows how.

Two users: the benchmark measures the gateway against it (bench/run.py), and the differential
test compares the gateway's Open Inference Protocol answers with its answers
(tests/gateway/protocols/test_oip_mlserver.py). Each starts it with its own process helper;
what they share is here.

- **The environment** is the Makefile's: ``make mlserver-env`` builds ``.venv-mlserver`` at the
  repository's root from envs/mlserver.txt plus the project venv's own mlflow, scikit-learn,
  pandas and numpy as exact pins (so both servers load a version with the same libraries),
  and rebuilds it when either changes. ``make test`` builds it; :func:`ensure` runs the same
  target for the benchmark.
- **The model repository**: one folder per registry version, holding the version's artifacts
  (downloaded with ``mlflow.artifacts``) and a ``model-settings.json`` that serves it as the
  registry's model name and version number, so ``/v2/models/{name}/versions/{version}``
  means the same on MLServer as on the gateway (``/v2/models/{name}`` is its latest loaded
  version); and a ``settings.json`` with the ports.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv-mlserver"
MAKE_TARGET = "mlserver-env"


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports. Bound together, not one after another: a port
    freed by one probe can come back from the next, and MLServer exits when two of its
    servers get the same one."""
    with ExitStack() as stack:
        probes = [stack.enter_context(socket.socket()) for _ in range(count)]
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [int(probe.getsockname()[1]) for probe in probes]


@dataclass(frozen=True)
class Ports:
    http: int
    grpc: int
    metrics: int

    @classmethod
    def pick(cls) -> Ports:
        return cls(*free_ports(3))


def built() -> bool:
    """Whether ``make mlserver-env`` has finished (its stamp is written last)."""
    return (VENV / ".installed").exists() and (VENV / "bin" / "mlserver").exists()


def ensure(log: Path) -> str | None:
    """Build the environment if it is not there (``make mlserver-env``, a few minutes, output in
    ``log``); None once it is, else why not."""
    if built():
        return None
    with log.open("w") as out:
        try:
            subprocess.run(
                ["make", "--no-print-directory", MAKE_TARGET],
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=900,
                check=True,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return f"`make {MAKE_TARGET}` failed ({type(exc).__name__}); see {log}"
    return None if built() else f"`make {MAKE_TARGET}` left no {VENV.name}; see {log}"


def add_version(repository: Path, name: str, version: int, tracking_uri: str) -> Path:
    """``models:/{name}/{version}`` in the repository, served as model ``name`` version
    ``version``: its folder (the artifacts are downloaded once; a folder already there is kept)."""
    folder = repository / f"{name}-{version}"
    if not (folder / "MLmodel").exists():
        import mlflow.artifacts
        from mlflow import MlflowClient

        # The version's own artifact URI, then a plain download: download_artifacts() resolves
        # a models:/ URI against the process's default registry, whatever registry it is given.
        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        source = client.get_model_version_download_uri(name, str(version))
        staging = repository / f".{name}-{version}.download"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(folder, ignore_errors=True)
        downloaded = mlflow.artifacts.download_artifacts(source, dst_path=str(staging), tracking_uri=tracking_uri)
        Path(downloaded).rename(folder)
        shutil.rmtree(staging)
    model_settings = {
        "name": name,
        "implementation": "mlserver_mlflow.MLflowRuntime",
        "parameters": {"uri": ".", "version": str(version)},
    }
    (folder / "model-settings.json").write_text(json.dumps(model_settings))
    return folder


def write_settings(repository: Path, ports: Ports) -> None:
    """The server's settings: loopback, these ports, inference in the server process.

    ``parallel_workers=0``: MLServer 1.7's worker pool does not start under uvloop >= 0.22
    (``asyncio.get_event_loop()`` raises in the worker); one process is also "one worker"."""
    settings = {
        "host": "127.0.0.1",
        "http_port": ports.http,
        "grpc_port": ports.grpc,
        "metrics_port": ports.metrics,
        "parallel_workers": 0,
    }
    repository.mkdir(parents=True, exist_ok=True)
    (repository / "settings.json").write_text(json.dumps(settings))


def argv(repository: Path) -> list[str]:
    """The command that serves every version in ``repository``."""
    return [str(VENV / "bin" / "mlserver"), "start", str(repository)]
