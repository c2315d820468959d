"""Streams (issue 44): ``python bench/streams.py [--streams 500]``.

Two measures on one `registry-gateway serve` process serving a ResponsesAgent logged from code
(tests/support/agents: it streams a message back, a chunk a word):

1. **Time to first event at one stream**: the time from sending a streaming request (a new
   connection each, as a chat client opens one) to its first ``data:`` event, through the
   gateway, against calling the same model's ``predict_stream`` in process (MLflow's pyfunc,
   loaded here) to its first chunk; medians of ``ROUNDS`` sequential calls each, alternated.
2. **Concurrent streams**: ``--streams`` streams opened at once (each its own connection), each
   of ``WORDS`` chunks ``DELAY`` s apart; how many ended with ``data: [DONE]`` (none dropped is
   all of them), how long the slowest took, and the gateway's RSS before, at its peak while
   they ran (sampled every 50 ms), and after.
3. **A slow reader**: one stream of 180,001 chunks whose reader takes the first event, then
   reads nothing for 1 s (then 3 s) and goes away: how many chunks the model was asked for
   meanwhile (the generator counts them when it is closed).
4. **Disconnect to close**: a client closes its connection after the first event; the time until
   the model's generator was closed (its ``finally`` ran), over 20 streams.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

from servers import free_port, gateway_server  # noqa: E402

ROUNDS = 200
WORDS = 20
DELAY = 0.02  # seconds between two chunks: a model generating 50 tokens a second
ASK = [{"role": "user", "content": "the quick brown fox jumps over the lazy dog"}]


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def first_event_through_gateway(client: httpx.Client) -> float:
    """Seconds from sending a streaming request to reading its first event, on ``client``'s
    kept-alive connection (a new httpx client costs ~20 ms of its own: its SSL context)."""
    body = {"input": ASK, "stream": True}
    began = time.perf_counter()
    with client.stream("POST", "/models/agent/invocations", json=body) as response:
        lines = response.iter_lines()
        for line in lines:
            if line.startswith("data: "):
                elapsed = time.perf_counter() - began
                for _ in lines:  # the rest, so the connection is kept
                    pass
                return elapsed
    raise RuntimeError("no event")


def _first_event_mean_ms(client: httpx.Client) -> float:
    """The gateway's own gateway_stream_first_event_seconds (lease to first chunk), its mean."""
    total = count = 0.0
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("gateway_stream_first_event_seconds_sum{"):
            total = float(line.split()[-1])
        elif line.startswith("gateway_stream_first_event_seconds_count{"):
            count = float(line.split()[-1])
    return total / count * 1000 if count else float("nan")


class RawClient:
    """One kept-alive HTTP/1.1 connection spoken by hand: the time to the first event without an
    HTTP library's own cost in it (httpx spends about a millisecond a request here)."""

    def __init__(self, port: int) -> None:
        import socket

        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def _request(self, method: str, path: str, body: bytes = b"") -> bytes:
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body

    def _read_until(self, marker: bytes) -> None:
        while marker not in self.buffer:
            data = self.sock.recv(65536)
            if not data:
                raise RuntimeError("connection closed")
            self.buffer += data

    def first_event(self, body: bytes) -> float:
        """Seconds to the first ``data:`` of a streamed answer; then reads it to its end."""
        began = time.perf_counter()
        self.sock.sendall(self._request("POST", "/models/agent/invocations", body))
        self._read_until(b"data: ")
        elapsed = time.perf_counter() - began
        self._read_until(b"0\r\n\r\n")  # the chunked body's end
        self.buffer = self.buffer[self.buffer.index(b"0\r\n\r\n") + 5 :]
        return elapsed

    def ping(self) -> float:
        began = time.perf_counter()
        self.sock.sendall(self._request("GET", "/ping"))
        self._read_until(b"\r\n\r\n\n")  # /ping answers a newline, with a content-length
        elapsed = time.perf_counter() - began
        self.buffer = self.buffer[self.buffer.index(b"\r\n\r\n\n") + 5 :]
        return elapsed

    def close(self) -> None:
        self.sock.close()


def ping(client: httpx.Client) -> float:
    """``GET /ping`` on the same connection: the floor of any answer (HTTP, the client, the app)."""
    began = time.perf_counter()
    client.get("/ping").raise_for_status()
    return time.perf_counter() - began


def whole_answer_through_gateway(client: httpx.Client) -> float:
    """The same body answered whole (no stream), for reference."""
    began = time.perf_counter()
    response = client.post("/models/agent/invocations", json={"input": ASK})
    response.raise_for_status()
    return time.perf_counter() - began


def first_chunk_in_process(model: Any) -> float:
    began = time.perf_counter()
    stream = model.predict_stream({"input": ASK})
    next(iter(stream))
    elapsed = time.perf_counter() - began
    stream.close()
    return elapsed


def slow_reader(url: str, work: Path, pause: float = 3.0) -> dict[str, Any]:
    """One stream of many chunks whose reader takes the first event, then reads nothing for
    ``pause`` seconds and goes away: how many chunks the model was asked for meanwhile (the
    generator says how many it yielded when it is closed), against how many it had."""
    closed = work / f"slow-reader-closed-{pause:g}"
    words = 9 * 20_000
    body = {"input": ASK, "custom_inputs": {"repeat": 20_000, "closed_file": str(closed)}, "stream": True}
    with httpx.Client(base_url=url, timeout=60) as client:
        with client.stream("POST", "/models/agent/invocations", json=body) as response:
            next(response.iter_lines())
            time.sleep(pause)
    while not closed.exists():
        time.sleep(0.01)
    ended, yielded = closed.read_text().split()
    return {"pause_s": pause, "chunks_in_stream": words + 1, "chunks_yielded": int(yielded), "ended": ended}


def disconnect_to_close(url: str, work: Path, rounds: int = 20) -> dict[str, Any]:
    """Seconds from a client closing its stream's connection to the model's generator being closed."""
    seconds = []
    for index in range(rounds):
        closed = work / f"closed-{index}"
        custom = {"repeat": 1000, "delay": 0.01, "closed_file": str(closed)}
        body = {"input": ASK, "custom_inputs": custom, "stream": True}
        with httpx.Client(base_url=url, timeout=60) as client:
            with client.stream("POST", "/models/agent/invocations", json=body) as response:
                next(response.iter_lines())
            gone = time.perf_counter()
        while not closed.exists():
            time.sleep(0.001)
        seconds.append(time.perf_counter() - gone)
    return {"rounds": rounds, "p50_ms": statistics.median(seconds) * 1000, "max_ms": max(seconds) * 1000}


async def _one_stream(client: httpx.AsyncClient, body: dict[str, Any]) -> tuple[bool, float]:
    began = time.perf_counter()
    try:
        async with client.stream("POST", "/models/agent/invocations", json=body) as response:
            last = ""
            async for line in response.aiter_lines():
                if line:
                    last = line
            return last == "data: [DONE]" and response.status_code == 200, time.perf_counter() - began
    except httpx.HTTPError:
        return False, time.perf_counter() - began


async def concurrent(url: str, streams: int, pid: int) -> dict[str, Any]:
    body = {"input": ASK, "custom_inputs": {"repeat": WORDS // 9 + 1, "delay": DELAY}, "stream": True}
    peak = _rss_mb(pid)
    sampling = True

    def sample() -> None:
        nonlocal peak
        while sampling:
            peak = max(peak, _rss_mb(pid))
            time.sleep(0.05)

    before = _rss_mb(pid)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    limits = httpx.Limits(max_connections=streams + 10, max_keepalive_connections=0)
    began = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:
        outcomes = await asyncio.gather(*(_one_stream(client, body) for _ in range(streams)))
    wall = time.perf_counter() - began
    sampling = False
    sampler.join()
    return {
        "streams": streams,
        "completed": sum(ok for ok, _ in outcomes),
        "slowest_s": max(seconds for _, seconds in outcomes),
        "wall_s": wall,
        "rss_before_mb": before,
        "rss_peak_mb": peak,
        "rss_after_mb": _rss_mb(pid),
        "chunks_each": len(("the quick brown fox jumps over the lazy dog".split()) * (WORDS // 9 + 1)) + 1,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument(
        "--mlflow-traces",
        action="store_true",
        help="leave MLflow's own tracing of the agent on (it logs a trace per call to the tracking store)",
    )
    args = parser.parse_args()
    if not args.mlflow_traces:  # here and in the gateway it starts (its environment is this one's)
        os.environ["MLFLOW_TRACE_SAMPLING_RATIO"] = "0"
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    work = Path(tempfile.mkdtemp(prefix="bench-streams-"))
    from gateway.demo import using_registry
    from tests.support import agents
    from tests.support.mlflow_db import new_mlflow_db

    tracking_uri = new_mlflow_db(work / "mlflow.db")
    with using_registry(tracking_uri, work / "artifacts"):
        agents.log_model_from_code("agent", agents.RESPONSES_AGENT)
    import mlflow.pyfunc

    with using_registry(tracking_uri, work / "artifacts"):
        model = mlflow.pyfunc.load_model("models:/agent/1")
    port = free_port()
    env = {
        "MLFLOW_TRACKING_URI": tracking_uri,
        "GATEWAY_DATABASE_URL": f"sqlite:///{work / 'state.db'}",
        "GATEWAY_ARTIFACT_CACHE_DIR": str(work / "artifacts-cache"),
        "GATEWAY_ACCESS_LOG": "false",
        "GATEWAY_POLL_INTERVAL_SECONDS": "3600",
        "GATEWAY_MAX_STREAMS": str(max(args.streams, 1000)),
        "GATEWAY_STREAM_THREADS": "64",
        "PYTHONPATH": str(ROOT),
        "GATEWAY_MLFLOW_TRACES": "true" if args.mlflow_traces else "false",
    }
    venv_bin = Path(sys.executable).parent
    server = gateway_server(
        "streams", venv_bin, port=port, predict_path="/models/agent/invocations", log=work / "gateway.log", env=env
    )
    server.start()
    try:
        assert server.process is not None
        client = httpx.Client(base_url=server.url, timeout=30)
        for _ in range(20):  # warm: the version loads, the connection's code paths run once
            first_event_through_gateway(client)
            whole_answer_through_gateway(client)
            first_chunk_in_process(model)
        gateway, in_process, whole, floor = [], [], [], []
        for _ in range(args.rounds):
            gateway.append(first_event_through_gateway(client))
            in_process.append(first_chunk_in_process(model))
            whole.append(whole_answer_through_gateway(client))
            floor.append(ping(client))
        raw = RawClient(server.port)
        streamed = json.dumps({"input": ASK, "stream": True}).encode()
        for _ in range(20):
            raw.first_event(streamed)
            raw.ping()
        raw_first, raw_ping = [], []
        for _ in range(args.rounds):
            raw_first.append(raw.first_event(streamed))
            raw_ping.append(raw.ping())
        raw.close()
        inside = _first_event_mean_ms(client)
        client.close()
        first = {
            "gateway_inside_mean_ms": inside,
            "rounds": args.rounds,
            "gateway_p50_ms": statistics.median(gateway) * 1000,
            "in_process_p50_ms": statistics.median(in_process) * 1000,
            "whole_answer_p50_ms": statistics.median(whole) * 1000,
            "ping_p50_ms": statistics.median(floor) * 1000,
            "raw_socket_gateway_p50_ms": statistics.median(raw_first) * 1000,
            "raw_socket_ping_p50_ms": statistics.median(raw_ping) * 1000,
        }
        first["overhead_p50_ms"] = first["gateway_p50_ms"] - first["in_process_p50_ms"]
        first["raw_socket_overhead_p50_ms"] = first["raw_socket_gateway_p50_ms"] - first["in_process_p50_ms"]
        many = asyncio.run(concurrent(server.url, args.streams, server.process.pid))
        slow = [slow_reader(server.url, work, pause) for pause in (1.0, 3.0)]
        closing = disconnect_to_close(server.url, work)
    finally:
        server.stop()
    result = {
        "first_event": first,
        "concurrent": many,
        "slow_reader": slow,
        "disconnect_to_close": closing,
        "cpus": os.cpu_count(),
        "mlflow_traces": args.mlflow_traces,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
