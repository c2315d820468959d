"""The worker's half of the sandbox (gateway/runtimes/worker/sandbox.py), applied in a bare
subprocess: the layers a host without user namespaces still gives (issue 43).

A process that already runs a thread cannot enter a user namespace (the kernel refuses
``unshare(CLONE_NEWUSER)`` with EINVAL): the same refusal a container runtime gives an
unprivileged process. Started that way, the worker must fall back to Landlock's TCP rules.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

WORKER = Path(__file__).parents[3] / "gateway" / "runtimes" / "worker"
SCRIPT = """
import json, os, socket, sys, threading, time
sys.path.insert(0, sys.argv[1])
if sys.argv[3] == "threaded":  # as a process some library already started a thread in
    threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
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
print(json.dumps({"report": report, "seen": seen}))
"""


@pytest.fixture
def listener() -> Iterator[int]:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(4)
        yield server.getsockname()[1]


def confined(tmp_path: Path, port: int, *, threaded: bool, network: str = "deny") -> dict[str, dict[str, object]]:
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
    }
    done = subprocess.run(
        [sys.executable, "-E", "-s", "-c", SCRIPT, str(WORKER), json.dumps(policy), "threaded" if threaded else "-"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_without_a_user_namespace_landlock_still_denies_every_tcp_connect(tmp_path: Path, listener: int) -> None:
    out = confined(tmp_path, listener, threaded=True)
    network = out["report"]["network"]
    assert network["enforced"] and network["how"].startswith("Landlock denies every TCP connect and bind")
    assert "unshare failed (Invalid argument)" in network["how"]
    assert out["seen"] == {"connect": "PermissionError", "read outside": "PermissionError", "read view": "ok"}


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
    import os

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
    done = subprocess.run(
        [sys.executable, "-E", "-s", "-c", script, str(WORKER), json.dumps(policy)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr  # a fork is allowed: seccomp leaves processes alone
    report = json.loads(done.stdout)
    assert "processes" not in report["syscalls"]
    assert report["limits"]["processes"]["enforced"] is (os.geteuid() != 0)
    assert report["limits"]["open_files"] == {"enforced": False, "why_not": "GATEWAY_SANDBOX_MAX_OPEN_FILES=0"}
