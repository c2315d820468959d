"""MLflow 2.22, its tracking server and its client, from their own environment
(``make mlflow2-env``: envs/mlflow2.txt), for the registries of the past (issue 41)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from tests.support.envs import env_bin
from tests.support.servers import Process, free_port

HERE = Path(__file__).parent


def mlflow2_bin() -> Path:
    """The environment's ``bin``; skipped (failed in CI) when it is not built."""
    return env_bin(".venv-mlflow2", "mlflow2-env")


def mlflow2_server(root: Path) -> Process:
    """A real MLflow 2.22 tracking server on a sqlite backend of its own (2.22 migrates it at
    start), artifacts proxied to ``root``."""
    port = free_port()
    root.mkdir(parents=True, exist_ok=True)
    args = [
        str(mlflow2_bin() / "mlflow"),
        "server",
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination",
        str(root / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        # each request a line of server.log: what a test counts of the calls the server answered
        "--gunicorn-opts",
        "--access-logfile -",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_") and k != "PYTHONPATH"}
    return Process(
        args, env=env, log=root / "server.log", health_url=f"http://127.0.0.1:{port}/health", name="mlflow 2.22 server"
    )


def log_iris_2x(tracking_uri: str, name: str, *, c: float, rows: list[list[float]]) -> dict[str, Any]:
    """Log and register an iris version with MLflow 2.22's client (scikit-learn 1.5.2); its
    version number and what MLflow 2.22's pyfunc predicts for ``rows``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_") and k != "PYTHONPATH"}
    result = subprocess.run(
        [str(mlflow2_bin() / "python"), str(HERE / "log_iris.py"), tracking_uri, name, str(c), json.dumps(rows)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]
