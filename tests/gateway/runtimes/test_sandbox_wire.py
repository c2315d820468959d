"""Issue 48, points 3, 4 and 6: what a model can do to the gateway through what its worker
shares with it (the socket, its stdout, the gateway's threads), each attack run from inside
``predict`` (or a load) of tests/support/env_models/hostile.py in a sandboxed worker, through the
real gateway (the gateway runs in this test's process: its memory is this process's).

- a frame announcing more than GATEWAY_SANDBOX_MAX_ANSWER_MB: the worker is killed (503) before
  the gateway allocates any of it, and started again;
- an answer holding an array without its bytes: 503, never the gateway's own memory;
- a line longer than GATEWAY_SANDBOX_LOG_LINE_BYTES on stdout: logged cut, never held whole;
- a model that sleeps holds its own worker's thread, not the shared predict pool's, and not
  past GATEWAY_SANDBOX_CALL_SECONDS; a thread of its own burning CPU between calls, or a load
  that spins, is killed at GATEWAY_SANDBOX_CPU_SECONDS.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.runtimes import isolated
from tests.conftest import Gateway, Registry, empty_registry
from tests.gateway.runtimes.test_sandbox import REQUIREMENTS, gateway_for, log_prober
from tests.support.peak_memory import peak_growth
from tests.support.shared_envs import with_environment
from tests.support.versions import entry
from tests.support.waiting import eventually, until

pytestmark = pytest.mark.anyio

HOSTILE = Path(__file__).parents[2] / "support" / "env_models" / "hostile.py"
ANSWER_MB = 64  # GATEWAY_SANDBOX_MAX_ANSWER_MB here: the most a worker may make the gateway hold
THREADS = 2  # GATEWAY_INFERENCE_THREADS here: the shared predict pool
TIMEOUT = 20  # GATEWAY_PREDICT_TIMEOUT_SECONDS here
SPIN_ON_LOAD = 15  # CPU seconds the spinner's load burns; GATEWAY_SANDBOX_CPU_SECONDS is 3


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    registry = empty_registry(tmp_path_factory.mktemp("hostile-registry"))
    hostile = {"code": HOSTILE, "column": "attack"}
    registry.log(log_prober, "hostile", **hostile)
    registry.log(log_prober, "spinner", config={"spin_on_load": SPIN_ON_LOAD}, **hostile)
    registry.log(log_prober, "sleeper", config={"sleep_on_load": 3600}, **hostile)
    # Another team's model, on a worker of its own (versions allowed the network get their own)
    registry.log(log_prober, "bystander", {"gateway.network": "allow"}, **hostile)
    # Named so that the group key, once a string joined from names, was the bystander's
    registry.log(log_prober, "bystander+network", **hostile)
    return registry


@pytest.fixture(scope="module")
def env_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The module's environment folder, holding the hostile models' environment: the probers'
    requirements, built once a run with its bytecode compiled (tests/support/shared_envs.py)."""
    env_dir = tmp_path_factory.mktemp("envs")
    with_environment(env_dir, REQUIREMENTS)
    return env_dir


@pytest.fixture
async def gw(
    registry: Registry, env_dir: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Gateway]:
    """A gateway of the test's own: each attack kills workers, and a group dying three times a
    minute is not started again."""
    overrides = getattr(request, "param", {})
    values = {"sandbox_max_answer_mb": ANSWER_MB, "inference_threads": THREADS, "predict_timeout_seconds": TIMEOUT}
    values["env_compile_bytecode"] = True  # one environment, a worker or two started by every test
    async with gateway_for(registry, tmp_path, env_dir, **values | overrides) as gateway:
        yield gateway


async def attack(gw: Gateway, name: str, *attacks: str) -> Any:
    body = {"dataframe_split": {"columns": ["attack"], "data": [[a] for a in attacks]}}
    return await gw.client.post(f"/models/{name}/versions/1/predict", json=body, timeout=120)


async def worker_pid(gw: Gateway, name: str) -> int:
    return int((await gw.client.get(f"/models/{name}/versions/1")).json()["runtime"]["worker_pid"])


async def served_again(gw: Gateway, name: str, before: int) -> None:
    """The worker is started again in the background (503 until it is): then it answers."""

    async def attempt() -> bool | None:
        answer = await attack(gw, name, "")
        return True if answer.status_code == 200 else None

    await eventually(attempt, "the worker to be started again", timeout=60)
    assert await worker_pid(gw, name) != before


def refused(answer: Any, why: str) -> None:
    assert answer.status_code == 503, answer.text
    body = answer.json()
    assert body["error_code"] == "TEMPORARILY_UNAVAILABLE" and why in body["message"], body
    assert "predictions" not in body


@pytest.mark.timeout(600)  # the module's first: its setup may build the environment and compile it
async def test_a_frame_announcing_too_much_kills_the_worker_before_the_gateway_allocates(gw: Gateway) -> None:
    assert (await attack(gw, "hostile", "")).status_code == 200
    before = await worker_pid(gw, "hostile")
    bound = ANSWER_MB * 2**20
    with peak_growth() as peak:
        answer = await attack(gw, "hostile", f"frame:{16 * bound}")
    refused(answer, "broke the wire protocol")
    assert peak.growth < bound, f"the gateway's RSS rose by {peak.growth >> 20} MiB"
    assert (await gw.client.get("/health/live")).status_code == 200
    await served_again(gw, "hostile", before)


async def test_an_array_without_its_bytes_never_answers_the_gateways_memory(gw: Gateway) -> None:
    assert (await attack(gw, "hostile", "")).status_code == 200
    before = await worker_pid(gw, "hostile")
    refused(await attack(gw, "hostile", "empty-array:300000"), "broke the wire protocol")
    await served_again(gw, "hostile", before)


async def test_a_line_without_end_on_stdout_is_cut_not_held(gw: Gateway, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.worker")
    assert (await attack(gw, "hostile", "")).status_code == 200
    bound = ANSWER_MB * 2**20
    with peak_growth() as peak:
        answer = await attack(gw, "hostile", f"line:{4 * bound}")
        assert answer.status_code == 200 and answer.json()["predictions"] == ["written"], answer.text

        def cut() -> bool:
            return any("more bytes of this line dropped" in r.getMessage() for r in caplog.records)

        await until(cut, "the cut line in the log", timeout=60)
    assert peak.growth < bound, f"the gateway's RSS rose by {peak.growth >> 20} MiB"
    (line,) = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(line) < 2 * gw.services.settings.sandbox_log_line_bytes


def queued(gw: Gateway, name: str) -> int:
    return int(entry(gw.services.cache, name, 1).model.queue.waiting)


async def test_a_sleeping_model_holds_no_thread_another_models_worker_needs(
    gw: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.worker")
    assert (await attack(gw, "bystander", "")).status_code == 200
    assert (await attack(gw, "hostile", "")).status_code == 200
    sleepers = [asyncio.create_task(attack(gw, "hostile", "sleep:3600")) for _ in range(THREADS)]
    try:
        # one is asleep inside predict, and the gateway has taken every one of them (a thread of
        # the shared pool each, before the fix: the call, and one waiting for the worker)
        await until(lambda: any("asleep" in r.getMessage() for r in caplog.records), "a request asleep")
        await until(lambda: queued(gw, "hostile") == 0, "every sleeping request taken")
        answer = await attack(gw, "bystander", "")
        assert answer.status_code == 200, answer.text
    finally:
        for task in sleepers:
            task.cancel()
        await asyncio.gather(*sleepers, return_exceptions=True)


@pytest.mark.parametrize("gw", [{"sandbox_call_seconds": 2}], indirect=True)
async def test_a_call_past_its_wall_time_is_killed_with_503(gw: Gateway) -> None:
    assert (await attack(gw, "hostile", "")).status_code == 200
    before = await worker_pid(gw, "hostile")
    refused(await attack(gw, "hostile", "sleep:3600"), "over its call time limit")
    await served_again(gw, "hostile", before)


async def test_a_thread_burning_cpu_between_calls_gets_its_worker_killed(
    gw: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="gateway.runtimes.sandbox")
    assert (await attack(gw, "hostile", "")).status_code == 200
    before = await worker_pid(gw, "hostile")
    answer = await attack(gw, "hostile", "thread-spin:60")
    assert answer.json()["predictions"] == ["started"], answer.text
    await until(lambda: "between two calls" in caplog.text, "the worker killed between calls", timeout=60)
    await served_again(gw, "hostile", before)


async def test_a_load_that_spins_is_killed(gw: Gateway) -> None:
    refused(await attack(gw, "spinner", ""), "loading a version")
    assert (await gw.client.get("/health/live")).status_code == 200


@pytest.mark.parametrize(
    "what",
    [
        'answer:{"ok": true}',  # no value
        'answer:{"ok": false, "error": "not an object"}',
        "nested:100000",  # past the interpreter's recursion limit, in the gateway's JSON decoder
    ],
)
async def test_a_malformed_answer_kills_the_worker_with_503_never_a_500(gw: Gateway, what: str) -> None:
    """Review of issue 48, point 8: each of these was a KeyError, AttributeError or RecursionError
    in the gateway (500), and the worker that sent it lived on."""
    assert (await attack(gw, "hostile", "")).status_code == 200
    before = await worker_pid(gw, "hostile")
    refused(await attack(gw, "hostile", what), "broke the wire protocol")
    await served_again(gw, "hostile", before)


async def test_an_error_type_no_class_can_be_named_is_the_models_error(gw: Gateway) -> None:
    answer = await attack(gw, "hostile", 'answer:{"ok": false, "error": {"type": "Bad\\u0000Name", "message": "m"}}')
    assert answer.status_code == 400, answer.text
    assert answer.json()["message"].endswith("RemoteError: m"), answer.json()


def test_the_error_types_a_worker_names_are_bounded() -> None:
    """The classes kept stay bounded, and past the bound every error still carries its own type's
    name (a hostile worker's many names once turned every later ValueError into RemoteError)."""
    for n in range(2 * isolated.MAX_REMOTE_TYPES):
        made = isolated._remote_exception({"type": f"Made{n}", "message": "m"})
        assert (type(made).__name__, str(made)) == (f"Made{n}", "m")
    assert len(isolated._remote_types) <= isolated.MAX_REMOTE_TYPES
    assert type(isolated._remote_exception({"type": "ValueError", "message": "m"})).__name__ == "ValueError"


async def test_a_model_named_to_collide_gets_a_worker_of_its_own(gw: Gateway) -> None:
    """Review of issue 48, point 5: ``bystander+network`` (no network tag), on the same
    environment, was served by network-allowed ``bystander``'s worker."""
    assert (await attack(gw, "bystander", "")).status_code == 200
    assert (await attack(gw, "bystander+network", "")).status_code == 200
    assert await worker_pid(gw, "bystander") != await worker_pid(gw, "bystander+network")
    version = (await gw.client.get("/models/bystander+network/versions/1")).json()
    assert version["runtime"]["sandbox"]["network"]["enforced"], version["runtime"]


@pytest.mark.parametrize("gw", [{"sandbox_load_seconds": 2}], indirect=True)
async def test_a_load_that_sleeps_is_killed_at_its_wall_time(gw: Gateway) -> None:
    """Review of issue 48, point 4: a load that sleeps (using no CPU) held a load thread, and
    its caller, for as long as it liked."""
    refused(await attack(gw, "sleeper", ""), "over its load time limit")
    assert (await gw.client.get("/health/live")).status_code == 200
