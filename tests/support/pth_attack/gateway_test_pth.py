"""What a hostile requirement's ``.pth`` file runs when ``site`` processes its environment
(issue 48): packed into a wheel by tests/gateway/runtimes/test_sandbox_start.py, installed by
the environment build from the model's own requirements, never imported by the tests.

At import, it tries to escape and keeps what happened in ``RESULTS`` (the prober model reads it
back with its ``pth:KEY`` probe): ``environ``, the gateway's ``/proc/<ppid>/environ``;
``write``, the file ``PROBE_WRITE`` names (outside its scratch folder); ``connect``, the loopback port named by
``PROBE_PORT``; ``sandbox``, whether the worker's ``sandbox`` module was still its to replace
(it puts one there that applies nothing and reports every layer enforced).

With ``PROBE_MEMORY`` set, it goes for the memory limit (set at ``hello``, after it ran):
``inflate`` maps 1 TiB of address space and unmaps it (the worker's ``VmPeak``, against which
the gateway checks the limit, is then 1 TiB higher); then the worker's ``limit_memory`` is
replaced: ``forge`` sets the soft limit it should and leaves the hard one high (the soft one
can be raised again later), ``omit`` sets none and reports none.
"""

import json
import mmap
import os
import resource
import socket
import struct
import sys
import types

RESULTS = {}


def _error(exc):
    return "{}: {}".format(type(exc).__name__, getattr(exc, "strerror", None) or exc)


def _attempt(key, action):
    try:
        RESULTS[key] = action()
    except Exception as exc:
        RESULTS[key] = _error(exc)


def _environ():
    with open(f"/proc/{os.getppid()}/environ", "rb") as f:
        return "read {} variables".format(f.read().count(b"\0"))


def _write():
    with open(os.environ.get("PROBE_WRITE", "/nonexistent/escaped.txt"), "w") as f:
        f.write("escaped")
    return "written"


def _connect():
    with socket.create_connection(("127.0.0.1", int(os.environ.get("PROBE_PORT", "9"))), timeout=5):
        return "connected"


def _forged_sandbox():
    """A ``sandbox`` module for server.py that applies nothing and says it applied everything."""
    fake = types.ModuleType("sandbox")
    fake.EXIT_OVER_MEMORY = 86
    every = {"enforced": True, "how": "forged"}
    report = {name: dict(every) for name in ("network", "filesystem", "capabilities", "syscalls")}
    report["limits"] = {"open_files": dict(every, how="RLIMIT_NOFILE 1024")}

    def apply_from_arguments(argv):
        policy = json.loads(argv[argv.index("--sandbox") + 1]) if "--sandbox" in argv else {}
        return (json.loads(json.dumps(report)) if policy else None), int(policy.get("memory_bytes") or 0)

    fake.apply_from_arguments = apply_from_arguments
    fake.limit_memory = lambda budget: dict(every, how="RLIMIT_AS (forged)", bytes=budget)

    def announce(argv, confined):  # framed as the real one frames it
        head = json.dumps({"op": "confined", "sandbox": confined}).encode()
        os.write(int(argv[argv.index("--fd") + 1]), struct.pack("!II", len(head), 0) + head)

    fake.announce = announce
    return fake


def _replace_sandbox():
    if "sandbox" in sys.modules:
        return "already imported: too late to replace"
    sys.modules["sandbox"] = _forged_sandbox()
    return "replaced"


_attempt("environ", _environ)
_attempt("write", _write)
_attempt("connect", _connect)
_attempt("sandbox", _replace_sandbox)


def _inflate():
    space = mmap.mmap(-1, 2**40, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | 0x4000, prot=0)  # MAP_NORESERVE
    space.close()
    return "mapped 1 TiB"


def _forged_limit(budget):
    with open("/proc/self/statm") as statm:
        soft = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE") + budget
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (soft, 2**41 if hard == resource.RLIM_INFINITY else hard))
    return {"enforced": True, "how": "RLIMIT_AS (forged)", "bytes": soft}


def _stub_limit_memory():
    how = os.environ["PROBE_MEMORY"]
    sys.modules["sandbox"].limit_memory = _forged_limit if how == "forge" else (lambda budget: None)
    return how


if os.environ.get("PROBE_MEMORY") and "sandbox" in sys.modules:
    _attempt("inflate", _inflate)
    _attempt("limit", _stub_limit_memory)
