"""Servers under test as subprocesses: start, wait until ready, measure memory, stop."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def _tree(pid: int) -> list[int]:
    """A process and its descendants."""
    children, found, stack = _children(), [], [pid]
    while stack:
        current = stack.pop()
        found.append(current)
        stack.extend(children.get(current, []))
    return found


def tree_peak_rss_mb(pid: int) -> float:
    """Sum of VmHWM (peak resident set) over a process and its descendants, in MiB.

    Each process's own peak, summed: an upper bound on the tree's peak at any one moment.
    """
    total_kb = 0
    for each in _tree(pid):
        try:
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total_kb += int(line.split()[1])
        except OSError:
            pass  # gone meanwhile
    return total_kb / 1024


def tree_rss_mb(pid: int) -> float:
    """Sum of VmRSS (resident set now) over a process and its descendants, in MiB."""
    total_kb = 0
    for each in _tree(pid):
        try:
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
        except OSError:
            pass  # gone meanwhile
    return total_kb / 1024


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by a process and its descendants."""
    ticks = 0
    for each in _tree(pid):
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return ticks / os.sysconf("SC_CLK_TCK")


def thread_cpu_seconds(pid: int) -> dict[int, float]:
    """User + system CPU seconds used so far by each thread (by its id) of a process and its
    descendants. Python does not name its threads for the OS: ``thread_names`` does."""
    by_thread: dict[int, float] = {}
    for each in _tree(pid):
        for task in Path(f"/proc/{each}/task").glob("*"):
            try:
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # gone meanwhile
            by_thread[int(task.name)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return by_thread


def thread_names(pid: int) -> dict[int, str]:
    """Python's names of a process's threads (``MainThread``, ``OtelBatchSpanProcessor``...), by
    thread id, read with ``py-spy dump``; empty where py-spy is missing or may not attach."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    names: dict[int, str] = {}
    for each in _tree(pid):
        try:
            dumped = subprocess.run([spy, "dump", "--pid", str(each)], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        for match in re.finditer(r'^Thread (\d+) \([^)]*\): "(.*)"$', dumped.stdout, re.MULTILINE):
            names[int(match[1])] = match[2]
    return names


class Server:
    """One server process (and its children) in a session of its own, optionally pinned to CPUs."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        *,
        port: int,
        ready_path: str,
        predict_path: str,
        log: Path,
        env: dict[str, str] | None = None,
        cpus: str | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = ["taskset", "-c", cpus, *argv] if cpus else argv
        self.port = port
        self.ready_path = ready_path
        self.predict_path = predict_path
        self.log = log
        # The server's own venv first on PATH: `mlflow models serve` execs `uvicorn` by name.
        path = f"{Path(argv[0]).parent}:{os.environ.get('PATH', '')}"
        self.env = {**os.environ, "PATH": path, **(env or {})}
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None
        self.grpc_port: int | None = None  # where the server also speaks gRPC, if it does
        self.ready_seconds = float("nan")
        self._launched = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180) -> Server:
        self.launch()
        return self.wait_ready(timeout)

    def launch(self) -> None:
        """Start the process and return at once (``wait_ready`` waits for it)."""
        self._launched = time.perf_counter()
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.argv, env=self.env, cwd=self.cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_ready(self, timeout: float = 180) -> Server:
        """Wait until the ready path answers 200; ``ready_seconds`` counts from ``launch``."""
        assert self.process is not None, "launch() first"
        started = self._launched
        while time.perf_counter() - started < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}; see {self.log}")
            try:
                with urllib.request.urlopen(self.url + self.ready_path, timeout=2) as answer:
                    if answer.status == 200:
                        self.ready_seconds = time.perf_counter() - started
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s; see {self.log}")

    def seconds_since_launch(self) -> float:
        return time.perf_counter() - self._launched

    def rss_mb(self) -> float:
        return tree_rss_mb(self.process.pid) if self.process else float("nan")

    def peak_rss_mb(self) -> float:
        return tree_peak_rss_mb(self.process.pid) if self.process else float("nan")

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(self.process.pid) if self.process else float("nan")

    def thread_cpu_seconds(self) -> dict[int, float]:
        return thread_cpu_seconds(self.process.pid) if self.process else {}

    def thread_names(self) -> dict[int, str]:
        return thread_names(self.process.pid) if self.process else {}

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def fresh_gateway_state(state: Path, tracking_uri: str) -> dict[str, str]:
    """An empty directory for a gateway's state database and artifact cache, and the
    variables that point the gateway at them and at the registry."""
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    return {
        "MLFLOW_TRACKING_URI": tracking_uri,
        "GATEWAY_DATABASE_URL": f"sqlite:///{state / 'state.db'}",
        "GATEWAY_ARTIFACT_CACHE_DIR": str(state / "artifacts"),
        "GATEWAY_PREDICTION_CACHE": "off",
    }


def gateway_server(
    name: str,
    venv_bin: Path,
    *,
    port: int,
    predict_path: str,
    log: Path,
    env: dict[str, str],
    cpus: str | None = None,
    args: Sequence[str] = (),
) -> Server:
    """``registry-gateway serve`` on a loopback port, ready when /health/ready says so."""
    return Server(
        name,
        [str(venv_bin / "registry-gateway"), "serve", "--host", "127.0.0.1", "--port", str(port), *args],
        port=port,
        ready_path="/health/ready",
        predict_path=predict_path,
        log=log,
        env={"GATEWAY_DRAIN_SECONDS": "0", **env},  # stopped at once between the bench's sections
        cpus=cpus,
    )
