"""Clients calling a fleet in a loop while a test stops and starts its processes: each client on
a session of its own (a kept-alive connection or a channel), every answer's status recorded,
or the error that stood for one."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import grpc
import httpx

from tests.support.waiting import wait_until

Session = Callable[[], AbstractContextManager[Callable[[], int]]]
"""Opens a client's connection; what it yields makes one call and returns its status."""


class RequestLoop:
    """``pace``: the seconds each client waits after each call (0: back to back). Back to back,
    a handful of clients keep 2 cores busy answering them, and the processes a test restarts
    meanwhile start that much slower; paced, requests still arrive all through a restart."""

    def __init__(self, sessions: list[Session], *, pace: float = 0.0) -> None:
        self._pace = pace
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, args=(s,)) for s in sessions]
        self.statuses: list[int] = []
        self.failures: list[str] = []

    @property
    def count(self) -> int:
        return len(self.statuses) + len(self.failures)

    def wait_for(self, count: int) -> None:
        wait_until(lambda: self.count >= count, timeout=120, what=f"{count} requests")

    def _loop(self, session: Session) -> None:
        with session() as call:
            while not self._stop.is_set():
                try:
                    self.statuses.append(call())
                except (httpx.TransportError, grpc.RpcError) as exc:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                if self._pace:
                    self._stop.wait(self._pace)

    def __enter__(self) -> RequestLoop:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)


def http_session(base: str, path: str, body: Any) -> Session:
    """POSTs of `body` to `path` on a kept-alive connection (httpx reconnects when an answer
    says ``Connection: close``)."""

    @contextmanager
    def session() -> Iterator[Callable[[], int]]:
        with httpx.Client(base_url=base, timeout=30) as http:
            yield lambda: http.post(path, json=body).status_code

    return session
