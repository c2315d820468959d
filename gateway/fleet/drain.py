"""Drain on SIGTERM in the order a balancer needs, with no retrying proxy in front.

An L4 balancer or a Kubernetes Service keeps sending new connections to a replica until its
health check (or the endpoint controller) notices it is going, and nobody retries a refused
connection. So on SIGTERM a serving process:

1. answers ``/health/ready`` (and gRPC's ``ready``) 503 at once, and every HTTP answer from
   then on closes its connection (``Connection: close``), so clients on kept-alive
   connections come back through the balancer, which sends them elsewhere;
2. keeps serving for ``GATEWAY_DRAIN_SECONDS`` while the balancers stop sending here;
3. then lets uvicorn stop: it stops accepting, finishes in-flight HTTP and gRPC calls within
   ``--graceful-timeout``, and the lifespan ends, unloading the models last.

The delay is uvicorn's own signal handling, deferred: the lifespan replaces uvicorn's
SIGTERM handler with one that starts the drain and calls uvicorn's handler when the delay is
over (uvicorn restores its own handlers when it stops). A second SIGTERM, or SIGINT (Ctrl-C,
which is never delayed), stops at once. Where no uvicorn server handles SIGTERM in this
thread (tests that run the app in process, another ASGI server), nothing is installed.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

Handler = Callable[[int, FrameType | None], Any]


class Drain:
    def __init__(self, delay_seconds: float, *, on_drain: Callable[[], None]) -> None:
        self.delay_seconds = delay_seconds
        self._on_drain = on_drain
        self.since: float | None = None  # monotonic time the drain began
        self._stop_server: Handler | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: list[Callable[[], None]] = []

    def on_stop(self, callback: Callable[[], None]) -> None:
        """Also call ``callback`` (on the event loop) when the delay is over and the process stops
        accepting: what else listens (the gRPC server) stops accepting then too."""
        self._stopping.append(callback)

    @property
    def draining(self) -> bool:
        return self.since is not None

    def install(self) -> bool:
        """Defer uvicorn's SIGTERM handling by the drain delay; True when installed."""
        if self.delay_seconds <= 0 or threading.current_thread() is not threading.main_thread():
            return False
        current = signal.getsignal(signal.SIGTERM)
        owner = getattr(current, "__self__", None)
        if owner is None or not type(owner).__module__.startswith("uvicorn."):
            return False
        self._stop_server = current  # type: ignore[assignment]
        self._loop = asyncio.get_running_loop()
        signal.signal(signal.SIGTERM, self._on_sigterm)
        return True

    def _on_sigterm(self, sig: int, frame: FrameType | None) -> None:
        assert self._stop_server is not None and self._loop is not None
        if self.draining:
            log.info("SIGTERM again while draining: stopping now")
            self._stop_server(sig, frame)
            return
        self.since = time.monotonic()
        log.info(
            "SIGTERM: not ready from now on; serving %g s more while balancers stop sending here, then stopping",
            self.delay_seconds,
        )
        self._loop.call_soon_threadsafe(self._begin, sig)

    def _begin(self, sig: int) -> None:
        assert self._loop is not None
        try:
            self._on_drain()
        finally:
            self._loop.call_later(self.delay_seconds, self._finish, sig)

    def _finish(self, sig: int) -> None:
        assert self._stop_server is not None
        log.info("drain delay over: no new connections; finishing the requests in flight")
        for callback in self._stopping:
            callback()
        self._stop_server(sig, None)
