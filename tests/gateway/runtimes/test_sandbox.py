"""Untrusted models (issue 43): with GATEWAY_ENV_ISOLATE=always every version runs in a sandboxed
worker that holds no secret, reads no state, reaches no network and stays within its limits.

The model is tests/support/env_models/prober.py: from inside ``predict`` it tries each escape
and says what happened. The same probes are run once with GATEWAY_SANDBOX=off, where each
escape must succeed: that is what makes a denial here the sandbox's doing. Whatever a probe
connects to is a listener the test opens itself (a TCP port on loopback, a Unix socket in a
folder anyone may read), so that a refusal cannot come from nothing listening.
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest
from mlflow.models import infer_signature

from gateway.rooms.runtimes import sandbox_policy
from gateway.runtimes import sandbox as gateway_sandbox
from gateway.runtimes.sandbox import SandboxUnavailable
from gateway.settings import SettingsError, load_settings
from tests.conftest import Gateway, Registry, empty_registry, running_gateway, settings_under
from tests.gateway.runtimes.test_isolated_serving import OTHER_SKLEARN
from tests.support.shared_envs import with_environment

pytestmark = pytest.mark.anyio

PROBER = Path(__file__).parents[2] / "support" / "env_models" / "prober.py"
FORGER = Path(__file__).parents[2] / "support" / "env_models" / "forger.py"
REQUIREMENTS = [f"scikit-learn=={OTHER_SKLEARN}"]  # as test_isolated_serving's: uv's cache has them
SECRETS = {
    "GATEWAY_ADMIN_TOKEN": "admin-token-secret",
    "GATEWAY_WEBHOOK_SECRET": "webhook-secret",
    "AWS_SECRET_ACCESS_KEY": "aws-secret",
    "MLFLOW_TRACKING_TOKEN": "mlflow-token-secret",
}
PASSED = "MODEL_SERVICE_KEY"  # what a model truly needs, named by GATEWAY_ENV_PASS


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


def log_prober(
    name: str,
    tags: dict[str, str] | None = None,
    *,
    code: Path = PROBER,
    column: str = "probe",
    config: dict[str, Any] | None = None,
) -> int:
    """The prober (or another model from ``code`` taking one string ``column``) as a version."""
    signature = infer_signature(pd.DataFrame({column: [""]}), ["x"])
    with mlflow.start_run(run_name=name):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(code),
            registered_model_name=name,
            signature=signature,
            pip_requirements=REQUIREMENTS,
            model_config=config,
        )
    version = int(info.registered_model_version)
    for key, value in (tags or {}).items():
        mlflow.MlflowClient().set_model_version_tag(name, str(version), key, value)
    return version


@pytest.fixture(scope="module")
def probe_registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    registry = empty_registry(tmp_path_factory.mktemp("probe-registry"))
    registry.log(log_prober, "prober")
    registry.log(log_prober, "caller", {"gateway.network": "allow"})  # a model that calls out, opted in
    registry.log(log_prober, "neighbour")  # another team's model, on the same requirements
    registry.log(log_prober, "forger", code=FORGER)  # a model that lies about its size
    return registry


@pytest.fixture(scope="module")
def module_env() -> Iterator[None]:
    """The gateway's secrets, in its environment as a deployment would have them."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in SECRETS.items():
            patch.setenv(name, value)
        patch.setenv(PASSED, "passed-on-purpose")
        yield


@pytest.fixture(scope="module")
def listener() -> Iterator[int]:
    """A TCP port on loopback, listening: what a model must not reach (as PostgreSQL's 5432)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield server.getsockname()[1]


@pytest.fixture(scope="module")
def unix_listener(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Unix socket on a path, listening (as PostgreSQL's ``.s.PGSQL.5432``), in a folder
    every user may search: only the sandbox stands between a worker and it."""
    folder = tmp_path_factory.mktemp("unix")
    folder.chmod(0o755)
    path = folder / "s.sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        path.chmod(0o777)
        server.listen(16)
        yield str(path)


@asynccontextmanager
async def gateway_for(registry: Registry, root: Path, env_dir: Path, **overrides: Any) -> AsyncIterator[Gateway]:
    values: dict[str, Any] = {
        "env_isolate": "always",
        "env_dir": env_dir,
        "env_pass": [PASSED],
        "sandbox_allow_network": True,
        "sandbox_memory_mb": 256,
        "sandbox_cpu_seconds": 3,
        "sandbox_disk_mb": 64,
    }
    values.update(overrides)
    async with running_gateway(settings_under(root, **values), registry.tracking_uri) as gw:
        yield gw


@pytest.fixture(scope="module")
def env_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The module's environment folder, holding the probers' environment (built once a run, its
    bytecode compiled, and shared with test_sandbox_wire.py and test_isolated_serving.py)."""
    env_dir = tmp_path_factory.mktemp("envs")
    with_environment(env_dir, REQUIREMENTS)
    return env_dir


@pytest.fixture(scope="module")
async def sandboxed(
    probe_registry: Registry, env_dir: Path, module_env: None, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Gateway]:
    async with gateway_for(probe_registry, tmp_path_factory.mktemp("sandboxed"), env_dir) as gw:
        yield gw


async def probe(gw: Gateway, name: str, *probes: str, version: int = 1) -> list[str]:
    body = {"dataframe_split": {"columns": ["probe"], "data": [[p] for p in probes]}}
    response = await gw.client.post(f"/models/{name}/versions/{version}/predict", json=body)
    assert response.status_code == 200, response.text
    return response.json()["predictions"]  # type: ignore[no-any-return]


def state_db(gw: Gateway) -> str:
    return str(gw.services.settings.database_url).removeprefix("sqlite:///")


def escapes(gw: Gateway, port: int, unix_path: str) -> dict[str, str]:
    """Each escape, as a probe; the sandbox must stop every one."""
    cache = gw.services.settings.artifact_cache_dir
    found = {f"env:{name}" for name in SECRETS} | {"env:GATEWAY_DATABASE_URL"}
    probes = {p: p for p in sorted(found)}
    # /proc/<pid>/environ shows what the gateway started with (not what a test set since): PATH
    probes["gateway's environ"] = "parent-env:PATH"
    probes["state db"] = f"read:{state_db(gw)}"
    probes["artifact cache"] = f"list:{cache / 'blobs'}"
    probes["tests"] = f"read:{__file__}"  # the repository, configuration beside it
    probes["loopback"] = f"connect:127.0.0.1:{port}"
    probes["unix socket"] = f"unix:{unix_path}"
    probes["fork"] = "fork:20"
    probes["signal"] = "signal-parent"
    for call in MEDDLING:  # each sets the gateway's own value again: harmless where it succeeds
        probes[f"{call} gateway"] = f"{call}:parent"
    probes["memfd"] = "memfd:300"  # past the 256 MiB of gateway_for, never mapped: RLIMIT_AS misses it
    probes["memfd_secret"] = "memfd-secret"  # memory outside the address space too
    probes["shm"] = "shm:"
    probes["disk"] = "fallocate:40,40"  # each under the 64 MiB of gateway_for, not both
    probes["big file"] = "fallocate:80"
    probes["inodes"] = "files:20000"  # empty files: no size, yet kernel memory (4096 in 64 MiB)
    probes["metadata"] = "metadata"  # of its own model file: a hard link to a verified blob
    probes["shadow"] = "read:/etc/shadow"  # readable to a root gateway's workers, capabilities or not
    probes["tls keys"] = "list:/etc/ssl/private"  # beside the certificates a worker may read
    probes["gateway's cmdline"] = f"read:/proc/{os.getpid()}/cmdline"
    probes["processes"] = "list:/proc"
    return probes


MEDDLING = ("prlimit", "renice", "affinity", "scheduler")  # prober.py: set another process's limits, nice...


def blobs_changed(gw: Gateway) -> list[str]:
    """The artifact cache's blobs that a model's metadata probe changed (world-writable, dated
    1970, or given its extended attribute)."""
    changed = []
    for blob in (gw.services.settings.artifact_cache_dir / "blobs").rglob("*"):
        if blob.is_file() and (
            blob.stat().st_mode & 0o002 or blob.stat().st_mtime == 0 or "user.gateway-test" in os.listxattr(blob)
        ):
            changed.append(blob.name)
    return changed


async def run_escapes(gw: Gateway, port: int, unix_path: str) -> dict[str, str]:
    probes = escapes(gw, port, unix_path)
    return dict(zip(probes, await probe(gw, "prober", *probes.values()), strict=True))


@pytest.mark.timeout(600)  # the module's first: its setup may build the run's shared environment and compile it
async def test_a_sandboxed_worker_holds_no_secret_reads_no_state_and_reaches_nothing(
    sandboxed: Gateway, listener: int, unix_listener: str
) -> None:
    seen = await run_escapes(sandboxed, listener, unix_listener)
    for name in [*SECRETS, "GATEWAY_DATABASE_URL"]:
        assert seen[f"env:{name}"] == "<absent>", (name, seen)
    assert seen["gateway's environ"].startswith("PermissionError"), seen  # no ptrace access to the gateway
    for what in ("state db", "artifact cache", "tests"):
        assert seen[what].startswith("PermissionError"), (what, seen)
    assert seen["loopback"] != "connected", seen
    assert seen["unix socket"].startswith("PermissionError"), seen
    assert seen["fork"] == "started 0", seen
    assert seen["signal"].startswith("PermissionError"), seen
    for call in MEDDLING:  # the gateway keeps its limits, its nice value, its CPUs, its scheduling
        assert seen[f"{call} gateway"].startswith("PermissionError"), (call, seen)
    assert seen["memfd"].startswith("PermissionError"), seen
    assert seen["memfd_secret"].startswith("PermissionError"), seen
    assert seen["shm"].startswith("PermissionError"), seen  # Landlock: /dev/shm is not its to write
    assert seen["disk"] == "allocated 1: OSError: No space left on device", seen  # the tmpfs's total
    assert seen["big file"] == "allocated 0: OSError: File too large", seen  # RLIMIT_FSIZE
    assert seen["inodes"].endswith("OSError: No space left on device"), seen  # nr_inodes
    assert seen["metadata"] == ", ".join(f"{c}: Read-only file system" for c in ("chmod", "utime", "setxattr"))
    assert blobs_changed(sandboxed) == []
    for what in ("shadow", "tls keys", "gateway's cmdline", "processes"):
        assert seen[what].startswith("PermissionError"), (what, seen)
    # what it legitimately needs still works: a variable named for it, its scratch folder
    passed, home = await probe(sandboxed, "prober", f"env:{PASSED}", "env:HOME")
    assert passed == "passed-on-purpose"
    assert Path(home).parent.parent == sandboxed.services.settings.artifact_cache_dir / "sandboxes"
    assert (await probe(sandboxed, "prober", f"read:{home}"))[0].startswith("IsADirectoryError")


async def test_without_the_sandbox_the_same_escapes_succeed(
    probe_registry: Registry, env_dir: Path, module_env: None, listener: int, unix_listener: str, tmp_path: Path
) -> None:
    async with gateway_for(probe_registry, tmp_path, env_dir, sandbox="off") as gw:
        seen = await run_escapes(gw, listener, unix_listener)
        runtime = (await gw.client.get("/models/prober/versions/1")).json()["runtime"]
        changed = blobs_changed(gw)
    for name, value in SECRETS.items():
        assert seen[f"env:{name}"] == value
    assert seen["gateway's environ"].startswith("/"), seen  # its PATH, read from /proc/<gateway>/environ
    assert seen["env:GATEWAY_DATABASE_URL"].startswith("sqlite:///")
    for what in ("state db", "tests", "loopback", "unix socket"):
        assert seen[what] in ("read", "connected"), (what, seen)
    assert seen["artifact cache"] and not seen["artifact cache"].startswith("PermissionError"), seen
    assert seen["fork"] == "started 20", seen
    assert seen["signal"] == "signalled", seen
    for call in MEDDLING:
        assert seen[f"{call} gateway"] == "set", (call, seen)
    assert seen["memfd"] == "held 300 MiB", seen
    assert seen["memfd_secret"] == "created", seen
    assert seen["shm"] == "created", seen
    assert (seen["disk"], seen["big file"], seen["inodes"]) == ("allocated 2", "allocated 1", "created 20000"), seen
    # a trusted model's files are the cache's own: its metadata changes reach the blob
    assert seen["metadata"] == "chmod changed, utime changed, setxattr changed", seen
    assert len(changed) == 1, changed
    assert seen["shadow"] == ("read" if os.geteuid() == 0 else "PermissionError: Permission denied"), seen
    if Path("/etc/ssl/private").is_dir():  # Debian's: root's (and group ssl-cert's) to list
        assert not seen["tls keys"].startswith("PermissionError") or os.geteuid() != 0, seen
    assert seen["gateway's cmdline"] == "read", seen
    assert str(os.getpid()) in seen["processes"].split(","), seen
    assert runtime["runtime"] == "isolated" and runtime["sandbox"] is None


async def test_a_sandboxed_worker_tunes_itself_but_no_other_models_worker(sandboxed: Gateway) -> None:
    """BLAS and PyTorch pin and renice their own threads (pid 0): allowed. Another model's worker
    (``caller``, in a group of its own) is refused like the gateway, and keeps serving."""
    await probe(sandboxed, "caller", "env:HOME")
    other = (await sandboxed.client.get("/models/caller/versions/1")).json()["runtime"]["worker_pid"]
    mine = await probe(sandboxed, "prober", *(f"{call}:0" for call in MEDDLING))
    assert mine == ["set"] * len(MEDDLING)
    theirs = await probe(sandboxed, "prober", *(f"{call}:{other}" for call in MEDDLING))
    assert all(answer.startswith("PermissionError") for answer in theirs), theirs
    assert await probe(sandboxed, "caller", "env:NO_SUCH_VARIABLE") == ["<absent>"]


async def test_the_version_and_the_status_page_say_what_confines_its_worker(sandboxed: Gateway) -> None:
    await probe(sandboxed, "prober", "env:HOME")
    runtime = (await sandboxed.client.get("/models/prober/versions/1")).json()["runtime"]
    box = runtime["sandbox"]
    assert box["mode"] == "best-effort"
    assert box["environment"]["passed"] == [PASSED]
    assert box["filesystem"]["enforced"] and box["filesystem"]["how"].startswith("Landlock ABI")
    assert "read_only" not in box["filesystem"]  # the host's paths stay in the log (invariant 8)
    assert box["filesystem"]["view"]["how"].startswith("its models' files on a read-only bind mount")
    assert box["network"]["enforced"] and box["network"]["reason"] == "no network (the default)"
    assert box["limits"]["memory"]["enforced"] and box["limits"]["cpu_per_call"]["enforced"]
    assert box["limits"]["open_files"]["how"] == "RLIMIT_NOFILE 1024"
    assert box["limits"]["disk"]["how"].startswith(
        "its scratch folder a tmpfs of 64 MiB of its own (memory, not the disk's), 4096 files at most"
    )
    assert box["syscalls"]["enforced"] and "ptrace" in box["syscalls"]["denied"]
    assert {"prlimit64", "setpriority", "sched_setaffinity"} <= set(box["syscalls"]["self_only"])
    assert box["missing"] == {}  # this host offers every layer (docs/security.md)
    page = (await sandboxed.client.get("/status")).text
    assert "sandbox: environment, filesystem, network, limits, capabilities, syscalls" in page
    assert "Sandbox of isolated workers: best-effort: every layer" in page
    health = (await sandboxed.client.get("/health/ready")).json()
    assert health["sandbox"].startswith("best-effort: every layer (environment, filesystem, network")
    bounds = "memory: 256 MiB of address space past its start (RLIMIT_AS), no memfd or SysV shared memory"
    assert bounds in health["sandbox"] and bounds in page
    assert health["sandbox"].endswith("disk: none; its scratch a 64 MiB tmpfs (memory, beside the above)")


async def test_a_version_tagged_for_the_network_reaches_it_when_the_setting_allows(
    sandboxed: Gateway, listener: int, probe_registry: Registry, env_dir: Path, tmp_path: Path
) -> None:
    assert await probe(sandboxed, "caller", f"connect:127.0.0.1:{listener}", f"env:{PASSED}") == [
        "connected",
        "passed-on-purpose",
    ]
    runtime = (await sandboxed.client.get("/models/caller/versions/1")).json()["runtime"]
    assert not runtime["sandbox"]["network"]["enforced"]
    assert "GATEWAY_SANDBOX_ALLOW_NETWORK is on" in runtime["sandbox"]["network"]["reason"]
    assert runtime["sandbox"]["filesystem"]["enforced"]  # only the network opens
    workers = sandboxed.services.placer.isolated.workers()  # type: ignore[union-attr]
    assert sorted(group.key.network for group in workers) == [False, True]
    async with gateway_for(probe_registry, tmp_path, env_dir, sandbox_allow_network=False) as gw:
        (answer,) = await probe(gw, "caller", f"connect:127.0.0.1:{listener}")
        assert answer != "connected"
        runtime = (await gw.client.get("/models/caller/versions/1")).json()["runtime"]
        assert "ignored: GATEWAY_SANDBOX_ALLOW_NETWORK is off" in runtime["sandbox"]["network"]["reason"]


async def test_two_models_on_one_environment_never_share_a_worker_process(sandboxed: Gateway) -> None:
    """Issue 48: a hostile model answered from the same process as another team's model, whose
    predict, inputs and outputs it could reach. Each model has its own worker, on one environment."""
    prober_pid, prober_models = await probe(sandboxed, "prober", "pid", "models")
    neighbour_pid, neighbour_models = await probe(sandboxed, "neighbour", "pid", "models")
    assert prober_pid != neighbour_pid
    assert (prober_models, neighbour_models) == ("1", "1")  # each sees its own model, not the other's
    environment = [(await sandboxed.client.get(f"/models/{n}/versions/1")).json()["runtime"]["environment"]
                   for n in ("prober", "neighbour")]  # fmt: skip
    assert environment[0] == environment[1]  # built once, shared


async def test_a_versions_size_is_measured_from_outside_not_what_its_worker_says(sandboxed: Gateway) -> None:
    """Issue 48: a model that replaces its worker's RSS report with 1 PiB does not get that size."""
    (said,) = await probe(sandboxed, "forger", "")
    assert int(said) == 2**50  # the worker's own figure is forged
    version = (await sandboxed.client.get("/models/forger/versions/1")).json()
    size = version["loaded"]["size_bytes"]
    assert 0 <= size < 2**32, version["loaded"]  # what /proc shows its load added: MiB, not a PiB


async def test_a_worker_past_its_memory_limit_answers_503_and_is_started_again(sandboxed: Gateway) -> None:
    await probe(sandboxed, "prober", "env:NO_SUCH_VARIABLE")
    before = (await sandboxed.client.get("/models/prober/versions/1")).json()["runtime"]["worker_pid"]
    body = {"dataframe_split": {"columns": ["probe"], "data": [["alloc:1024"]]}}
    answer = await sandboxed.client.post("/models/prober/versions/1/predict", json=body)
    assert answer.status_code == 503, answer.text
    assert answer.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
    assert "over its memory limit" in answer.json()["message"]
    assert (await sandboxed.client.get("/health/live")).status_code == 200
    assert await probe_eventually(sandboxed, "alloc:16") == ["allocated"]  # within its limit: fine
    after = (await sandboxed.client.get("/models/prober/versions/1")).json()["runtime"]["worker_pid"]
    assert after != before


async def test_a_call_past_its_cpu_time_is_killed_with_503(sandboxed: Gateway) -> None:
    body = {"dataframe_split": {"columns": ["probe"], "data": [["spin:60"]]}}
    answer = await sandboxed.client.post("/models/prober/versions/1/predict", json=body)
    assert answer.status_code == 503, answer.text
    assert "over its CPU time limit" in answer.json()["message"]
    assert await probe_eventually(sandboxed, "spin:0.1") == ["spun"]


async def probe_eventually(gw: Gateway, *probes: str) -> list[str]:
    """The worker is started again in the background: 503 until it is."""
    from tests.support.waiting import eventually

    async def attempt() -> list[str] | None:
        body = {"dataframe_split": {"columns": ["probe"], "data": [[p] for p in probes]}}
        response = await gw.client.post("/models/prober/versions/1/predict", json=body)
        return response.json()["predictions"] if response.status_code == 200 else None

    result = await eventually(attempt, "the worker to be started again", timeout=60)
    assert result is not None
    return result


def test_required_refuses_to_start_where_a_layer_is_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    support = dict(gateway_sandbox.host_support())
    # A fault this host cannot produce: it has Landlock (docs/security.md)
    support["filesystem"] = {"available": False, "why_not": "the kernel has no Landlock (or it is disabled)"}
    monkeypatch.setattr(gateway_sandbox, "_support", support)
    with pytest.raises(SandboxUnavailable, match="filesystem: the kernel has no Landlock"):
        sandbox_policy(settings_under(tmp_path, sandbox="required"))
    policy = sandbox_policy(settings_under(tmp_path, sandbox="best-effort"))
    assert "without the filesystem layer of their sandbox" in caplog.text
    assert gateway_sandbox.summary(policy).startswith(
        "best-effort, without filesystem (the kernel has no Landlock (or it is disabled)); memory: "
    )
    # no tmpfs of a worker's own (a host refusing mount namespaces): the disk is missing, and the
    # status says what still bounds it
    support["limits"] = {"available": True, "how": "rlimits", "disk_why_not": "no tmpfs of a worker's own (x)"}
    with pytest.raises(SandboxUnavailable, match="disk: no tmpfs of a worker's own"):
        sandbox_policy(settings_under(tmp_path, sandbox="required", sandbox_disk_mb=64))
    assert gateway_sandbox.summary(sandbox_policy(settings_under(tmp_path, sandbox_disk_mb=64))).endswith(
        "disk: each file at most 64 MiB (RLIMIT_FSIZE), the total unbounded"
    )
    from click.testing import CliRunner

    from gateway.cli import main

    monkeypatch.setenv("GATEWAY_SANDBOX", "required")
    refused = CliRunner().invoke(main, ["serve", "--port", "1"])
    assert refused.exit_code == 1 and "GATEWAY_SANDBOX=required" in refused.output, refused.output


def test_env_pass_never_hands_over_the_gateways_own_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_ENV_PASS", "MODEL_SERVICE_KEY,GATEWAY_ADMIN_TOKEN")
    with pytest.raises(SettingsError, match="GATEWAY_ADMIN_TOKEN.*never reach a worker"):
        load_settings()
    monkeypatch.setenv("GATEWAY_ENV_PASS", "MODEL_SERVICE_KEY")
    assert load_settings().env_pass == ["MODEL_SERVICE_KEY"]


def test_the_folders_of_a_killed_gateway_are_swept_and_a_live_ones_kept(tmp_path: Path) -> None:
    import subprocess
    import sys

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead, alive = tmp_path / f"abc-{int(gone.stdout)}-0001", tmp_path / f"abc-{os.getpid()}-0002"
    for folder in (dead, alive):
        (folder / "scratch").mkdir(parents=True)
    assert gateway_sandbox.sweep(tmp_path) == [dead]
    assert alive.exists() and not dead.exists()


def test_layers_a_worker_claims_and_the_kernel_contradicts_are_missing(tmp_path: Path) -> None:
    """What a forged report (issue 48: a .pth file's fake sandbox module) says is checked from
    outside: a real process that applied nothing, claiming every layer, has every checkable one
    missing, and under ``required`` is refused."""
    import subprocess
    import sys

    claims = {
        "limits": {
            "open_files": {"enforced": True, "how": "RLIMIT_NOFILE 1024"},
            "memory": {"enforced": True, "how": "RLIMIT_AS", "bytes": 2**30},
        },
        "network": {"enforced": True, "how": "a user and network namespace of its own"},
        "filesystem": {"enforced": True, "how": "Landlock ABI 7", "view": {"enforced": True, "how": "read-only"}},
        "capabilities": {"enforced": True, "how": "none"},
        "syscalls": {"enforced": True, "how": "seccomp"},
    }
    hello = {"sandbox": {"limits": {"memory": claims["limits"]["memory"]}}}
    contradicted = {"network", "filesystem", "filesystem.view", "capabilities", "syscalls"}
    contradicted |= {"limits.memory", "limits.open_files"}
    no_network = gateway_sandbox.NetworkChoice(False, "no network (the default)")
    unconfined = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        for mode in ("required", "best-effort"):
            policy = gateway_sandbox.SandboxPolicy(mode=mode, root=tmp_path, memory_bytes=2**30)  # type: ignore[arg-type]
            box = gateway_sandbox.WorkerSandbox(policy, no_network, label=mode, watchdog=gateway_sandbox.CpuWatchdog(0))
            if mode == "required":
                with pytest.raises(SandboxUnavailable, match="network: contradicted from outside"):
                    box.accept(claims, hello, unconfined.pid)
            else:
                box.accept(claims, hello, unconfined.pid)
                missing = box.describe()["missing"]
                assert set(missing) == contradicted | {"limits.cpu_per_call"}, missing
                assert all(missing[name].startswith("contradicted from outside") for name in contradicted), missing
                line = gateway_sandbox.summary(policy, missing)  # /health/ready's, with this worker running
                assert line.startswith(
                    "best-effort, without filesystem in running workers (contradicted from outside"
                ), line
            box.close()
    finally:
        unconfined.communicate(b"")
