"""The sandbox of isolated workers, seen from the gateway: what a worker may see, reach and use.

Whoever can register a model version can run code when it loads (pickle, ``PythonModel``,
models-from-code). A worker is the boundary: it starts with an environment built from an allow
list (locale, ``PATH`` to its interpreter, thread settings, what ``GATEWAY_ENV_PASS`` names),
never the gateway's own; then, before it loads anything, it locks itself in
(``worker/sandbox.py``: Landlock, a network namespace, rlimits, seccomp). This module decides
the policy, gives each group of workers a folder of its own (``view``: hard links to the
verified files of the versions it serves, nothing else of the artifact cache; ``scratch``: its
``HOME`` and ``TMPDIR``), probes what the host offers, holds a call's CPU time to its limit from
outside the worker (a model cannot stop a watchdog it does not run), and reports all of it for
``/models/<name>/versions/<v>`` and ``/status``.

What fails and what the caller sees: a worker past its address-space limit exits
(``EXIT_OVER_MEMORY``), one past a call's CPU time is killed; either way its callers are
answered 503 and it is started again, as for any dead worker (``isolated.py``). With
``GATEWAY_SANDBOX=required``, a host lacking a layer stops the gateway at start
(:class:`SandboxUnavailable`), and a worker that could not apply one is stopped and its load
fails; ``best-effort`` says what is missing, in the log and the status; ``off`` gives workers
the gateway's environment and no sandbox, as before.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import itertools
import json
import logging
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from gateway.runtimes.confinement import contradictions, layers, observe

log = logging.getLogger(__name__)

SandboxMode = Literal["off", "best-effort", "required"]
NETWORK_TAG = "gateway.network"  # a version's opt-in: "allow", honoured only with GATEWAY_SANDBOX_ALLOW_NETWORK
EXIT_OVER_MEMORY = 86  # as worker/sandbox.py exits

# What a worker's environment may hold of the gateway's: nothing secret, nothing of its config.
_PASSED = (
    "LANG",
    "LANGUAGE",
    "TZ",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "NUMEXPR_MAX_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "BLIS_NUM_THREADS",
    "TORCH_NUM_THREADS",
    "CUDA_VISIBLE_DEVICES",
    "CUDA_DEVICE_ORDER",
    "NVIDIA_VISIBLE_DEVICES",
    "GATEWAY_MLFLOW_TRACES",  # whether MLflow's own per-call traces stay on (worker/server.py)
    "KERAS_BACKEND",  # Keras 3's backend, chosen once per process (gateway/runtimes/frameworks.py)
)
_PASSED_PREFIXES = ("LC_",)
# Names GATEWAY_ENV_PASS may not name: the gateway's own settings and credentials.
REFUSED_PREFIXES = ("GATEWAY_", "MLFLOW_", "AWS_", "AZURE_", "GOOGLE_APPLICATION_CREDENTIALS", "PGPASSWORD")
_DEVICES = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset", "/dev/dri")


class Watched(Protocol):
    """What the watchdog needs of a worker process (gateway.runtimes.workers.WorkerProcess):
    its pid while it runs, a name for the log, and where to say why it was killed."""

    label: str
    over_limit: str | None

    @property
    def pid(self) -> int | None: ...

    @property
    def alive(self) -> bool: ...


class SandboxUnavailable(Exception):
    """GATEWAY_SANDBOX=required, and the host (or a worker) lacks a layer."""

    def __init__(self, missing: dict[str, str]) -> None:
        self.missing = missing
        parts = "; ".join(f"{layer}: {why}" for layer, why in missing.items())
        super().__init__(
            f"GATEWAY_SANDBOX=required, but this host cannot sandbox isolated workers ({parts}); "
            "set GATEWAY_SANDBOX=best-effort to run with what it has"
        )


def refused_pass_name(name: str) -> bool:
    """Whether GATEWAY_ENV_PASS may not hand ``name`` to workers (the gateway's own credentials)."""
    return name.upper().startswith(REFUSED_PREFIXES)


@dataclass(frozen=True, slots=True)
class SandboxPolicy:
    """The settings' sandbox (GATEWAY_SANDBOX*): one per gateway process."""

    mode: SandboxMode = "best-effort"
    root: Path | None = None  # where groups' folders go: beside the artifact cache's blobs (hard links)
    env_pass: tuple[str, ...] = ()
    allow_network: bool = False  # honour a version's gateway.network=allow tag
    memory_bytes: int = 0  # address space a worker may add to what it maps at start; 0: no limit
    disk_bytes: int = 0  # its scratch tmpfs's size, and RLIMIT_FSIZE; 0: no limit
    cpu_seconds: float = 0  # CPU time one call may use; 0: no limit
    max_open_files: int = 1024
    max_processes: int = 0  # 0: none (seccomp); else RLIMIT_NPROC
    call_seconds: float = 0  # wall time one predict call (a stream's chunk) may take; 0: no limit
    load_seconds: float = 0  # wall time one load or unload may take; 0: no limit
    # What the gateway reads of what any worker sends, sandboxed or not (workers.py):
    max_answer_bytes: int = 0  # a frame (an answer, a stream's chunk); 0: no bound
    max_line_bytes: int = 64 * 1024  # a line of its output; the rest of a longer one is dropped

    @property
    def on(self) -> bool:
        return self.mode != "off"


@dataclass(frozen=True, slots=True)
class NetworkChoice:
    allowed: bool
    reason: str


def network_choice(policy: SandboxPolicy, tags: dict[str, str]) -> NetworkChoice:
    """A version's network: denied, unless tagged ``gateway.network=allow`` and the setting lets it."""
    tagged = str(tags.get(NETWORK_TAG, "")).strip().lower()
    if tagged != "allow":
        return NetworkChoice(False, "no network (the default)")
    if not policy.allow_network:
        return NetworkChoice(False, f"tagged {NETWORK_TAG}=allow, ignored: GATEWAY_SANDBOX_ALLOW_NETWORK is off")
    return NetworkChoice(True, f"tagged {NETWORK_TAG}=allow, and GATEWAY_SANDBOX_ALLOW_NETWORK is on")


# --- what the host offers ---

_support: dict[str, dict[str, Any]] | None = None
_support_lock = threading.Lock()


def host_support() -> dict[str, dict[str, Any]]:
    """Each layer: ``{"available": bool, "how" | "why_not": str}``, probed once per process."""
    global _support
    with _support_lock:
        if _support is None:
            _support = _probe()
        return _support


def _probe() -> dict[str, dict[str, Any]]:
    support: dict[str, dict[str, Any]] = {"environment": {"available": True, "how": "an allow list"}}
    if sys.platform != "linux":
        why = f"not Linux ({sys.platform})"
        return support | {k: {"available": False, "why_not": why} for k in ("filesystem", "network", "syscalls")}
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    abi = int(libc.syscall(444, None, ctypes.c_size_t(0), ctypes.c_uint32(1)))
    if abi >= 1:
        support["filesystem"] = {"available": True, "how": f"Landlock ABI {abi}"}
    else:
        support["filesystem"] = {"available": False, "why_not": "the kernel has no Landlock (or it is disabled)"}
    namespaces, tmpfs = _try_namespaces()
    if namespaces is None:
        support["network"] = {"available": True, "how": "a user and network namespace per worker"}
    elif abi >= 4:
        support["network"] = {"available": True, "how": f"Landlock TCP rules (no namespaces: {namespaces})"}
    else:
        support["network"] = {"available": False, "why_not": f"no namespaces ({namespaces}) and Landlock ABI {abi} < 4"}
    if platform.machine() == "x86_64" and Path("/proc/sys/kernel/seccomp/actions_avail").exists():
        support["syscalls"] = {"available": True, "how": "seccomp filter"}
    else:
        support["syscalls"] = {"available": False, "why_not": f"no seccomp filter for {platform.machine()}"}
    support["limits"] = {"available": True, "how": "rlimits and a CPU watchdog"}
    if tmpfs is None:
        support["limits"]["disk"] = "a tmpfs of GATEWAY_SANDBOX_DISK_MB as each worker's scratch folder"
    else:
        support["limits"]["disk_why_not"] = f"no tmpfs of a worker's own ({tmpfs}): only each file is bounded"
    if os.geteuid() == 0:
        support["limits"]["note"] = "RLIMIT_NPROC does not bind root: GATEWAY_SANDBOX_MAX_PROCESSES>0 is not enforced"
    return support


def _try_namespaces() -> tuple[str | None, str | None]:
    """Whether an unprivileged process here can enter a user and network namespace, and mount
    a tmpfs in a mount namespace of its own (as ``worker/sandbox.py`` does): None for each
    that it can, else why not."""
    code = (
        "import ctypes,os,sys;l=ctypes.CDLL(None,use_errno=True);u,g=os.geteuid(),os.getegid()\n"
        "if l.unshare(0x10000000|0x40000000|0x20000)!=0:sys.exit(ctypes.get_errno())\n"
        "open('/proc/self/setgroups','w').write('deny');open('/proc/self/uid_map','w').write(f'{u} {u} 1')\n"
        "open('/proc/self/gid_map','w').write(f'{g} {g} 1')\n"
        "ok=l.mount(b'none',b'/',None,ctypes.c_ulong(0x44000),None)==0 and "
        "l.mount(b'tmpfs',b'/tmp',b'tmpfs',ctypes.c_ulong(6),b'size=1m')==0\n"
        "sys.exit(0 if ok else 128+ctypes.get_errno())"
    )
    try:
        done = subprocess.run([sys.executable, "-E", "-s", "-c", code], env={}, timeout=30, capture_output=True)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc), str(exc)
    if done.returncode == 0:
        return None, None
    if done.returncode > 128:
        return None, f"mount: {os.strerror(done.returncode - 128)}"
    why = f"unshare: {os.strerror(done.returncode)}"
    return why, why


def missing_layers(policy: SandboxPolicy) -> dict[str, str]:
    """The layers ``policy`` wants that this host cannot give, and why."""
    if not policy.on:
        return {}
    missing = {k: str(v["why_not"]) for k, v in host_support().items() if not v["available"]}
    if policy.max_processes > 0 and os.geteuid() == 0:
        missing["processes"] = "RLIMIT_NPROC does not bind root (GATEWAY_SANDBOX_MAX_PROCESSES)"
    disk_why_not = host_support().get("limits", {}).get("disk_why_not")
    if policy.disk_bytes > 0 and disk_why_not:
        missing["disk"] = str(disk_why_not)
    return missing


def check_host(policy: SandboxPolicy) -> None:
    """At start: refuse (required) or say (best-effort) what the host cannot provide."""
    missing = missing_layers(policy)
    if not missing:
        return
    if policy.mode == "required":
        raise SandboxUnavailable(missing)
    for layer, why in missing.items():
        log.warning("isolated workers run without the %s layer of their sandbox: %s", layer, why)


def summary(policy: SandboxPolicy, running: dict[str, str] | None = None) -> str:
    """One line for /health/ready and /status: the mode, what this host cannot give, and what
    running workers lack as the gateway sees them from outside (``running``: the union of their
    :meth:`WorkerSandbox.describe`'s ``missing``, checks a worker cannot forge)."""
    if not policy.on:
        return "off: isolated workers get the gateway's environment and no sandbox (GATEWAY_SANDBOX=off)"
    missing = missing_layers(policy) | {f"{layer} in running workers": why for layer, why in (running or {}).items()}
    if not missing:
        layers = f"{policy.mode}: every layer (environment, filesystem, network, limits, capabilities, syscalls)"
    else:
        layers = f"{policy.mode}, without " + "; ".join(f"{layer} ({why})" for layer, why in missing.items())
    return f"{layers}; {bounds(policy, scratch_tmpfs='disk' not in missing, seccomp='syscalls' not in missing)}"


def bounds(policy: SandboxPolicy, *, scratch_tmpfs: bool, seccomp: bool) -> str:
    """What bounds a worker's memory and disk, in words (for /status and /health/ready)."""
    mib = 2**20
    if policy.memory_bytes > 0:
        memory = f"memory: {policy.memory_bytes // mib} MiB of address space past its start (RLIMIT_AS)"
    else:
        memory = "memory: no address-space limit (GATEWAY_SANDBOX_MEMORY_MB=0)"
    if seccomp:
        memory += ", no memfd or SysV shared memory (seccomp)"
    if policy.disk_bytes <= 0:
        disk = "disk: no limit (GATEWAY_SANDBOX_DISK_MB=0)"
    elif scratch_tmpfs:
        disk = f"disk: none; its scratch a {policy.disk_bytes // mib} MiB tmpfs (memory, beside the above)"
    else:
        disk = f"disk: each file at most {policy.disk_bytes // mib} MiB (RLIMIT_FSIZE), the total unbounded"
    return f"{memory}; {disk}"


# --- one group's sandbox ---


class WorkerSandbox:
    """The sandbox of one group of workers (one environment, one network choice): its folder,
    the environment and policy each of its processes starts with, and what they reported."""

    def __init__(self, policy: SandboxPolicy, network: NetworkChoice, *, label: str, watchdog: CpuWatchdog) -> None:
        self.policy = policy
        self.network = network
        self.watchdog = watchdog
        root = policy.root or Path(tempfile.gettempdir()) / "registry-gateway-sandboxes"
        self.folder = root / f"{label}-{os.getpid()}-{uuid.uuid4().hex[:8]}"  # the pid: see sweep
        self.view = self.folder / "models"
        self.scratch = self.folder / "scratch"
        self.view.mkdir(parents=True, exist_ok=True)
        self.scratch.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._exposed: dict[Path, int] = {}
        self.report: dict[str, Any] = {}  # the first worker's, as it said at hello

    def environment(self, python: Path) -> dict[str, str]:
        """A worker's whole environment: the allow list, never the gateway's secrets."""
        env = {k: v for k, v in os.environ.items() if k in _PASSED or k.startswith(_PASSED_PREFIXES)}
        env.update((k, os.environ[k]) for k in self.policy.env_pass if k in os.environ)
        env["PATH"] = os.pathsep.join([str(python.parent), "/usr/local/bin", "/usr/bin", "/bin"])
        env["HOME"] = env["TMPDIR"] = str(self.scratch)
        env["PYTHONDONTWRITEBYTECODE"] = "1"  # its environment is read-only to it
        return env

    def worker_policy(self) -> str:
        """The policy the worker applies to itself (``worker/sandbox.py``), as its argument."""
        devices = [d for d in _DEVICES if os.path.exists(d)]
        devices += [str(p) for p in Path("/dev").glob("nvidia[0-9]*")]
        return json.dumps(
            {
                "network": "allow" if self.network.allowed else "deny",
                "network_reason": self.network.reason,
                "view": str(self.view),
                "scratch": str(self.scratch),
                "devices": devices,
                "max_open_files": self.policy.max_open_files,
                "max_processes": self.policy.max_processes,
                "memory_bytes": self.policy.memory_bytes,
                "disk_bytes": self.policy.disk_bytes,
            }
        )

    def watching(self, process: Watched, header: dict[str, Any]) -> contextlib.AbstractContextManager[None]:
        """A call's CPU time (a predict, a stream's chunk, a load), held to
        GATEWAY_SANDBOX_CPU_SECONDS, a predict's wall time to GATEWAY_SANDBOX_CALL_SECONDS, a
        load's or an unload's to GATEWAY_SANDBOX_LOAD_SECONDS; from its end, the CPU its worker
        uses until the next call (the watchdog's spans)."""
        op = str(header.get("op", ""))
        doing = "call" if op.startswith(("predict", "stream")) else None if op == "hello" else "load"
        return self.watchdog.watching(process, doing)

    def accept(self, confined: dict[str, Any] | None, hello: dict[str, Any], pid: int) -> None:
        """What a new worker enforced: what it said before its environment's code ran
        (``confined``), its memory limit as set at ``hello``, each as far as the kernel shows
        it from outside (``confinement.py``: a claim the kernel contradicts is missing);
        under ``required``, anything missing stops it."""
        report = copy.deepcopy(confined) if isinstance(confined, dict) else {}
        if not report:
            why = "the worker reported no sandbox"
            report = {name: {"enforced": False, "why_not": why} for name in ("filesystem", "network", "syscalls")}
            report["capabilities"] = {"enforced": False, "why_not": why}
        # Its memory limit: a ceiling set before its environment's code ran (in ``confined``), then
        # lowered at hello, after that code ran: whatever hello says, /proc is held to both.
        ceiling = ((report.get("limits") or {}).get("memory") or {}).get("bytes")
        memory = ((hello.get("sandbox") or {}).get("limits") or {}).get("memory")
        if self.policy.memory_bytes > 0 and not isinstance(memory, dict):
            memory = {"enforced": False, "why_not": "no memory limit reported at hello"}
        if isinstance(memory, dict):  # checked below
            report.setdefault("limits", {})["memory"] = memory
        seen = observe(pid)
        policy = self.policy
        asked = contradictions(
            report,
            seen,
            open_files=policy.max_open_files,
            memory_bytes=policy.memory_bytes,
            memory_ceiling=ceiling if isinstance(ceiling, int) else None,
            view=str(self.view),
        )
        for name, why in asked.items():
            log.error("worker %s of %s: %s: %s", pid, self.folder.name, name, why)
            _replace(report, name, {"enforced": False, "why_not": f"contradicted from outside: {why}"})
        missing = {name: str(layer.get("why_not")) for name, layer in layers(report) if not layer.get("enforced")}
        if self.network.allowed:
            missing.pop("network", None)
        if self.policy.memory_bytes <= 0:
            missing.pop("limits.memory", None)
        if self.policy.max_open_files <= 0:
            missing.pop("limits.open_files", None)
        if self.policy.disk_bytes <= 0:
            missing.pop("limits.disk", None)
        if self.policy.mode == "required" and missing:
            raise SandboxUnavailable(missing)
        with self._lock:
            first = not self.report
            self.report = report
        if first:
            filesystem = report.get("filesystem") or {}
            log.info(
                "sandbox of %s: reads %s; writes %s; missing: %s",
                self.folder.name,
                ", ".join(filesystem.get("read_only", [])) or "-",
                ", ".join(filesystem.get("read_write", [])) or "-",
                ", ".join(missing) or "nothing",
            )

    def describe(self) -> dict[str, Any]:
        """What ``/models/<name>/versions/<v>`` shows: each layer, and what the host lacked."""
        report = self.report
        limits = dict(report.get("limits") or {})
        if self.policy.cpu_seconds > 0:
            limits["cpu_per_call"] = {
                "enforced": True,
                "how": f"{self.policy.cpu_seconds:g} CPU seconds a call, a load, or between two calls, "
                "then the worker is killed (503)",
            }
        else:
            limits["cpu_per_call"] = {"enforced": False, "why_not": "GATEWAY_SANDBOX_CPU_SECONDS=0"}
        passed = sorted(n for n in self.policy.env_pass if n in os.environ)
        network = dict(report.get("network") or {})
        network["reason"] = self.network.reason
        described = {
            "mode": self.policy.mode,
            "environment": {
                "enforced": True,
                "how": "an allow list: locale, PATH to its interpreter, thread settings, HOME and TMPDIR "
                "in its scratch folder" + (f", and GATEWAY_ENV_PASS: {', '.join(passed)}" if passed else ""),
                "passed": passed,
            },
            # the paths it may read stay in the log (invariant 8: no path of the host leaves the process)
            "filesystem": _without_paths(report.get("filesystem")) or {"enforced": False, "why_not": "not started yet"},
            "network": network,
            "limits": limits,
            "capabilities": report.get("capabilities") or {"enforced": False, "why_not": "not started yet"},
            "syscalls": report.get("syscalls") or {"enforced": False, "why_not": "not started yet"},
        }
        described["missing"] = {
            name: str(layer.get("why_not"))
            for name, layer in layers(described)
            if not layer.get("enforced") and not (name == "network" and self.network.allowed)
        }
        return described

    def expose(self, path: Path) -> Path:
        """The version's verified files, as the worker may read them: hard links in its view."""
        target = self.view / path.name
        with self._lock:
            count = self._exposed.get(target, 0)
            if count == 0 and not target.exists():
                staging = self.view / f".{path.name}.{uuid.uuid4().hex[:6]}"
                shutil.copytree(path, staging, copy_function=_link_or_copy, symlinks=False)
                os.replace(staging, target)
            self._exposed[target] = count + 1
        return target

    def withdraw(self, exposed: Path) -> None:
        with self._lock:
            count = self._exposed.get(exposed, 0) - 1
            if count > 0:
                self._exposed[exposed] = count
                return
            self._exposed.pop(exposed, None)
        shutil.rmtree(exposed, ignore_errors=True)

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def sweep(root: Path) -> list[Path]:
    """Remove the folders a gateway left behind when it was killed (named after its pid, which
    is gone); those of live gateways sharing the artifact cache stay."""
    removed = []
    for folder in root.glob("*-*-*") if root.is_dir() else []:
        try:
            pid = int(folder.name.rsplit("-", 2)[1])
            os.kill(pid, 0)
        except ValueError:
            continue
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
        except PermissionError:  # another user's live process
            continue
    return removed


def _without_paths(layer: dict[str, Any] | None) -> dict[str, Any] | None:
    return {k: v for k, v in layer.items() if k not in ("read_only", "read_write")} if layer else None


def _replace(report: dict[str, Any], name: str, layer: dict[str, Any]) -> None:
    """Put ``layer`` in place of ``name``'s (``limits.memory``: a part of a layer)."""
    parent, _, part = name.partition(".")
    if part:
        report.setdefault(parent, {})[part] = layer
    else:
        report[name] = layer


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)
    except OSError:  # another file system, or links refused: a copy (the bytes were verified)
        shutil.copy2(source, destination)


# --- CPU time per call ---


class CpuWatchdog:
    """Kills a worker that uses more than ``seconds`` of CPU time (all its threads) in one call,
    one load, or between two calls (a thread a model started runs on after its call), or whose
    predict call takes more than ``call_seconds`` of wall time (a model that sleeps), or whose
    load or unload takes more than ``load_seconds``. Read from
    ``/proc/<pid>/stat`` by a thread of the gateway's own every ``interval``, for each worker
    from the end of its hello to its exit: a span (a call, a load, the time between calls) is
    counted from the first time the watchdog sees it, so it may use up to one interval more."""

    def __init__(
        self, seconds: float, *, call_seconds: float = 0, load_seconds: float = 0, interval: float = 0.25
    ) -> None:
        self.seconds = seconds
        self.call_seconds = call_seconds
        self.load_seconds = load_seconds
        self._interval = interval
        # pid -> its current span: (process, what it is doing, its CPU time when the watchdog
        # first saw the span (None until then), when the span began, which span)
        self._spans: dict[int, tuple[Watched, str, float | None, float, int]] = {}
        self._count = itertools.count()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    @property
    def on(self) -> bool:
        return self.seconds > 0 or self.call_seconds > 0 or self.load_seconds > 0

    @contextlib.contextmanager
    def watching(self, process: Watched, doing: str | None) -> Iterator[None]:
        """A span of ``doing`` (``call``: CPU and wall time held; ``load``: CPU time; None: not
        watched, as a worker's hello), and from its end the time until the next one."""
        pid = process.pid
        if not self.on or pid is None:
            yield
            return
        if doing is not None:
            self._begin(pid, process, doing)  # its CPU at the start is read when the watchdog first sees it
        try:
            yield
        finally:
            self._begin(pid, process, "idle")

    def _begin(self, pid: int, process: Watched, doing: str) -> None:
        with self._lock:
            self._spans[pid] = (process, doing, None, time.monotonic(), next(self._count))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="worker-cpu-watchdog", daemon=True)
                self._thread.start()

    def cpu_seconds(self, pid: int) -> float | None:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / self._ticks  # utime, stime

    def _run(self) -> None:
        while True:
            time.sleep(self._interval)
            with self._lock:
                spans = list(self._spans.items())
            for pid, (process, doing, start, began, span) in spans:
                used = self.cpu_seconds(pid) if process.alive else None
                with self._lock:
                    current = self._spans.get(pid)
                    if current is None or current[4] != span:
                        continue  # that span is over (another may have begun)
                    if used is None:  # exited, or stopped: nothing more to watch
                        del self._spans[pid]
                        continue
                    if start is None:
                        self._spans[pid] = (process, doing, used, began, span)
                        continue
                why = self._over(doing, used - start, time.monotonic() - began)
                if why is not None:
                    self._kill(pid, process, why)

    def _over(self, doing: str, cpu: float, wall: float) -> str | None:
        if self.seconds > 0 and cpu > self.seconds:
            when = {"call": "in one call", "load": "loading a version", "idle": "between two calls"}[doing]
            return f"over its CPU time limit ({cpu:.1f} s {when}, GATEWAY_SANDBOX_CPU_SECONDS={self.seconds:g})"
        if doing == "call" and self.call_seconds > 0 and wall > self.call_seconds:
            return f"over its call time limit ({wall:.1f} s, GATEWAY_SANDBOX_CALL_SECONDS={self.call_seconds:g})"
        if doing == "load" and self.load_seconds > 0 and wall > self.load_seconds:
            return f"over its load time limit ({wall:.1f} s, GATEWAY_SANDBOX_LOAD_SECONDS={self.load_seconds:g})"
        return None

    def _kill(self, pid: int, process: Watched, why: str) -> None:
        log.error("worker %s (pid %s) killed: %s", process.label, pid, why)
        process.over_limit = why
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with self._lock:
            self._spans.pop(pid, None)
