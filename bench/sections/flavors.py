"""`--only flavors`: every flavor of the matrix, the gateway against mlflow models serve:
bench/flavor_rows.py."""

from __future__ import annotations

import flavor_rows
from harness import VENV_BIN, WORK, Run, gateway
from load import drive
from servers import Server, free_port


def section(run: Run) -> None:
    """Every flavor of the matrix, the gateway against mlflow models serve: bench/flavor_rows.py."""

    def mlflow_server(tracking_uri: str, model_uri: str, env: dict[str, str]) -> Server:
        port = free_port()
        argv = [str(VENV_BIN / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local"]
        return Server(
            "mlflow models serve",
            [*argv, "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            port=port,
            ready_path="/ping",
            predict_path="/invocations",
            log=WORK / "mlflow-serve-flavors.log",
            env={"MLFLOW_TRACKING_URI": tracking_uri, **env},
            cpus=run.server_cpus,
        )

    run.sections["flavors"] = flavor_rows.section(
        run, work=WORK, gateway=gateway, mlflow_server=mlflow_server, drive=drive
    )
