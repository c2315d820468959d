"""`--only main`: the main table: the gateway, `mlflow models serve`, MLServer and the floors, each
at every connection count (the gateway's points run in run.py's shared gateway, beside cold,
torch and alias)."""

from __future__ import annotations

from pathlib import Path

from harness import VENV_BIN, WORK, Run, ensure_mlserver, floor, guarded, measure, mlserver, post, row
from servers import Server, free_port


def mlflow_serve(run: Run, tracking_uri: str) -> Server:
    port = free_port()
    argv = [str(VENV_BIN / "mlflow"), "models", "serve", "-m", "models:/iris/1", "--env-manager", "local"]
    return Server(
        "mlflow models serve",
        [*argv, "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        port=port,
        ready_path="/ping",
        predict_path="/invocations",
        log=WORK / "mlflow-serve.log",
        env={"MLFLOW_TRACKING_URI": tracking_uri},
        cpus=run.server_cpus,
    )


def main_points(run: Run, server: Server, bodies: dict[str, Path]) -> None:
    """The main table's rows for one running server: every connection count."""
    post(server.url + server.predict_path, bodies["iris"].read_bytes())  # raises unless 2xx
    for connections in run.connections:
        result = measure(run, server, bodies["iris"], connections)
        run.main.append(row(server.name, connections, result, server.peak_rss_mb()))
        if not result.requests:
            point = f"the {run.duration:g} s point at {connections} conns"
            run.notes.append(f"{server.name} answered no request within {point} (wrk's timeout is 5 s).")
        run.log(f"{server.name} c={connections}: {result.req_s:.0f} req/s p50 {result.p50_ms:.2f} ms")


def serve_main(run: Run, server: Server, bodies: dict[str, Path]) -> None:
    with server:
        run.log(f"{server.name} ready in {server.ready_seconds:.1f} s")
        main_points(run, server, bodies)


def section(run: Run, tracking_uri: str, bodies: dict[str, Path], *, no_mlserver: bool) -> None:
    """The other servers' rows, one server at a time: `mlflow models serve`, MLServer (unless
    ``no_mlserver`` or it can't be had), the FastAPI floor and the bare floor."""
    guarded(run, "mlflow models serve", lambda: serve_main(run, mlflow_serve(run, tracking_uri), bodies))
    reason = "--no-mlserver" if no_mlserver else ensure_mlserver(run)
    if reason:
        run.notes.append(f"MLServer skipped: {reason}.")
    else:
        run.notes.append(
            "MLServer runs with `parallel_workers=0` (inference in its server process): its default worker "
            "pool does not start under uvloop 0.22+ in MLServer 1.7."
        )
        guarded(run, "MLServer", lambda: serve_main(run, mlserver(run, tracking_uri), bodies))
    guarded(run, "floor", lambda: serve_main(run, floor(run), bodies))
    guarded(run, "bare floor", lambda: serve_main(run, floor(run, bare=True), bodies))
