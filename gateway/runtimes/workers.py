"""Worker processes, seen from the gateway: start one on an environment's interpreter, talk to
it, and notice when it dies.

A worker is ``<base python> -I -S -B gateway/runtimes/worker/server.py --environment <env>``: the
interpreter the environment was built on (never ``<env>/bin/python``: CPython reads
``bin/python._pth`` and ``pyvenv.cfg`` beside it before any code of the worker's runs, and a
requirement's wheel can put files there) with the environment's packages, none of the
gateway's (``-I`` ignores PYTHON* variables and the user's site-packages; ``-S`` leaves ``site``
to the worker, which runs it on the environment once its sandbox is on, so no ``.pth`` file of
the environment runs before: issue 48). It talks over one end of
a socketpair it inherits, and exits when the gateway closes the other end or its parent is
gone (it watches its parent's pid: a SIGKILLed gateway leaves no worker behind).

A worker runs a model's code, which can write to its socket and its stdout as it likes: the
gateway reads no more of an answer than ``max_answer_bytes`` (a frame announcing more is
refused before any of it is read), no more of an output line than ``max_line_bytes`` (the rest
of the line is dropped, and the log says how much), and a worker whose answer breaks the wire
protocol (too large, malformed, an array whose bytes do not match its dtype and shape) is
killed: its callers get 503 and it is started again, as for any dead worker.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.runtimes.confinement import rss_bytes
from gateway.runtimes.environments import worker_interpreter
from gateway.runtimes.sandbox import EXIT_OVER_MEMORY
from gateway.runtimes.worker import wire

if TYPE_CHECKING:
    from gateway.runtimes.sandbox import WorkerSandbox

log = logging.getLogger(__name__)
output_log = logging.getLogger("gateway.worker")  # what workers write on their stdout and stderr

SERVER = Path(__file__).parent / "worker" / "server.py"
_HELLO_TIMEOUT = 60.0  # seconds a new worker has to import MLflow and answer
_STOP_GRACE = 2.0
MAX_LINE_BYTES = 64 * 1024  # GATEWAY_SANDBOX_LOG_LINE_BYTES' default


class WorkerLost(Exception):
    """The worker process died (or was stopped) with this call unanswered."""


class WorkerProcess:
    """One worker process and the socket to it. Calls are serialized: the worker answers one
    message at a time, and every caller (loader, inference and lifecycle threads) waits its
    turn on the lock."""

    def __init__(
        self,
        python: Path,
        *,
        label: str,
        on_exit: Callable[[WorkerProcess, int], None],
        sandbox: WorkerSandbox | None = None,
        max_answer_bytes: int | None = None,
        max_line_bytes: int = MAX_LINE_BYTES,
    ) -> None:
        self.python = python
        self.max_answer_bytes = max_answer_bytes  # None: no bound on a frame from the worker
        self.max_line_bytes = max_line_bytes
        self.sandbox = sandbox  # None: the gateway's environment, no sandbox (GATEWAY_SANDBOX=off)
        self.over_limit: str | None = None  # why the sandbox's watchdog killed it
        self.label = label
        self._on_exit = on_exit
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopping = False
        self.started_at = 0.0
        self.hello: dict[str, Any] = {}  # what it said when it started: pid, Python, MLflow
        self.rss = 0  # bytes, as /proc last showed it (after starting, each load and unload)
        self.baseline = 0  # bytes, its RSS at start: its own, before any version (counted apart from them)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def busy(self) -> bool:
        """Answering a call right now (another caller would wait for it)."""
        return self._lock.locked()

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None and not self._stopping

    def start(self) -> dict[str, Any]:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        if self.sandbox is not None:  # an allow list, and a policy it applies to itself before any load
            env = self.sandbox.environment(self.python)
            sandboxed = ["--sandbox", self.sandbox.worker_policy()]
        else:
            env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
            sandboxed = []
        try:
            self._proc = subprocess.Popen(
                [
                    str(worker_interpreter(self.python)),  # not the environment's: see the module's docstring
                    "-I",  # no PYTHON* variable, no user site, not even its own folder on the path
                    "-S",  # no site: the environment's .pth files run only once its sandbox is on
                    "-B",
                    str(SERVER),
                    "--fd",
                    str(theirs.fileno()),
                    "--parent-pid",
                    str(os.getpid()),
                    "--environment",
                    str(self.python.parent.parent),
                    *sandboxed,
                ],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,  # relayed through logging (_relay): JSON logs stay JSON
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # a Ctrl-C meant for the gateway is the gateway's to pass on
            )
        finally:
            theirs.close()
        self._sock = ours
        self.started_at = time.monotonic()
        threading.Thread(target=self._watch, name=f"worker-watch {self.label}", daemon=True).start()
        threading.Thread(target=self._relay, name=f"worker-output {self.label}", daemon=True).start()
        ours.settimeout(_HELLO_TIMEOUT)
        try:
            confined = self._confined()
            answer, _ = self.call({"op": "hello"}, [])
        finally:
            ours.settimeout(None)
        self.hello = answer
        self.rss = self.baseline = self.measured_rss(int(answer.get("rss", 0)))
        if self.sandbox is not None:
            try:
                # GATEWAY_SANDBOX=required: a layer missing (or contradicted by /proc) stops it here
                self.sandbox.accept(confined, answer, self.pid or 0)
            except Exception:
                self.stop()
                raise
        log.info(
            "worker %s started: pid %s, Python %s, MLflow %s",
            self.label,
            self.pid,
            answer.get("python"),
            answer.get("mlflow"),
        )
        return answer

    def _confined(self) -> dict[str, Any] | None:
        """The worker's first message, unasked: what its sandbox enforced, sent before any code
        of its environment ran (worker/sandbox.py's ``announce``)."""
        with self._lock:
            assert self._sock is not None
            try:
                first, _ = wire.receive(self._sock)
            except (OSError, wire.Closed, wire.WireError, ValueError) as exc:
                why = _why_gone(self._proc) or type(exc).__name__
                raise WorkerLost(f"worker {self.label} (pid {self.pid}) is gone: {why}") from exc
        if first.get("op") != "confined":
            raise WorkerLost(f"worker {self.label} (pid {self.pid}) began with {first.get('op')!r}, not 'confined'")
        sandbox = first.get("sandbox")
        return sandbox if isinstance(sandbox, dict) else None

    def measured_rss(self, reported: int = 0) -> int:
        """Its resident memory as the kernel counts it (/proc/<pid>/status), never the figure
        the worker sends, which a model's code could change; ``reported`` where there is no /proc."""
        measured = rss_bytes(self.pid)
        return measured if measured is not None else reported

    def _watch(self) -> None:
        proc = self._proc
        assert proc is not None
        code = proc.wait()
        sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # a call waiting on it returns at once
            except OSError:
                pass
        if not self._stopping:
            why = self.over_limit or _exit_text(code)
            log.warning("worker %s (pid %s) exited with %s", self.label, proc.pid, why)
        self._on_exit(self, code)

    def _relay(self) -> None:
        """What the worker writes (Python's warnings, a model's prints, a failed load's
        traceback) goes out through logging, a WARNING per line naming the worker; a line longer
        than ``max_line_bytes`` is cut there, and the rest of it read and dropped."""
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        extra = {"worker": self.label, "worker_pid": proc.pid}
        limit = self.max_line_bytes
        with proc.stdout:
            while line := proc.stdout.readline(limit + 1):
                dropped = 0
                if len(line) > limit and not line.endswith(b"\n"):  # cut: the rest of it goes
                    line, dropped = line[:limit], len(line) - limit
                    while rest := proc.stdout.readline(limit):
                        dropped += len(rest.rstrip(b"\n"))
                        if rest.endswith(b"\n"):
                            break
                text = line.decode("utf-8", errors="replace").rstrip()
                if dropped:
                    text += f" [... {dropped} more bytes of this line dropped: GATEWAY_SANDBOX_LOG_LINE_BYTES={limit}]"
                if text:
                    output_log.warning("worker %s: %s", self.label, text, extra=extra)

    def call(self, header: dict[str, Any], buffers: list[Any]) -> tuple[dict[str, Any], list[memoryview]]:
        with self._lock:
            sock = self._sock
            if sock is None or self._stopping:
                raise WorkerLost(f"worker {self.label} is not running")
            watching = self.sandbox.watching(self, header) if self.sandbox is not None else contextlib.nullcontext()
            try:
                with watching:
                    wire.send(sock, header, buffers)
                    answer, out = wire.receive(sock, self.max_answer_bytes)
                if not isinstance(answer, dict):
                    raise wire.WireError(f"an answer that is not an object: {type(answer).__name__}")
                return answer, out
            except (OSError, wire.Closed) as exc:
                why = self.over_limit or (None if self._stopping else _why_gone(self._proc)) or type(exc).__name__
                raise WorkerLost(f"worker {self.label} (pid {self.pid}) is gone: {why}") from exc
            except Exception as exc:  # what it sent cannot be trusted, nor what it sends next
                if self._stopping:
                    raise WorkerLost(f"worker {self.label} (pid {self.pid}) is gone: stopped") from exc
                raise self.condemn(f"its answer broke the wire protocol ({type(exc).__name__}: {exc})") from exc

    def decode(self, node: Any, buffers: list[memoryview]) -> Any:
        """A value the worker answered; one that makes no sense (an array its bytes do not
        fill, a dtype that is not plain data, a malformed node) condemns the worker."""
        try:
            return wire.decode(node, buffers)
        except Exception as exc:
            raise self.condemn(f"its answer broke the wire protocol ({type(exc).__name__}: {exc})") from exc

    def condemn(self, why: str) -> WorkerLost:
        """Kill the worker for ``why`` (it is started again, as after any death), and the
        error its caller raises."""
        self.over_limit = why
        log.error("worker %s (pid %s) killed: %s", self.label, self.pid, why)
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGKILL)
        return WorkerLost(f"worker {self.label} (pid {self.pid}) is gone: {why}")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a grace period; closes the socket."""
        self._stopping = True
        proc, sock = self._proc, self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # the worker reads EOF and exits by itself
            except OSError:
                pass
        if proc is not None and proc.poll() is None:
            try:
                proc.wait(timeout=_STOP_GRACE)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
        if sock is not None:
            sock.close()


def _why_gone(proc: subprocess.Popen[bytes] | None) -> str | None:
    """A sandboxed worker past its memory limit exits by itself: say so to the caller."""
    try:
        code = proc.wait(timeout=1.0) if proc is not None else None
    except subprocess.TimeoutExpired:
        return None
    return _exit_text(code) if code == EXIT_OVER_MEMORY else None


def _exit_text(code: int) -> str:
    if code == EXIT_OVER_MEMORY:
        return "status 86: over its memory limit (GATEWAY_SANDBOX_MEMORY_MB)"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"status {code}"
