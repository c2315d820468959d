"""Versions whose requirements the gateway does not satisfy, served by workers on environments
built with real uv from the package index (issue 24).

The models are tests/support/env_models/reporter.py, logged with different pip requirements:
each answer says which release of a package the serving process has, so a test reads which
environment served it. One module-wide environment directory: builds are shared between the
tests as between the gateways of one host.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import httpx
import mlflow
import pandas as pd
import pytest
from mlflow.models import infer_signature

from gateway.http.status_page import collect
from gateway.runtimes.environments import EnvironmentStore
from gateway.status_report import render
from tests.conftest import Gateway, Registry, empty_registry, running_gateway, settings_under
from tests.support import agents
from tests.support.servers import gateway_server
from tests.support.shared_envs import with_environment
from tests.support.waiting import eventually, until, wait_until

pytestmark = pytest.mark.anyio

REPORTER = Path(__file__).parents[2] / "support" / "env_models" / "reporter.py"
SIGNATURE = infer_signature(
    pd.DataFrame({"package": ["numpy"]}), ["1.0"], params={"hold_file": "", "release_file": "", "hold_seconds": 0.0}
)
OTHER_SKLEARN = "1.5.2"  # not the gateway's (tests/gateway/runtimes: pyproject pins scikit-learn>=1.4)


def log_reporter(registry: Registry, name: str, requirements: list[str]) -> int:
    def log() -> int:
        with mlflow.start_run(run_name=name):
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(REPORTER),
                registered_model_name=name,
                signature=SIGNATURE,
                pip_requirements=requirements,
            )
        return int(info.registered_model_version)

    return registry.log(log)


@pytest.fixture(scope="module")
def env_registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    registry = empty_registry(tmp_path_factory.mktemp("env-registry"))
    log_reporter(registry, "pinned", [f"scikit-learn=={OTHER_SKLEARN}"])
    log_reporter(registry, "pinned-again", [f"scikit_learn == {OTHER_SKLEARN}"])  # the same set, spelled otherwise
    log_reporter(registry, "tabulated", ["tabulate==0.9.0"])
    # the same requirements (so the same environment and worker): a ResponsesAgent that streams
    registry.log(agents.log_model_from_code, "streamed", agents.RESPONSES_AGENT, pip_requirements=["tabulate==0.9.0"])
    log_reporter(registry, "fits", ["mlflow"])  # what the gateway has: served in process
    log_reporter(registry, "fits", ["this-package-does-not-exist-registry-gateway==1.0"])
    registry.client.set_registered_model_alias("fits", "champion", "1")
    return registry


@pytest.fixture(scope="module")
def env_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The module's environment folder, holding the pinned scikit-learn's environment (built
    once a run with its bytecode compiled, shared with the sandbox tests' probers: their
    requirements)."""
    env_dir = tmp_path_factory.mktemp("envs")
    with_environment(env_dir, [f"scikit-learn=={OTHER_SKLEARN}"])
    return env_dir


@pytest.fixture
def make_gateway(
    env_registry: Registry, env_dir: Path, tmp_path: Path
) -> Callable[..., AbstractAsyncContextManager[Gateway]]:
    def make(**overrides: Any) -> AbstractAsyncContextManager[Gateway]:
        return running_gateway(settings_under(tmp_path, env_dir=env_dir, **overrides), env_registry.tracking_uri)

    return make


def ask(*packages: str, **params: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"dataframe_split": {"columns": ["package"], "data": [[p] for p in packages]}}
    if params:
        body["params"] = params
    return body


async def predict(client: httpx.AsyncClient, name: str, version: int, *packages: str) -> list[str]:
    response = await client.post(f"/models/{name}/versions/{version}/predict", json=ask(*packages))
    assert response.status_code == 200, response.text
    return response.json()["predictions"]  # type: ignore[no-any-return]


def _children(task: Path) -> list[str]:
    """The processes a thread of this one started; none for a thread that ended since it was
    listed (its /proc entry is gone: the gateway's threads come and go while a test polls)."""
    try:
        return (task / "children").read_text().split()
    except FileNotFoundError:
        return []


def in_scratch(root: Path, name: str) -> Path | None:
    """A file the reporter wrote in its worker's scratch folder (gateway/runtimes/sandbox.py), the one
    place a sandboxed worker may write, under the artifact cache of settings_under(root). The folder
    is a tmpfs in the worker's own mount namespace: seen through ``/proc/<worker>/root``."""
    workers = [pid for task in Path("/proc/self/task").iterdir() for pid in _children(task)]
    for scratch in (root / "artifact-cache" / "sandboxes").glob("*/scratch"):
        for pid in workers:
            found = Path(f"/proc/{pid}/root{scratch}") / name
            if found.exists():
                return found
    return None


async def runtime_of(client: httpx.AsyncClient, name: str, version: int) -> dict[str, Any]:
    response = await client.get(f"/models/{name}/versions/{version}")
    assert response.status_code == 200, response.text
    runtime = response.json()["runtime"]
    assert runtime is not None
    return runtime  # type: ignore[no-any-return]


@pytest.mark.timeout(600)  # the module's first: its setup may build the run's shared environment and compile it
async def test_a_version_pinning_another_scikit_learn_is_served_with_that_release(
    make_gateway: Callable[..., AbstractAsyncContextManager[Gateway]],
) -> None:
    import sklearn

    assert sklearn.__version__ != OTHER_SKLEARN  # else this test proves nothing
    async with make_gateway() as gw:
        answer = await predict(gw.client, "pinned", 1, "scikit-learn", "python", "pid")
        assert answer[:2] == [OTHER_SKLEARN, "{}.{}.{}".format(*__import__("sys").version_info[:3])]
        assert int(answer[2]) != os.getpid()  # another process
        runtime = await runtime_of(gw.client, "pinned", 1)
        assert runtime["runtime"] == "isolated"
        assert runtime["worker_pid"] == int(answer[2])
        assert any(m.startswith(f"scikit-learn=={OTHER_SKLEARN}") for m in runtime["mismatches"]), runtime
        assert f"installed: {sklearn.__version__}" in runtime["reason"]
        listing = (await gw.client.get("/models")).json()["models"]
        assert {m["name"]: m["isolated_versions"] for m in listing}["pinned"] == {"1": runtime["environment"]}
        metrics = (await gw.client.get("/metrics")).text
        assert (
            f'gateway_version_runtime{{device="cpu",environment="{runtime["environment"]}",model="pinned",'
            'runtime="isolated",version="1"} 1.0' in metrics
        )


async def test_a_version_needing_a_package_the_gateway_lacks_gets_it(
    make_gateway: Callable[..., AbstractAsyncContextManager[Gateway]],
) -> None:
    with pytest.raises(ImportError):
        __import__("tabulate")  # the gateway's own environment lacks it
    async with make_gateway() as gw:
        assert await predict(gw.client, "tabulated", 1, "tabulate", "import:tabulate") == ["0.9.0", "imported"]
        assert "tabulate==0.9.0 (not installed)" in (await runtime_of(gw.client, "tabulated", 1))["mismatches"]


async def test_a_version_in_a_worker_streams_over_sse_and_a_disconnect_closes_it_there(
    make_gateway: Callable[..., AbstractAsyncContextManager[Gateway]], tmp_path: Path
) -> None:
    """predict_stream in a worker, through the gateway (issue 44): the worker's chunks as events."""
    ask = [{"role": "user", "content": "one two three"}]
    async with make_gateway() as gw:
        response = await gw.client.post("/models/streamed/invocations", json={"input": ask, "stream": True})
        assert response.status_code == 200, response.text
        assert (await runtime_of(gw.client, "streamed", 1))["runtime"] == "isolated"
        events = [block.removeprefix("data: ") for block in response.text.split("\n\n") if block]
        assert events[-1] == "[DONE]"
        deltas = [json.loads(e).get("delta") for e in events[:-1]]
        assert deltas == ["one ", "two ", "three", None]  # then the whole message as one item
        # ended early (here: by the process stopping), the worker's generator is closed; it says
        # so in its scratch folder, the one place a sandboxed worker may write
        custom = {"repeat": 1000, "delay": 0.01, "closed_file": "closed"}
        body = {"input": ask, "custom_inputs": custom, "stream": True}
        running = asyncio.create_task(gw.client.post("/models/streamed/invocations", json=body))
        await until(lambda: any(s.events > 2 for s in gw.services.streams._open), "the stream to send")
        gw.services.streams.end_all()
        assert (await running).text.rstrip().splitlines()[-1].startswith('data: {"error_code"')
        wait_until(lambda: in_scratch(tmp_path, "closed"), timeout=20, what="the worker to close the generator")
        closed = in_scratch(tmp_path, "closed")
        assert closed is not None and closed.read_text().startswith("cancelled")


async def test_two_models_with_one_set_of_requirements_share_an_environment_never_a_worker(
    make_gateway: Callable[..., AbstractAsyncContextManager[Gateway]], env_dir: Path
) -> None:
    async with make_gateway() as gw:
        first = await predict(gw.client, "pinned", 1, "pid", "scikit-learn")
        second = await predict(gw.client, "pinned-again", 1, "pid", "scikit-learn")
        assert first[1] == second[1] and first[0] != second[0]  # one release, two processes (issue 48)
        one, other = await runtime_of(gw.client, "pinned", 1), await runtime_of(gw.client, "pinned-again", 1)
        assert one["environment"] == other["environment"]
        assert len(gw.services.placer.isolated.workers()) == 2  # type: ignore[union-attr]
    keys = [env.key for env in EnvironmentStore(env_dir).environments()]
    assert keys.count(one["environment"]) == 1


def test_a_models_versions_share_its_workers_unless_the_setting_gives_each_its_own(tmp_path: Path) -> None:
    """GATEWAY_ENV_WORKER_SHARING: which versions one group of worker processes serves."""
    from gateway.runtimes.environments import Environment
    from gateway.runtimes.isolated import IsolatedRuntime
    from gateway.runtimes.sandbox import NetworkChoice
    from registry_sync.identity import VersionId

    env = Environment("k" * 20, tmp_path, "3.11.7", None)
    denied = NetworkChoice(False, "no network (the default)")
    v1, v2, other = (VersionId(n, v, f"models:/m-{n}{v}", None) for n, v in (("a", 1), ("a", 2), ("b", 1)))
    for sharing, together in (("model", True), ("version", False)):
        runtime = IsolatedRuntime(EnvironmentStore(tmp_path), max_workers=8, sharing=sharing)  # type: ignore[arg-type]
        try:
            assert (runtime.group_key(v1, env, denied) == runtime.group_key(v2, env, denied)) is together
            assert runtime.group_key(v1, env, denied) != runtime.group_key(other, env, denied)  # never two models
        finally:
            runtime.close()


async def test_an_uninstallable_requirement_refuses_the_version_and_the_last_one_keeps_serving(
    make_gateway: Callable[..., AbstractAsyncContextManager[Gateway]],
) -> None:
    async with make_gateway() as gw:
        assert (await gw.client.post("/models/fits/predict", json=ask("pid"))).headers["X-Model-Version"] == "1"
        refused = await gw.client.post("/models/fits/versions/2/predict", json=ask("pid"))
        assert refused.status_code == 409, refused.text
        body = refused.json()
        assert body["error_code"] == "INVALID_STATE"
        assert "this-package-does-not-exist-registry-gateway" in body["message"]  # uv's own words
        assert "GATEWAY_ENV_MANAGER=uv" in body["message"]
        runtime = await runtime_of(gw.client, "fits", 2)
        assert runtime["runtime"] == "isolated" and runtime["reason"].startswith("refused:")
        detail = (await gw.client.get("/models/fits/versions/2")).json()
        assert detail["refused"] is not None and "its environment could not be built" in detail["refused"]
        assert detail["refused"] in body["message"]  # what the 409 says is refused, the version says too
        shown = render(await collect(gw.services, limit=100))
        row = next(line for line in shown.splitlines() if line.startswith("fits\t2\t"))
        assert "None" not in row and "refused: its environment could not be built" in row, row
        events = (await gw.client.get("/events", params={"model": "fits"})).json()["events"]
        assert any(e["kind"] == "refused" and "this-package-does-not-exist" in (e["reason"] or "") for e in events)
        served = await gw.client.post("/models/fits/predict", json=ask("pid"))
        assert served.status_code == 200 and served.headers["X-Model-Version"] == "1"
        assert (await runtime_of(gw.client, "fits", 1))["runtime"] == "in_process"


async def test_a_killed_worker_answers_its_requests_in_flight_503_and_comes_back(
    make_gateway: Callable[..., AbstractAsyncContextManager[Gateway]], tmp_path: Path
) -> None:
    async with make_gateway() as gw:
        pid = int((await predict(gw.client, "pinned", 1, "pid"))[0])
        in_flight = asyncio.ensure_future(
            gw.client.post("/models/pinned/versions/1/predict", json=ask("pid", hold_file="held", hold_seconds=60.0))
        )

        await asyncio.to_thread(
            wait_until, lambda: in_scratch(tmp_path, "held"), timeout=30, what="the request to reach the worker"
        )
        os.kill(pid, signal.SIGKILL)
        async with asyncio.timeout(10):  # a hang guard, not a measurement: it answers at once
            answer = await in_flight
        assert answer.status_code == 503, answer.text
        assert answer.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
        assert answer.headers["Retry-After"] == "1"

        async def restarted() -> str | None:
            response = await gw.client.post("/models/pinned/versions/1/predict", json=ask("pid"))
            return response.json()["predictions"][0] if response.status_code == 200 else None

        new_pid = await eventually(restarted, "the worker to be started again", timeout=60)
        assert new_pid is not None and int(new_pid) != pid
        assert (await runtime_of(gw.client, "pinned", 1))["worker_pid"] == int(new_pid)


async def test_with_the_local_manager_a_mismatch_is_served_in_process_with_one_warning(
    make_gateway: Callable[..., AbstractAsyncContextManager[Gateway]], caplog: pytest.LogCaptureFixture
) -> None:
    import sklearn

    caplog.set_level("WARNING", logger="gateway.runtimes.placement")
    async with make_gateway(env_manager="local") as gw:
        for _ in range(2):
            assert await predict(gw.client, "pinned", 1, "scikit-learn", "pid") == [
                sklearn.__version__,
                str(os.getpid()),
            ]
        runtime = await runtime_of(gw.client, "pinned", 1)
    assert runtime["runtime"] == "in_process" and "GATEWAY_ENV_MANAGER=local" in runtime["reason"]
    warnings = [r for r in caplog.records if "pinned" in r.getMessage()]
    assert len(warnings) == 1 and f"scikit-learn=={OTHER_SKLEARN}" in warnings[0].getMessage()


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1].startswith("Z")  # a zombie waits only to be reaped
    except FileNotFoundError:
        return True


@pytest.mark.e2e
def test_no_worker_outlives_a_sigkilled_gateway(env_registry: Registry, env_dir: Path, tmp_path: Path) -> None:
    process, base = gateway_server(
        tracking_uri=env_registry.tracking_uri,
        workdir=tmp_path / "gw",
        env={"GATEWAY_ENV_DIR": str(env_dir), "GATEWAY_WARM_ALIASES": ""},
    )
    process.start()
    try:
        response = httpx.post(f"{base}/models/pinned/versions/1/predict", json=ask("pid"), timeout=120)
        assert response.status_code == 200, response.text
        worker = int(response.json()["predictions"][0])
        assert not _gone(worker)
        process.stop(signal.SIGKILL)
        wait_until(lambda: _gone(worker), timeout=10, what=f"worker {worker} to exit after its gateway was killed")
    finally:
        if process.running:
            process.stop()


async def test_a_worker_counts_its_own_memory_once_apart_from_its_versions_and_stops_with_the_last(
    make_gateway: Callable[..., AbstractAsyncContextManager[Gateway]],
) -> None:
    """A version in a worker is charged what its load added to the worker's RSS, not the
    interpreter with MLflow, pandas and NumPy (a few hundred MiB) that every worker is: that is
    counted once per worker, apart from the budget, and shown on /status and by the CLI."""
    async with make_gateway(max_loaded_models=1) as gw:
        worker = int((await predict(gw.client, "tabulated", 1, "pid"))[0])
        loaded = (await gw.client.get("/models/tabulated/versions/1")).json()["loaded"]
        health = (await gw.client.get("/health/ready")).json()
        assert health["worker_processes"] == 1 and health["worker_bytes"] > 50 * 2**20, health
        assert loaded["size_bytes"] < health["worker_bytes"] / 4, (loaded, health)  # its own, not the worker's
        assert gw.services.cache.loaded_bytes == loaded["size_bytes"] == health["loaded_bytes"]
        shown = render(await collect(gw.services))
        assert "1 isolated worker process, " in shown and " MiB of their own" in shown, shown
        assert "KiB KiB" not in shown and "None" not in shown
        page = (await gw.client.get("/status")).text
        assert "Workers: 1 isolated worker process" in page
        await predict(gw.client, "fits", 1, "pid")  # in process: the worker's only version is evicted
        await asyncio.to_thread(wait_until, lambda: _gone(worker), timeout=10, what="the idle worker to stop")
        assert gw.services.placer.isolated.workers() == []  # type: ignore[union-attr]
        health = (await gw.client.get("/health/ready")).json()
        assert (health["worker_processes"], health["worker_bytes"]) == (0, 0)


def test_a_version_logged_with_another_python_runs_on_that_python_when_the_host_has_one(
    tmp_path: Path, env_dir: Path
) -> None:
    """A version whose python_env.yaml names Python 3.10 (rewritten in its artifacts, as if
    logged there) runs on a 3.10 interpreter of this host, found without downloading one; a
    host without one builds on the gateway's own Python and says so."""
    import asyncio as _asyncio

    from gateway.runtimes.environments import find_python, uv_binary

    registry = empty_registry(tmp_path / "registry")
    version = log_reporter(registry, "old-python", ["tabulate==0.9.0"])
    source = Path(registry.client.get_model_version_download_uri("old-python", str(version)).removeprefix("file://"))
    env_file = source / "python_env.yaml"
    env_file.write_text(env_file.read_text().replace("python: 3.11", "python: 3.10", 1))
    found = find_python("3.10", uv=uv_binary())

    async def run() -> tuple[list[str], dict[str, Any]]:
        settings = settings_under(tmp_path / "gw", env_dir=env_dir)
        async with running_gateway(settings, registry.tracking_uri) as gw:
            return await predict(gw.client, "old-python", version, "python"), await runtime_of(
                gw.client, "old-python", version
            )

    answer, runtime = _asyncio.run(run())
    assert runtime["runtime"] == "isolated" and "python 3.10 (this process runs 3.11)" in runtime["mismatches"]
    if found is None:
        assert answer[0].startswith("3.11") and "no Python 3.10 on this host" in runtime["note"]
    else:
        assert answer[0] == found[1] and answer[0].startswith("3.10.")
        assert runtime["python"] == found[1] and runtime["note"] is None


async def test_an_idle_worker_is_stopped_and_its_version_loads_again_when_asked(
    make_gateway: Callable[..., AbstractAsyncContextManager[Gateway]],
) -> None:
    async with make_gateway(env_worker_idle_seconds=0.5) as gw:
        worker = int((await predict(gw.client, "tabulated", 1, "pid"))[0])
        in_process = await predict(gw.client, "fits", 1, "pid")  # in process: never reaped
        await asyncio.to_thread(wait_until, lambda: _gone(worker), timeout=20, what="the idle worker to stop")
        assert [key.name for key in gw.services.cache.keys()] == ["fits"]
        again = int((await predict(gw.client, "tabulated", 1, "pid"))[0])
        assert again != worker
        assert await predict(gw.client, "fits", 1, "pid") == in_process


async def test_a_warm_alias_moves_to_an_isolated_version_only_once_its_worker_answered_warm_up(
    make_gateway: Callable[..., AbstractAsyncContextManager[Gateway]], env_registry: Registry
) -> None:
    name = "swap-to-isolated"
    first = log_reporter(env_registry, name, ["mlflow"])
    env_registry.client.set_registered_model_alias(name, "champion", str(first))
    async with make_gateway(warm_aliases=["champion"], admin_token="t0ken") as gw:
        before = await gw.client.post(f"/models/{name}/predict", json=ask("pid"))
        assert before.headers["X-Model-Version"] == str(first) and before.json()["predictions"] == [str(os.getpid())]
        second = log_reporter(env_registry, name, ["tabulate==0.9.0"])
        env_registry.client.set_registered_model_alias(name, "champion", str(second))
        synced = await gw.client.post("/admin/sync", params={"model": name}, headers={"Authorization": "Bearer t0ken"})
        assert synced.status_code == 200, synced.text
        answers = []

        async def swapped() -> bool | None:
            response = await gw.client.post(f"/models/{name}/predict", json=ask("tabulate"))
            answers.append((response.status_code, response.headers.get("X-Model-Version"), response.json()))
            return True if response.headers.get("X-Model-Version") == str(second) else None

        await eventually(swapped, "the alias to move to the isolated version", timeout=120)
        # every answer while the worker built and warmed came from the old version, in process
        assert all(a[0] == 200 for a in answers), answers
        assert all(a[2]["predictions"] == ["missing"] for a in answers[:-1])
        assert answers[-1][1] == str(second) and answers[-1][2]["predictions"] == ["0.9.0"]

        async def recorded() -> list[dict[str, Any]] | None:
            """The history, once it holds the swap (recorded in a thread just after the flip)."""
            events: list[dict[str, Any]] = (await gw.client.get("/events", params={"model": name})).json()["events"]
            return events if any(e["kind"] == "swapped" and e.get("version") == second for e in events) else None

        events = await eventually(recorded, "the swap to be recorded", timeout=10)
        kinds = [e["kind"] for e in reversed(events) if e.get("version") == second]
        assert kinds.index("warmed") < kinds.index("swapped"), (kinds, events)
        assert (await runtime_of(gw.client, name, second))["runtime"] == "isolated"


async def test_with_two_processes_a_request_goes_to_the_one_not_busy(
    make_gateway: Callable[..., AbstractAsyncContextManager[Gateway]], tmp_path: Path
) -> None:
    async with make_gateway(env_processes=2) as gw:
        await predict(gw.client, "tabulated", 1, "pid")
        pids = (await runtime_of(gw.client, "tabulated", 1))["worker_pids"]
        assert len(set(pids)) == 2
        hold = ask("pid", hold_file="held", release_file="release", hold_seconds=120.0)  # until released
        held = asyncio.ensure_future(gw.client.post("/models/tabulated/versions/1/predict", json=hold))
        await asyncio.to_thread(
            wait_until, lambda: in_scratch(tmp_path, "held"), timeout=30, what="the held request to reach a worker"
        )
        other = int((await predict(gw.client, "tabulated", 1, "pid"))[0])
        assert not held.done()  # answered by the other process while the first still holds
        held_file = in_scratch(tmp_path, "held")  # in the holding worker's own scratch (a tmpfs of its own)
        assert held_file is not None
        (held_file.parent / "release").touch()
        first = int((await held).json()["predictions"][0])
        assert {first, other} == set(pids)
