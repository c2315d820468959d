"""Real processes on loopback: an `mlflow server` and the gateway under uvicorn."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from tests.support.mlflow_db import new_mlflow_db
from tests.support.run_once import claim_run_dir
from tests.support.waiting import wait_until

BIN = Path(sys.executable).parent


# The ports free_port() hands out: below the kernel's ephemeral range (where bind(0) and every
# outgoing connection take their local ports), so that between free_port() and the moment the
# process given the port binds it, no connection of this run or any other program can be on it,
# and a connection to a port nothing listens on cannot connect to itself (TCP's simultaneous
# open, when the kernel picks the destination port as the local one).
_PORTS_FLOOR = 20000
_CHOICE = random.SystemRandom()  # not the random module's: a test's seed (pytest-randomly's) is every worker's


def _ephemeral_floor() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def _reserved(port: int) -> bool:
    """Claims ``port`` for the caller, once a run: a file of the run's shared folder, made
    only if absent, so that no two processes of the run (xdist workers, the programs they
    start) are ever given the same port, however close together they ask."""
    folder = claim_run_dir() / "ports"
    folder.mkdir(exist_ok=True)
    try:
        os.close(os.open(folder / str(port), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def _bindable(port: int) -> bool:
    """Nothing on the port now: no listener, no connection, no TIME_WAIT (no SO_REUSEADDR)."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A loopback port for a process a test starts (or one that nothing listens on): free now,
    never handed out before in this run, and outside the ephemeral range, so that nothing but
    the process it is meant for binds it meanwhile.

    It used to be bind(0)'s port, released at once: an ephemeral one, which the kernel could
    give, before the process bound it, to any outgoing connection (the tests poll their
    servers with a new connection every 50 ms) or to another worker's bind(0); the process
    then exited 'address already in use', and a test that counted on nothing listening there
    could find another test's server."""
    ceiling = _ephemeral_floor()
    if ceiling - _PORTS_FLOOR < 1000:  # an unusual range: the kernel's choice, as before
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])
    for _ in range(1000):
        port = _CHOICE.randrange(_PORTS_FLOOR, ceiling)
        if _reserved(port) and _bindable(port):
            return port
    raise RuntimeError(f"no free loopback port found in {_PORTS_FLOOR}-{ceiling - 1}")


# For the tests' polling of loopback processes. One client, because each httpx.get() builds a
# client and its SSL context (~20 ms of CPU) even for http://: polled every 50 ms, that took
# a third of a core from the process being waited for. No keep-alive, so that every request
# is a new connection, as with httpx.get(): spread over a server's workers by the kernel,
# and never a pooled connection to a process since killed.
LOOPBACK = httpx.Client(limits=httpx.Limits(max_keepalive_connections=0))


def _answers(url: str) -> bool:
    try:
        return LOOPBACK.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


class Process:
    """A subprocess in its own process group, stopped with everything it started."""

    def __init__(self, args: list[str], *, env: dict[str, str], log: Path, health_url: str, name: str) -> None:
        self.args = args
        self.env = env
        self.log = log
        self.health_url = health_url
        self.name = name
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, *, timeout: float = 90.0) -> None:
        self.launch()
        self.wait_up(timeout=timeout)

    def launch(self) -> None:
        """Start the process and return at once: :meth:`wait_up` waits for it to answer, so a
        test can do something else meanwhile."""
        with open(self.log, "ab") as out:
            self._proc = subprocess.Popen(
                self.args, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_up(self, *, timeout: float = 90.0) -> None:
        try:
            wait_until(self._up, timeout=timeout, what=f"{self.name} at {self.health_url}")
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"{self.name} did not start; its log:\n{self.log.read_text()[-4000:]}") from None

    def _up(self) -> bool:
        if self._proc is not None and self._proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self._proc.returncode}:\n{self.log.read_text()[-4000:]}")
        return _answers(self.health_url)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def rss_bytes(self) -> int:
        """The resident memory of the process and whatever it started (its process group), read
        from /proc (Linux)."""
        total = 0
        for entry in self._group():
            try:
                total += int((entry / "statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            except (OSError, ValueError):  # gone meanwhile
                continue
        return total

    def mapped_files(self) -> set[str]:
        """The files mapped into the process and whatever it started (the shared libraries of
        the modules imported there), from /proc (Linux)."""
        mapped: set[str] = set()
        for entry in self._group():
            try:
                fields = [line.split(None, 5) for line in (entry / "maps").read_text().splitlines()]
            except OSError:  # gone meanwhile
                continue
            mapped |= {parts[5] for parts in fields if len(parts) == 6}
        return mapped

    def environments(self) -> list[dict[str, str]]:
        """The environment each process of the group started with (/proc/<pid>/environ): what
        the gateway set in its own before starting its workers shows in theirs."""
        found = []
        for entry in self._group():
            try:
                raw = (entry / "environ").read_bytes()
            except OSError:  # gone meanwhile
                continue
            pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
            found.append({key.decode(errors="replace"): value.decode(errors="replace") for key, value in pairs})
        return found

    def _group(self) -> list[Path]:
        """/proc's entries of the processes in this one's process group."""
        assert self._proc is not None
        found = []
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and os.getpgid(int(entry.name)) == self._proc.pid:
                    found.append(entry)
            except OSError:  # gone meanwhile
                continue
        return found

    def send(self, sig: int) -> None:
        """Send ``sig`` to the process's group and return at once (``stop`` waits for the end)."""
        assert self._proc is not None
        os.killpg(self._proc.pid, sig)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self._proc is None:
            return
        try:
            os.killpg(self._proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            self._proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait(timeout=10)
        self._proc = None


def mlflow_server(
    root: Path,
    *,
    port: int | None = None,
    extra_env: dict[str, str] | None = None,
    artifacts: list[str] | None = None,
) -> Process:
    """A real tracking server with a sqlite backend; artifacts proxied to ``root`` unless
    ``artifacts`` gives other artifact options (an S3 destination, say).

    Its database is new (a copy of one migrated once: the server would spend seconds
    migrating its own) unless ``root`` holds one already (a server started again).
    MLflow's job runner is off: it starts eight more processes that each import MLflow (an
    idle server's biggest start-up cost on 2 cores, and its slowest to stop) to run jobs
    (trace and judge work) that no test here uses; the registry, artifacts and webhooks
    are served without it."""
    port = port or free_port()
    root.mkdir(parents=True, exist_ok=True)
    database = root / "mlflow.db"
    backend = new_mlflow_db(database) if not database.exists() else f"sqlite:///{database}"
    args = [
        str(BIN / "mlflow"),
        "server",
        "--backend-store-uri",
        backend,
        *(artifacts or ["--artifacts-destination", str(root / "artifacts")]),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(extra_env or {})}
    env.pop("MLFLOW_TRACKING_URI", None)
    return Process(
        args, env=env, log=root / "server.log", health_url=f"http://127.0.0.1:{port}/health", name="mlflow server"
    )


# The format sklearn versions are logged in by tests that serve them from `registry-gateway serve`
# processes. MLflow 3's default, skops, imports every scikit-learn estimator the first time a
# process loads one (its list of trusted types is sklearn.utils.all_estimators()): about 3 s of
# CPU more per gateway process than cloudpickle, paid again by each of the dozen processes
# these tests start. What they check does not depend on the format; skops versions are served
# and checked in process (tests/conformance and the shared session registries).
SERVED_SKLEARN_FORMAT = "cloudpickle"


def gateway_server(
    *, tracking_uri: str, workdir: Path, env: dict[str, str] | None = None, workers: int = 1
) -> tuple[Process, str]:
    """`registry-gateway serve` as a user runs it; returns the process and its base URL."""
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    full_env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": tracking_uri,
        "GATEWAY_ARTIFACT_CACHE_DIR": str(workdir / "cache"),
        "GATEWAY_DATABASE_URL": f"sqlite:///{workdir / 'state.db'}",
        # Stopped at once on SIGTERM (a test stops dozens of gateways); the drain's own tests
        # set a delay of their own.
        "GATEWAY_DRAIN_SECONDS": "0",
        **(env or {}),
    }
    args = [str(BIN / "registry-gateway"), "serve", "--port", str(port), "--workers", str(workers)]
    base = f"http://127.0.0.1:{port}"
    process = Process(
        args, env=full_env, log=workdir / "gateway.log", health_url=f"{base}/health/ready", name="gateway"
    )
    return process, base


def model_counters(base: str, model: str, *metrics: str) -> list[float]:
    """Each counter's series for `model` summed, from one scrape of a gateway's /metrics (one:
    a request between two scrapes would be counted in one and not in the other)."""
    lines = LOOPBACK.get(f"{base}/metrics", timeout=10).text.splitlines()
    return [
        sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(f"{m}{{") and f'model="{model}"' in line)
        for m in metrics
    ]


def assert_warmed_before_served(base: str, model: str, what: str) -> None:
    """A gateway just started held `model` before any request for it: it was loaded (once a
    version), and every request found its version loaded (a cache hit; a request that joined
    the warm-up's load under way is one too), so the loads were the warm-up's, not a request's."""
    loads, hits, requests = model_counters(
        base, model, "gateway_cache_misses_total", "gateway_cache_hits_total", "gateway_requests_total"
    )
    assert loads >= 1 and hits >= requests, (
        f"{what}: {model} loaded {loads:g} times; {hits:g} requests found it loaded, of {requests:g}"
    )
