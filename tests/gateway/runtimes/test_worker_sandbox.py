"""The worker's half of the sandbox (gateway/runtimes/worker/sandbox.py), applied in a bare
subprocess: the layers a host without user namespaces still gives (issue 43).

A process that already runs a thread cannot enter a user namespace (the kernel refuses
``unshare(CLONE_NEWUSER)`` with EINVAL): the same refusal a container runtime gives an
unprivileged process. Started that way, the worker must fall back to Landlock's TCP rules.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

WORKER = Path(__file__).parents[3] / "gateway" / "runtimes" / "worker"
SCRIPT = """
import ctypes, json, os, socket, struct, sys, threading, time
sys.path.insert(0, sys.argv[1])
if sys.argv[3] == "threaded":  # as a process some library already started a thread in
    threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
if sys.argv[3] == "docker":  # as Docker's default seccomp profile: no unshare, no mount
    libc = ctypes.CDLL(None, use_errno=True)
    program = [(0x20, 0, 0, 0), (0x15, 2, 0, 272), (0x15, 1, 0, 165), (0x06, 0, 0, 0x7FFF0000), (0x06, 0, 0, 0x50001)]
    blob = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *insn) for insn in program))
    prog = struct.pack("HxxxxxxP", len(program), ctypes.addressof(blob))
    assert libc.prctl(38, 1, 0, 0, 0) == 0 and libc.prctl(22, 2, ctypes.c_char_p(prog), 0, 0) == 0
import sandbox
policy = json.loads(sys.argv[2])
report = sandbox.apply(policy)
def attempt(what, call):
    try:
        call()
        return "ok"
    except OSError as exc:
        return type(exc).__name__
port = int(policy["port"])
seen = {
    "connect": attempt("connect", lambda: socket.create_connection(("127.0.0.1", port), timeout=5).close()),
    "read outside": attempt("read", lambda: open(policy["outside"]).read()),
    "read view": attempt("read", lambda: open(os.path.join(policy["view"], "MLmodel")).read()),
}
def fill(*sizes):
    for n, size in enumerate(sizes):
        with open(os.path.join(policy["scratch"], f"file-{n}"), "wb") as f:
            os.posix_fallocate(f.fileno(), 0, size)
disk = int(policy["disk_bytes"])
seen["a file over the disk's size"] = attempt("write", lambda: fill(disk + 4096))
seen["two files of 3/4 of it"] = attempt("write", lambda: fill(disk * 3 // 4, disk * 3 // 4))
print(json.dumps({"report": report, "seen": seen}))
"""


@pytest.fixture
def listener() -> Iterator[int]:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(4)
        yield server.getsockname()[1]


def confined(tmp_path: Path, port: int, *, threaded: bool, network: str = "deny", mode: str = "") -> Any:
    view, scratch, outside = tmp_path / "view", tmp_path / "scratch", tmp_path / "state.db"
    view.mkdir(exist_ok=True)
    scratch.mkdir(exist_ok=True)
    (view / "MLmodel").write_text("flavors: {}\n")
    outside.write_text("secret")
    policy = {
        "network": network,
        "view": str(view),
        "scratch": str(scratch),
        "max_open_files": 256,
        "max_processes": 0,
        "port": port,
        "outside": str(outside),
        "disk_bytes": 8 * 2**20,
    }
    return run_script(SCRIPT, json.dumps(policy), mode or ("threaded" if threaded else "-"))


def run_script(script: str, *args: str) -> Any:
    """``script`` on a bare interpreter beside the worker's modules; what it printed, as JSON."""
    done = subprocess.run(
        [sys.executable, "-E", "-s", "-c", script, str(WORKER), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_without_a_user_namespace_landlock_still_denies_every_tcp_connect(tmp_path: Path, listener: int) -> None:
    out = confined(tmp_path, listener, threaded=True)
    network = out["report"]["network"]
    assert network["enforced"] and network["how"].startswith("Landlock denies every TCP connect and bind")
    assert "unshare failed (Invalid argument)" in network["how"]
    assert out["seen"] == {
        "connect": "PermissionError",
        "read outside": "PermissionError",
        "read view": "ok",
        "a file over the disk's size": "OSError",  # EFBIG: RLIMIT_FSIZE
        # ENOSPC: its tmpfs, which root mounts without a user namespace; others cannot
        "two files of 3/4 of it": "OSError" if os.geteuid() == 0 else "ok",
    }


def test_where_unshare_and_mount_are_refused_the_disk_is_bounded_per_file_and_shown_missing(
    tmp_path: Path, listener: int
) -> None:
    """Docker's default seccomp profile refuses both: no namespace, so no tmpfs; the worker says so."""
    out = confined(tmp_path, listener, threaded=False, mode="docker")
    assert out["report"]["network"]["how"].startswith("Landlock denies every TCP connect and bind")
    disk = out["report"]["limits"]["disk"]
    assert not disk["enforced"], disk
    assert disk["why_not"] == (
        "no mount namespace: unshare failed (Operation not permitted); "
        "no file over 8 MiB (RLIMIT_FSIZE) only, their total unbounded"
    )
    assert out["seen"]["a file over the disk's size"] == "OSError"  # each file is still bounded
    assert out["seen"]["two files of 3/4 of it"] == "ok"  # their total is not: what the status says


def test_the_same_probes_pass_where_the_policy_allows_the_network(tmp_path: Path, listener: int) -> None:
    out = confined(tmp_path, listener, threaded=True, network="allow")
    assert not out["report"]["network"]["enforced"]
    assert out["seen"]["connect"] == "ok"  # so the refusal above is the sandbox's
    assert out["seen"]["read outside"] == "PermissionError"  # the filesystem stays confined


def test_with_a_user_namespace_the_worker_is_in_a_network_of_its_own(tmp_path: Path, listener: int) -> None:
    out = confined(tmp_path, listener, threaded=False)
    assert out["report"]["network"]["how"].startswith("a user and network namespace of its own")
    assert out["seen"]["connect"] in ("PermissionError", "ConnectionRefusedError", "OSError")
    assert out["report"]["capabilities"]["enforced"]


def test_processes_allowed_by_the_setting_are_bounded_by_rlimit_nproc_except_for_root(tmp_path: Path) -> None:
    script = (
        "import json, os, sys\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "import sandbox\n"
        "report = sandbox.apply(json.loads(sys.argv[2]))\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os._exit(0)\n"
        "os.waitpid(pid, 0)\n"
        "print(json.dumps(report))\n"
    )
    policy = {"network": "deny", "scratch": str(tmp_path), "max_open_files": 0, "max_processes": 64}
    report = run_script(script, json.dumps(policy))  # a fork is allowed: seccomp leaves processes alone
    assert "processes" not in report["syscalls"]
    assert report["limits"]["processes"]["enforced"] is (os.geteuid() != 0)
    assert report["limits"]["open_files"] == {"enforced": False, "why_not": "GATEWAY_SANDBOX_MAX_OPEN_FILES=0"}


# Each call sets another process's value to what it is already, or reads it: harmless where it
# succeeds, as it must without the sandbox.
OTHERS_SCRIPT = """
import ctypes, json, os, resource, sys
sys.path.insert(0, sys.argv[1])
policy = json.loads(sys.argv[2])
if sys.argv[3] == "sandboxed":
    import sandbox
    sandbox.apply(policy)
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

def checked(result):
    if result < 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return result

def ioprio(pid):
    checked(libc.syscall(251, 1, pid, checked(libc.syscall(252, 1, pid))))  # ioprio_set(get)

def fallocate_keep_size():
    fd = os.open(os.path.join(policy["scratch"], "kept"), os.O_CREAT | os.O_RDWR)
    checked(libc.fallocate(fd, 1, ctypes.c_long(0), ctypes.c_long(2**20)))  # FALLOC_FL_KEEP_SIZE

def shmget():
    checked(libc.shmctl(checked(libc.shmget(0, 2**20, 0o1600)), 0, None))  # IPC_PRIVATE, then IPC_RMID

CALLS = {
    "prlimit": lambda pid: resource.prlimit(pid, resource.RLIMIT_CORE, resource.prlimit(pid, resource.RLIMIT_CORE)),
    "setpriority": lambda pid: os.setpriority(os.PRIO_PROCESS, pid, os.getpriority(os.PRIO_PROCESS, pid)),
    "sched_setaffinity": lambda pid: os.sched_setaffinity(pid, os.sched_getaffinity(pid)),
    "sched_setscheduler": lambda pid: os.sched_setscheduler(pid, os.sched_getscheduler(pid), os.sched_getparam(pid)),
    "sched_setparam": lambda pid: os.sched_setparam(pid, os.sched_getparam(pid)),
    "ioprio_set": ioprio,
    "move_pages": lambda pid: checked(libc.syscall(279, pid, 0, None, None, None, 0)),  # no page: a no-op
    "get_robust_list": lambda pid: checked(
        libc.syscall(274, pid, ctypes.byref(ctypes.c_void_p()), ctypes.byref(ctypes.c_size_t()))
    ),
}
MEMORY = {
    "memfd_create": lambda: os.close(os.memfd_create("x")),
    "shmget": shmget,
    "fallocate keep size": fallocate_keep_size,
    "pidfd_open": lambda: os.close(os.pidfd_open(os.getppid())),
    "setpriority of its user": lambda: os.setpriority(os.PRIO_USER, 0, os.getpriority(os.PRIO_USER, 0)),
}

def attempt(call, *args):
    try:
        call(*args)
        return "ok"
    except OSError as exc:
        return os.strerror(exc.errno)

seen = {f"{name} other": attempt(call, int(sys.argv[4])) for name, call in CALLS.items()}
seen.update({f"{name} self": attempt(call, 0) for name, call in CALLS.items()})
seen.update({name: attempt(call) for name, call in MEMORY.items()})
print(json.dumps(seen))
"""


@pytest.fixture
def victim() -> Iterator[int]:
    """Another process of the same uid and, like a gateway that does not run as root, no
    capability: the kernel's own checks let a process of that uid change its limits, nice value,
    CPUs and scheduling (a root gateway keeps capabilities, which stop some of these)."""
    code = "import sys, time; sys.path.insert(0, sys.argv[1]); import sandbox; sandbox._drop_capabilities(); "
    code += "print('ready', flush=True); time.sleep(600)"
    process = subprocess.Popen([sys.executable, "-E", "-s", "-c", code, str(WORKER)], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stdout.readline() == "ready\n"
        yield process.pid
    finally:
        process.kill()
        process.wait()


def meddling(tmp_path: Path, victim: int, *, sandboxed: bool) -> dict[str, str]:
    policy = {"network": "deny", "scratch": str(tmp_path), "max_open_files": 256, "max_processes": 0}
    return run_script(OTHERS_SCRIPT, json.dumps(policy), "sandboxed" if sandboxed else "-", str(victim))  # type: ignore[no-any-return]


def test_seccomp_refuses_limits_priorities_and_cpus_of_any_other_process_but_not_its_own(
    tmp_path: Path, victim: int
) -> None:
    seen = meddling(tmp_path, victim, sandboxed=True)
    calls = [key.removesuffix(" other") for key in seen if key.endswith(" other")]
    assert {name: seen[f"{name} other"] for name in calls} == dict.fromkeys(calls, "Operation not permitted")
    assert {name: seen[f"{name} self"] for name in calls} == dict.fromkeys(calls, "ok")
    unbounded = ["memfd_create", "shmget", "fallocate keep size", "pidfd_open", "setpriority of its user"]
    assert {name: seen[name] for name in unbounded} == dict.fromkeys(unbounded, "Operation not permitted")


def test_without_the_sandbox_each_of_those_calls_succeeds(tmp_path: Path, victim: int) -> None:
    assert set(meddling(tmp_path, victim, sandboxed=False).values()) == {"ok"}  # so each refusal above is seccomp's
