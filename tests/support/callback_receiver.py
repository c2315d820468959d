"""A real HTTP receiver for the gateway's signed callbacks (jobs' ends): it keeps what it was sent."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler
from typing import Any, ClassVar


class CallbackReceiver(BaseHTTPRequestHandler):
    """Answers 204 to each POST and keeps its headers (lower-cased) and body. Use a class of
    :func:`callback_receiver`'s, so that what one test received is its own."""

    received: ClassVar[list[tuple[dict[str, str], bytes]]]
    arrived: ClassVar[threading.Event]

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(({k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(204)
        self.end_headers()
        type(self).arrived.set()

    def log_message(self, *args: Any) -> None:
        pass


def callback_receiver() -> type[CallbackReceiver]:
    """A receiver class of its own: nothing received yet."""
    return type("Receiver", (CallbackReceiver,), {"received": [], "arrived": threading.Event()})
