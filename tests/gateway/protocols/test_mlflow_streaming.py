"""``"stream": true`` on MLflow's scoring routes: ``predict_stream`` as server-sent events, for
the deterministic agents and chat models of tests/support/agents (issue 44)."""

from __future__ import annotations

import asyncio
import json
import select
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.demo import using_registry
from gateway.settings import GatewaySettings
from tests.conftest import Gateway, Registry, running_gateway, settings_under
from tests.gateway.protocols.conftest import served_app
from tests.support.waiting import eventually, until

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("traces_kept_here")]

ASK = [{"role": "user", "content": "the quick brown fox"}]
BODIES: dict[str, dict[str, Any]] = {
    "agent": {"input": ASK},
    "chat": {"messages": ASK},
    "chat-agent": {"messages": ASK},
    "words": {"prompt": "the quick brown fox"},
}


def events(text: str) -> list[tuple[str | None, str]]:
    """(event type, data) of each server-sent event in ``text``."""
    found = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        kind = None
        data = []
        for line in block.split("\n"):
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                data.append(line.removeprefix("data: "))
        found.append((kind, "\n".join(data)))
    return found


def without_times(chunk: Any) -> Any:
    """A ChatModel's chunks carry the second they were made: not part of what is compared."""
    return {k: v for k, v in chunk.items() if k != "created"} if isinstance(chunk, dict) else chunk


def with_options(name: str, **options: Any) -> dict[str, Any]:
    body = dict(BODIES[name])
    if name == "agent" or name == "chat-agent":
        body["custom_inputs"] = options
    elif name == "chat":
        body["custom_inputs"] = options
    else:
        body["options"] = options
    return body


@pytest.fixture(scope="module")
def settings_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stream-gateway")


@pytest.fixture
def make_gateway(agents_registry: Registry, tmp_path: Path) -> Callable[..., AbstractAsyncContextManager[Gateway]]:
    def make(**overrides: Any) -> AbstractAsyncContextManager[Gateway]:
        return running_gateway(settings_under(tmp_path, **overrides), agents_registry.tracking_uri)

    return make


@pytest.fixture(scope="module")
async def gateway(agents_registry: Registry, settings_root: Path) -> AsyncIterator[Gateway]:
    settings = settings_under(settings_root)
    async with running_gateway(settings, agents_registry.tracking_uri) as running:
        yield running


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.parametrize("name", list(BODIES))
async def test_each_streaming_interface_streams_its_chunks_as_mlflow_yields_them(
    gateway: Gateway, agents_registry: Registry, name: str
) -> None:
    # MLflow's own, as its pyfunc streams it (with the registry as its tracking store: a
    # ResponsesAgent logs a trace per call, which must not land in the checkout's ./mlflow.db)
    with using_registry(agents_registry.tracking_uri, agents_registry.root / "artifacts"):
        reference = [without_times(c) for c in agents_registry.pyfunc(name, 1).predict_stream(BODIES[name])]
    response = await gateway.client.post(f"/models/{name}/invocations", json={**BODIES[name], "stream": True})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["X-Model-Name"] == name and response.headers["X-Model-Version"] == "1"
    sent = events(response.text)
    assert sent[-1] == (None, "[DONE]")
    assert all(kind is None for kind, _ in sent)
    assert [without_times(json.loads(data)) for _, data in sent[:-1]] == reference
    assert len(reference) >= 4  # a chunk a word


async def test_every_predict_path_streams(gateway: Gateway, agents_registry: Registry, make_gateway: Any) -> None:
    body = {**BODIES["agent"], "stream": True}
    answers = [
        await gateway.client.post(path, json=body)
        for path in (
            "/models/agent/predict",
            "/models/agent/versions/1/predict",
            "/models/agent/versions/1/invocations",
        )
    ]
    async with make_gateway(default_model="agent") as gw:
        answers.append(await gw.client.post("/invocations", json=body))
    texts = {a.text for a in answers}
    assert len(texts) == 1 and all(a.status_code == 200 for a in answers)
    # the same body without "stream" is answered whole, as mlflow models serve answers it
    whole = await gateway.client.post("/models/agent/invocations", json=BODIES["agent"])
    assert whole.status_code == 200 and whole.json()["output"][0]["content"][0]["text"] == "the quick brown fox"


async def test_a_version_without_predict_stream_is_400_naming_it(gateway: Gateway) -> None:
    response = await gateway.client.post("/models/plain/invocations", json={"prompt": "hi", "stream": True})
    assert response.status_code == 400
    assert response.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "'plain' version 1 does not implement predict_stream" in response.json()["message"]
    assert (await gateway.client.post("/models/plain/invocations", json={"prompt": "hi"})).json() == ["HI"]


async def test_an_error_mid_stream_is_an_error_event_then_the_end(gateway: Gateway) -> None:
    body = {**with_options("agent", fail_at=2), "stream": True}
    response = await gateway.client.post("/models/agent/invocations", json=body)
    assert response.status_code == 200
    sent = events(response.text)
    assert [kind for kind, _ in sent] == [None, None, "error"]  # two words, the error, no [DONE]
    error = json.loads(sent[-1][1])
    assert error["error_code"] == "BAD_REQUEST" and "ValueError: the model failed before word 2" in error["message"]


async def test_an_error_before_the_first_chunk_is_an_http_error(gateway: Gateway) -> None:
    body = {**with_options("agent", fail_at=0), "stream": True}
    response = await gateway.client.post("/models/agent/invocations", json=body)
    assert response.status_code == 400 and "ValueError" in response.json()["message"]
    assert response.headers["content-type"] == "application/json"


async def test_a_stream_idle_past_the_timeout_ends_with_an_error_while_the_loop_serves_others(
    make_gateway: Callable[..., AbstractAsyncContextManager[Gateway]],
) -> None:
    body = {**with_options("words", stall=4), "stream": True}
    async with make_gateway(stream_idle_timeout_seconds=1.5) as gateway:
        stalled = asyncio.create_task(gateway.client.post("/models/words/invocations", json=body))
        await until(lambda: gateway.services.streams.open_count == 1, "the stream to open")
        # the generator sleeps in a stream thread: the event loop answers meanwhile
        other = await gateway.client.post("/models/plain/invocations", json={"prompt": "hi"})
        assert other.status_code == 200 and other.json() == ["HI"]
        response = await stalled
    sent = events(response.text)
    assert [kind for kind, _ in sent] == [None, "error"]
    error = json.loads(sent[-1][1])
    assert error["error_code"] == "DEADLINE_EXCEEDED" and "GATEWAY_STREAM_IDLE_TIMEOUT_SECONDS" in error["message"]


async def test_open_streams_get_an_end_event_when_the_drain_ends_them(gateway: Gateway, tmp_path: Path) -> None:
    """What the drain calls when its delay is over (registered with it: checked), called here
    directly, the process left running: each open stream gets its end event and its generator
    is closed."""
    closed = tmp_path / "closed"
    body = {**with_options("agent", repeat=400, delay=0.01, closed_file=str(closed)), "stream": True}
    running = asyncio.create_task(gateway.client.post("/models/agent/invocations", json=body))
    streams = gateway.services.streams
    await until(lambda: any(s.events > 3 for s in streams._open), "the stream to send a few events")
    # what the drain calls when its delay is over (gateway.fleet.drain), before uvicorn's graceful timeout
    assert gateway.services.streams.ending in gateway.services.drain._stopping
    assert gateway.services.streams.end_all() == 1
    answer = await running
    assert answer.status_code == 200, answer.text
    sent = events(answer.text)
    assert sent[-1][0] == "error", sent[-3:]
    assert json.loads(sent[-1][1])["error_code"] == "TEMPORARILY_UNAVAILABLE"
    assert len(sent) < 400
    await eventually(lambda: _read(closed), "the generator to be closed")
    assert closed.read_text().startswith("cancelled")
    # the version's lease went back with the generator (never before: a step may still run)
    (held,) = [k for k in gateway.services.cache.keys() if k.name == "agent"]
    await until(lambda: gateway.services.cache.get(held).in_use == 0, "the lease back")  # type: ignore[union-attr]
    gateway.services.streams._ending = None  # this module's gateway goes on serving


async def _read(path: Path) -> str | None:
    return path.read_text() if path.exists() else None


def test_a_client_that_goes_away_closes_the_generator(agents_registry: Registry, tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    body = {**with_options("agent", repeat=2000, delay=0.005, closed_file=str(closed)), "stream": True}
    with served_app(settings_under(tmp_path), agents_registry) as (url, app):
        with httpx.Client(base_url=url, timeout=60) as client:
            with client.stream("POST", "/models/agent/invocations", json=body) as response:
                assert response.status_code == 200
                lines = response.iter_lines()
                assert next(lines).startswith("data: ")
            # the connection is closed: the generator is closed, long before its 8000 words
            from tests.support.waiting import wait_until

            wait_until(closed.exists, timeout=20, what="the generator to be closed")
            ended, sent = closed.read_text().split()
            assert ended == "cancelled" and int(sent) < 8000
            wait_until(lambda: app.state.services.streams.open_count == 0, timeout=20, what="the stream to end")


async def test_streams_are_bounded_per_process_and_count_against_concurrency_limits(
    make_gateway: Callable[..., AbstractAsyncContextManager[Gateway]], tmp_path: Path
) -> None:
    long = {**with_options("words", repeat=1000, delay=0.01), "stream": True}
    for overrides, status in (({"max_streams": 1}, 503), ({"model_concurrency": 1}, 429)):
        async with make_gateway(**overrides) as gw:
            first = asyncio.create_task(gw.client.post("/models/words/invocations", json=long))
            streams = gw.services.streams
            await until(lambda s=streams: any(o.events for o in s._open), "the first stream to send")
            second = await gw.client.post("/models/words/invocations", json=long)
            assert second.status_code == status, second.text
            gw.services.streams.end_all()
            assert events((await first).text)[-1][0] == "error"


def settings_for(root: Path, **overrides: Any) -> GatewaySettings:
    return settings_under(root, **overrides)


async def test_a_stream_is_measured_traced_and_recorded_with_mlflows_reducer(
    make_gateway: Callable[..., AbstractAsyncContextManager[Gateway]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.support.otlp import OtlpReceiver

    sink = tmp_path / "records"
    with OtlpReceiver() as receiver:
        for key, value in receiver.env().items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
        async with make_gateway(tracing="otlp", records_sink=f"file://{sink}") as gw:
            headers = {"X-Request-ID": "stream-1"}
            body = {**BODIES["agent"], "stream": True}
            response = await gw.client.post("/models/agent/invocations", json=body, headers=headers)
            assert response.status_code == 200
            sample = gw.services.metrics.registry.get_sample_value
            labels = {"model": "agent", "version": "1"}
            assert sample("gateway_stream_events_total", labels) == 5
            assert sample("gateway_stream_first_event_seconds_count", labels) == 1
            assert sample("gateway_stream_duration_seconds_count", labels) == 1
            assert sample("gateway_streams_ended_total", {"reason": "done"}) == 1
            assert sample("gateway_streams_open") == 0
            await until(lambda: (sink / "records.jsonl").exists(), "the record")
        spans = receiver.wait_for(lambda found: any(s.name == "stream" for s in found))
    (stream,) = [s for s in spans if s.name == "stream"]
    (server,) = [s for s in spans if s.span_id == stream.parent_span_id]
    assert server.kind == "SERVER" and stream.kind == "INTERNAL"
    assert stream.attributes["gateway.stream.events"] == 5 and stream.attributes["gateway.stream.end"] == "done"
    assert stream.attributes["gateway.stream.first_event_seconds"] > 0
    (line,) = (sink / "records.jsonl").read_text().splitlines()
    record = json.loads(line)["data"]
    assert record["request_id"] == "stream-1" and record["inputs"]["stream"] is True
    # MLflow's own output reducer: the response the stream adds up to
    assert record["outputs"]["output"][0]["content"][0]["text"] == "the quick brown fox"


# What may sit between the model and a reader that reads nothing, besides what a loopback
# connection's kernel buffers take (measured at run time): asyncio's high-water mark of a
# transport's write buffer (uvicorn's send waits past it), what httpcore reads from its socket
# at once, and the stream's own hold: the chunk being sent and the one step the model was asked for.
TRANSPORT_HIGH_WATER = 64 * 1024
CLIENT_READ = 64 * 1024
STREAM_HOLDS = 2


def loopback_capacity() -> int:
    """Bytes a loopback TCP connection takes from its writer while its reader reads nothing: the
    sender's and the receiver's kernel buffers together, as this host sizes (and grows) them.
    Written until the socket stays unwritable for a second."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        reader = socket.create_connection(listener.getsockname())
        writer, _ = listener.accept()
        with reader, writer:
            writer.setblocking(False)
            total, block = 0, b"w" * 65536
            while select.select([], [writer], [], 1.0)[1]:
                try:
                    total += writer.send(block)
                except BlockingIOError:
                    pass  # writable for less than a block: asked again
            return total


def test_a_reader_that_takes_nothing_holds_the_model_back_then_is_let_go(
    agents_registry: Registry, tmp_path: Path
) -> None:
    """The model is asked for a chunk only once the last was handed to the server, and the server
    takes no more while its client reads nothing: of 32 MB of chunks no more are made than a
    loopback connection's kernel buffers (measured here, doubled), the transport's and the
    client's buffers and the stream's own two hold; after the idle timeout the reader is let go
    (a slow reader, not a disconnect: its connection stayed open) and the generator closed.

    Chunks of 32 KB: the buffers hold a few hundred of them at most, fewer than a model that is
    not held back makes in the idle timeout's second (a read-ahead made 3,500 of 2 KB, where the
    buffers held 2,800: too close to tell apart on a busy host)."""
    from tests.support.waiting import wait_until

    closed = tmp_path / "closed"
    word = "w" * 32_000
    body = {
        "input": [{"role": "user", "content": word}],
        "custom_inputs": {"repeat": 1_000, "closed_file": str(closed)},
        "stream": True,
    }
    with served_app(settings_under(tmp_path, stream_idle_timeout_seconds=1.0), agents_registry) as (url, app):
        ended_as = app.state.services.metrics.registry.get_sample_value
        with httpx.Client(base_url=url, timeout=60) as client:
            with client.stream("POST", "/models/agent/invocations", json=body) as response:
                # kept while it waits: a line iterator dropped is closed, and closes the connection
                lines = response.iter_lines()
                first = next(lines)
                assert first.startswith("data: ")
                event_bytes = len(first.encode()) + 2  # "data: ...", then the blank line that ends it
                # reads nothing more, and keeps the connection open
                wait_until(closed.exists, timeout=30, what="the gateway to let the reader go")
                ended, sent = closed.read_text().split()
                # twice the capacity measured: the kernel grows a busy connection's buffers as it sees fit
                buffers = 2 * loopback_capacity() + TRANSPORT_HIGH_WATER + CLIENT_READ
                held = buffers // event_bytes + STREAM_HOLDS + 1
                assert ended == "cancelled" and int(sent) <= held, (
                    f"{ended} after {sent} chunks of {event_bytes} bytes made for a reader that took one; "
                    f"the buffers hold {held}"
                )
                wait_until(
                    lambda: ended_as("gateway_streams_ended_total", {"reason": "slow_reader"}) == 1,
                    timeout=20,
                    what="the stream to end as a slow reader's",
                )
                assert app.state.services.streams.open_count == 0
