"""A fleet on this host, on loopback: one `--role sync`, gateways with their own replica ids and
artifact caches, and HAProxy from deploy/haproxy/haproxy.cfg with its servers moved to loopback.

    MLFLOW_TRACKING_URI=... GATEWAY_DATABASE_URL=postgresql+psycopg://... \\
        .venv/bin/python deploy/local_fleet.py          # or: make fleet

Needs PostgreSQL (the state database, created beforehand) and `haproxy` on the host. It runs
`registry-gateway db upgrade`, starts the sync, the gateways and HAProxy, says where each
listens once all are ready, and stops them all on Ctrl-C or SIGTERM (the gateways drain
first). Ports, the number of gateways and the directory of logs and caches are options
(`--help`); the admin token is GATEWAY_ADMIN_TOKEN, or one made up and printed. docs/operations.md,
"Running at scale", describes it.

:func:`haproxy_on_loopback` is the rewrite of the shipped file, shared with the tests that run
it (tests/deploy).
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import FrameType

HERE = Path(__file__).resolve().parent
HAPROXY_CONFIG = HERE / "haproxy" / "haproxy.cfg"
SERVER_LINE = re.compile(
    r"^(?P<lead>\s*)server\s+(?P<name>\S+)\s+(?P<host>[\w.-]+):(?P<port>\d+)(?P<options>.*)$", re.M
)
SHIPPED_HTTP, SHIPPED_GRPC, SHIPPED_SYNC = "8000", "8001", "sync"


def haproxy_on_loopback(
    text: str,
    *,
    http: int,
    grpc: int,
    gateways: Mapping[str, tuple[int, int]],
    sync: int,
    check_interval: str | None = None,
) -> str:
    """deploy/haproxy/haproxy.cfg with its listeners on 127.0.0.1:`http` and :`grpc`, each
    gateway's servers (HTTP, gRPC, and their health checks' `port`) on the loopback ports
    `gateways` gives it (name -> (http, grpc)), the sync's on `sync`, and the servers of
    gateways not named dropped. `check_interval` (e.g. "100ms") replaces every `inter`."""
    text, binds = re.subn(r"^(\s*bind\s+):8080\b", rf"\g<1>127.0.0.1:{http}", text, flags=re.M)
    text, grpc_binds = re.subn(r"^(\s*bind\s+):8081\b", rf"\g<1>127.0.0.1:{grpc}", text, flags=re.M)
    if (binds, grpc_binds) != (1, 1):
        raise ValueError("the HTTP and gRPC listeners (:8080, :8081) are not as shipped")
    found: set[str] = set()

    def server(match: re.Match[str]) -> str:
        name = match["name"]
        if name == SHIPPED_SYNC:
            return f"{match['lead']}server {name} 127.0.0.1:{sync}{match['options']}"
        if name not in gateways:
            return ""
        found.add(name)
        http_port, grpc_port = gateways[name]
        port = grpc_port if match["port"] == SHIPPED_GRPC else http_port
        options = re.sub(rf"\bport {SHIPPED_HTTP}\b", f"port {http_port}", match["options"])
        return f"{match['lead']}server {name} 127.0.0.1:{port}{options}"

    text = SERVER_LINE.sub(server, text)
    if found != set(gateways):
        raise ValueError(f"no server lines for {sorted(set(gateways) - found)} in the shipped file")
    if check_interval is not None:
        text = re.sub(r"\binter\s+\d+m?s\b", f"inter {check_interval}", text)
    return text


class Fleet:
    """The processes of a local fleet, started in order and stopped in reverse."""

    def __init__(self, args: argparse.Namespace, environ: Mapping[str, str]) -> None:
        self.args = args
        self.root = Path(args.dir).resolve()
        self.environ = dict(environ)
        self.processes: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.gateways = {
            f"gateway-{n}": (args.gateway_port + 10 * (n - 1), args.gateway_grpc_port + 10 * (n - 1))
            for n in range(1, args.gateways + 1)
        }

    def _start(self, name: str, command: list[str], env: Mapping[str, str]) -> None:
        log = (self.root / f"{name}.log").open("ab")
        process = subprocess.Popen(command, env={**self.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
        self.processes.append((name, process))

    def _wait_ready(self, name: str, url: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        process = dict(self.processes)[name]
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SystemExit(f"{name} exited {process.returncode}: see {self.root / (name + '.log')}")
            try:
                with urllib.request.urlopen(url, timeout=2) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise SystemExit(f"{name} not ready after {timeout:.0f} s: see {self.root / (name + '.log')}")

    def start(self) -> None:
        args, cli = self.args, [str(Path(sys.executable).parent / "registry-gateway")]
        self.root.mkdir(parents=True, exist_ok=True)
        subprocess.run([*cli, "db", "upgrade"], env=self.environ, check=True)
        self._start("sync", [*cli, "serve", "--role", "sync", "--port", str(args.sync_port)], {})
        self._wait_ready("sync", f"http://127.0.0.1:{args.sync_port}/health/ready", args.timeout)
        for name, (http, grpc) in self.gateways.items():
            env = {
                "GATEWAY_REPLICA_ID": name,  # its history (what it served) is kept under this name
                "GATEWAY_ARTIFACT_CACHE_DIR": str(self.root / name / "artifact-cache"),
            }
            self._start(name, [*cli, "serve", "--role", "gateway", "--port", str(http), "--grpc-port", str(grpc)], env)
        for name, (http, _) in self.gateways.items():
            self._wait_ready(name, f"http://127.0.0.1:{http}/health/ready", args.timeout)
        config = self.root / "haproxy.cfg"
        config.write_text(
            haproxy_on_loopback(
                HAPROXY_CONFIG.read_text(),
                http=args.http_port,
                grpc=args.grpc_port,
                gateways=self.gateways,
                sync=args.sync_port,
            )
        )
        self._start("haproxy", [args.haproxy, "-db", "-f", str(config)], {})
        self._wait_ready("haproxy", f"http://127.0.0.1:{args.http_port}/health/ready", args.timeout)

    def stop(self) -> None:
        """HAProxy first, then the gateways (each drains) and the sync: SIGTERM, then SIGKILL."""
        for name, process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=self.args.stop_timeout)
                except subprocess.TimeoutExpired:
                    print(f"{name} did not stop in {self.args.stop_timeout} s: killed", file=sys.stderr)
                    process.kill()
                    process.wait()
        self.processes.clear()


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--gateways", type=int, default=2, help="how many `--role gateway` replicas (at most 3)")
    parser.add_argument("--http-port", type=int, default=8080, help="HAProxy's HTTP port")
    parser.add_argument("--grpc-port", type=int, default=8081, help="HAProxy's gRPC port")
    parser.add_argument("--sync-port", type=int, default=8001, help="the sync process's port")
    parser.add_argument(
        "--gateway-port", type=int, default=8000, help="gateway-1's HTTP port; gateway-N's 10*(N-1) more"
    )
    parser.add_argument("--gateway-grpc-port", type=int, default=8100, help="gateway-1's gRPC port; likewise")
    parser.add_argument("--dir", default="fleet", help="logs, HAProxy's file and each gateway's artifact cache")
    parser.add_argument("--haproxy", default=shutil.which("haproxy") or "/usr/sbin/haproxy", help="the binary")
    parser.add_argument("--timeout", type=float, default=120, help="seconds each process gets to be ready")
    parser.add_argument("--stop-timeout", type=float, default=60, help="seconds each process gets to stop")
    args = parser.parse_args(argv)
    if not 1 <= args.gateways <= 3:
        parser.error("--gateways: 1 to 3 (the shipped file has three gateways' server lines)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    environ = dict(os.environ)
    for variable in ("MLFLOW_TRACKING_URI", "GATEWAY_DATABASE_URL"):
        if not environ.get(variable):
            print(f"{variable} is not set: the registry to serve and the PostgreSQL state database", file=sys.stderr)
            return 2
    if not environ["GATEWAY_DATABASE_URL"].startswith("postgresql"):
        print(
            "GATEWAY_DATABASE_URL: a fleet shares a PostgreSQL database (postgresql+psycopg://...)",
            file=sys.stderr,
        )
        return 2
    if not os.access(args.haproxy, os.X_OK):
        print(f"no haproxy at {args.haproxy} (apt-get install haproxy, or --haproxy)", file=sys.stderr)
        return 2
    if not environ.get("GATEWAY_ADMIN_TOKEN"):
        environ["GATEWAY_ADMIN_TOKEN"] = secrets.token_urlsafe(16)
        print(f"GATEWAY_ADMIN_TOKEN (for POST /admin/sync): {environ['GATEWAY_ADMIN_TOKEN']}")
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    fleet = Fleet(args, environ)
    try:
        fleet.start()
        print(f"ready: HTTP http://127.0.0.1:{args.http_port}, gRPC 127.0.0.1:{args.grpc_port} (HAProxy)", flush=True)
        print(f"  sync http://127.0.0.1:{args.sync_port}", flush=True)
        for name, (http, grpc) in fleet.gateways.items():
            print(f"  {name} http://127.0.0.1:{http}, gRPC 127.0.0.1:{grpc}", flush=True)
        print(f"logs in {fleet.root}; Ctrl-C stops the fleet", flush=True)
        while not stopping:
            for name, process in fleet.processes:
                if process.poll() is not None:
                    print(f"{name} exited {process.returncode}: stopping the fleet", file=sys.stderr)
                    return 1
            time.sleep(0.5)
        return 0
    finally:
        fleet.stop()
        print("stopped", flush=True)


if __name__ == "__main__":
    sys.exit(main())
