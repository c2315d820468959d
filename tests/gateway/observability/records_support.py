"""What the records tests share: records to offer, and real local servers for the HTTP sink."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from gateway.observability.records.record import InferenceRecord
from tests.support.servers import free_port

SPLIT = b'{"dataframe_split": {"columns": ["age", "ssn"], "data": [[41, "123-45-6789"], [7, "987-65-4321"]]}}'
ANSWER = b'{"predictions": [0, 1]}'


def a_record(**changes: Any) -> InferenceRecord:
    record = InferenceRecord(
        model="iris",
        version=3,
        alias="champion",
        arm="default",
        request_id="req-1",
        route_key="user-4711@example.com",
        protocol="mlflow",
        media_type="application/json",
        request=SPLIT,
        response=ANSWER,
        status=200,
        latency_seconds=0.0042,
        time=time.time(),
    )
    return replace(record, **changes)


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    client: tuple[str, int]  # the connection it came on


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 that keeps what is POSTed and answers ``status``."""

    url: str
    status: int = 200
    requests: list[Received] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def received(self) -> list[Received]:
        with self._lock:
            return list(self.requests)


@contextmanager
def receiver(status: int = 200) -> Iterator[Receiver]:
    box: list[Receiver] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the sink's client uses it

        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            target = box[0]
            with target._lock:
                headers = {k.lower(): v for k, v in self.headers.items()}
                target.requests.append(Received(headers, body, self.client_address[:2]))
            self.send_response(target.status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    box.append(Receiver(f"http://127.0.0.1:{server.server_address[1]}/records", status=status))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield box[0]
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Silent:
    """A TCP server that accepts connections and never reads nor answers: a sink that hangs."""

    url: str
    accepted: threading.Event


@contextmanager
def silent_server() -> Iterator[Silent]:
    listener = socket.create_server(("127.0.0.1", 0))
    accepted = threading.Event()
    connections: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            connections.append(connection)
            accepted.set()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield Silent(f"http://127.0.0.1:{listener.getsockname()[1]}/records", accepted)
    finally:
        stop.set()
        thread.join()
        for connection in connections:  # the hung write fails now, and its thread ends
            connection.close()
        listener.close()


def closed_port() -> int:
    """A port nothing listens on: free_port()'s, which no other server of the run is given."""
    return free_port()
