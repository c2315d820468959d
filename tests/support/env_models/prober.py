"""A model from code (nothing pickled) that tries, from inside ``predict``, to get out of its
worker: each row of its ``probe`` column names one attempt, and the answer says what happened.
Logged by tests/gateway/runtimes/test_sandbox.py; served with and without the sandbox.

- ``env:NAME``: the variable as the worker sees it, or ``<absent>``;
- ``parent-env:NAME``: the same, read from the gateway's ``/proc/<ppid>/environ``;
- ``read:PATH``: ``read`` if the file could be read, else the error;
- ``list:PATH``: the folder's entries, or the error;
- ``connect:HOST:PORT``: ``connected``, or the error (``unix:PATH``: a Unix socket's);
- ``fork:N``: how many of N child processes started (each killed and reaped at once);
- ``alloc:MiB``: allocates and touches that much, then ``allocated`` (a MemoryError is raised);
- ``spin:SECONDS``: burns that much CPU time, then ``spun``;
- ``signal-parent``: sends signal 0 to the gateway;
- ``prlimit:PID``, ``renice:PID``, ``affinity:PID``, ``scheduler:PID`` (``parent``: the gateway;
  ``0``: the worker itself): set that process's RLIMIT_CORE, nice value, CPU affinity or
  scheduling policy to what it is already (``set``; harmless where it succeeds), or the error;
- ``memfd:MiB``: writes that much into a memfd, then ``held N MiB`` (the memfd is closed);
- ``memfd-secret``: creates a ``memfd_secret`` (memory RLIMIT_AS does not count either), then
  ``created`` (closed) or the error;
- ``fallocate:MiB,MiB...``: one file each in ``TMPDIR`` with ``posix_fallocate``, then
  ``allocated N`` or ``allocated N: <error>`` (the files are removed);
- ``files:N``: creates N empty files in ``TMPDIR``, then ``created N`` or ``created K: <error>``
  (they are removed);
- ``shm:``: creates a file in ``/dev/shm`` (as ``shm_open`` does), then ``created`` (removed).
- ``metadata``: chmod 0666, utime to the epoch and a ``user.`` extended attribute on its own
  model file (this file, as loaded from its version's folder): what succeeded, or each error;
- ``pid``: its worker's process id; ``models``: how many loaded models that process holds (any
  model's code could reach each one's predict, inputs and outputs);
- ``pth:KEY``: what the hostile ``.pth`` file of tests/support/pth_attack found at start, if installed.
"""

import os
import resource
import signal
import socket
import time

import mlflow
from mlflow.pyfunc import PythonModel


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {getattr(exc, 'strerror', None) or exc}"


def _change_metadata(path: str) -> list[str]:
    done = []
    for name, change in (
        ("chmod", lambda: os.chmod(path, 0o666)),
        ("utime", lambda: os.utime(path, (0, 0))),
        ("setxattr", lambda: os.setxattr(path, "user.gateway-test", b"changed")),
    ):
        try:
            change()
            done.append(f"{name} changed")
        except OSError as exc:
            done.append(f"{name}: {exc.strerror}")
    return done


def probe(what: str) -> str:
    kind, _, arg = what.partition(":")
    try:
        if kind == "env":
            return os.environ.get(arg, "<absent>")
        if kind == "parent-env":
            with open(f"/proc/{os.getppid()}/environ", "rb") as f:
                pairs = dict(p.split(b"=", 1) for p in f.read().split(b"\0") if b"=" in p)
            return pairs.get(arg.encode(), b"<absent>").decode()
        if kind == "read":
            with open(arg, "rb") as f:
                f.read(16)
            return "read"
        if kind == "list":
            return ",".join(sorted(os.listdir(arg)))
        if kind == "connect":
            host, port = arg.rsplit(":", 1)
            with socket.create_connection((host, int(port)), timeout=5):
                return "connected"
        if kind == "unix":
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(5)
                s.connect(arg)
                return "connected"
        if kind == "fork":
            children = []
            try:
                for _ in range(int(arg)):
                    pid = os.fork()
                    if pid == 0:
                        time.sleep(60)
                        os._exit(0)
                    children.append(pid)
            except OSError:
                pass
            finally:
                for pid in children:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
            return f"started {len(children)}"
        if kind == "alloc":
            import numpy as np

            block = np.ones(int(arg) * 2**20, dtype=np.uint8)
            return "allocated" if block[-1] == 1 else "?"
        if kind == "spin":
            end = time.process_time() + float(arg)
            while time.process_time() < end:
                pass
            return "spun"
        if kind == "signal-parent":
            os.kill(os.getppid(), 0)
            return "signalled"
        if kind in ("prlimit", "renice", "affinity", "scheduler"):
            return _meddle(kind, os.getppid() if arg == "parent" else int(arg))
        if kind == "memfd":
            fd = os.memfd_create("probe")
            try:
                for _ in range(int(arg)):
                    os.write(fd, b"x" * 2**20)
            finally:
                os.close(fd)
            return f"held {arg} MiB"
        if kind == "memfd-secret":
            return _memfd_secret()
        if kind == "files":
            return _files(int(arg))
        if kind == "fallocate":
            return _fallocate([int(size) for size in arg.split(",")])
        if kind == "shm":
            path = f"/dev/shm/probe-{os.getpid()}"
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600))
            os.unlink(path)
            return "created"
        if kind == "metadata":
            return ", ".join(_change_metadata(__file__))
        if kind == "pid":
            return str(os.getpid())
        if kind == "models":
            import gc

            return str(sum(isinstance(o, mlflow.pyfunc.PyFuncModel) for o in gc.get_objects()))
        if kind == "pth":
            import gateway_test_pth

            return str(gateway_test_pth.RESULTS.get(arg, "<not tried>"))
        if kind == "":
            return ""  # the warm-up's row
        return f"unknown probe {what!r}"
    except MemoryError:  # as a model that runs out would: the worker's to handle
        raise
    except Exception as exc:  # what stopped it is the answer
        return _error(exc)


def _meddle(kind: str, pid: int) -> str:
    """Set another process's (or its own, pid 0) setting to the value it has: proves the call
    would have been allowed, changes nothing."""
    if kind == "prlimit":
        resource.prlimit(pid, resource.RLIMIT_CORE, resource.prlimit(pid, resource.RLIMIT_CORE))
    elif kind == "renice":
        os.setpriority(os.PRIO_PROCESS, pid, os.getpriority(os.PRIO_PROCESS, pid))
    elif kind == "affinity":
        os.sched_setaffinity(pid, os.sched_getaffinity(pid))
    else:
        os.sched_setscheduler(pid, os.sched_getscheduler(pid), os.sched_getparam(pid))
    return "set"


def _memfd_secret() -> str:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    fd = libc.syscall(447, 0)  # memfd_secret(0), x86-64's number: no Python wrapper
    if fd < 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))
    os.close(fd)
    return "created"


def _files(count: int) -> str:
    folder = os.path.join(os.environ.get("TMPDIR") or "/tmp", f"files-{os.getpid()}")
    os.mkdir(folder)
    made = 0
    try:
        for made in range(count):
            os.close(os.open(os.path.join(folder, str(made)), os.O_CREAT | os.O_WRONLY, 0o600))
        made = count
        return f"created {count}"
    except OSError as exc:
        return f"created {made}: {_error(exc)}"
    finally:
        for n in range(made):
            os.unlink(os.path.join(folder, str(n)))
        os.rmdir(folder)


def _fallocate(sizes: list[int]) -> str:
    folder = os.environ.get("TMPDIR") or "/tmp"
    paths = []
    try:
        for size in sizes:
            path = os.path.join(folder, f"probe-{os.getpid()}-{len(paths)}")
            paths.append(path)
            fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
            try:
                os.posix_fallocate(fd, 0, size * 2**20)
            except OSError as exc:
                return f"allocated {len(paths) - 1}: {_error(exc)}"
            finally:
                os.close(fd)
        return f"allocated {len(paths)}"
    finally:
        for path in paths:
            os.unlink(path)


class Prober(PythonModel):
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        return [probe(str(p)) for p in model_input["probe"]]


mlflow.models.set_model(Prober())
