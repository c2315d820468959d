"""The predict timeout of every waiting request, kept with one timer.

A timer per request (``loop.call_later`` and its ``cancel``) cost about 4.7 µs on uvloop, as
much as the rest of the hand-off to the batcher. Every request waits the same
``GATEWAY_PREDICT_TIMEOUT_SECONDS``, so deadlines fall due in the order requests began: they
wait in a deque, answered ones are dropped from its head as new ones arrive, and one timer,
set for the oldest, fails what is overdue and sets itself for the next.
"""

from __future__ import annotations

import asyncio
from collections import deque


class Deadlines:
    """Fail a future with ``TimeoutError`` ``timeout`` seconds after :meth:`add`, unless it
    is done by then. For one event loop at a time (the loop of the futures it is given)."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._due: deque[tuple[float, asyncio.Future[bytes]]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def add(self, answer: asyncio.Future[bytes]) -> None:
        loop = answer.get_loop()  # not asyncio.get_running_loop(): a getpid() system call each time
        if loop is not self._loop:  # a new loop (tests run several): what the old one held is gone
            self._loop, self._due, self._timer = loop, deque(), None
        due = self._due
        while due and due[0][1].done():  # answered: most requests finish in the order they began
            due.popleft()
        deadline = loop.time() + self.timeout
        due.append((deadline, answer))
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._expire)

    def __len__(self) -> int:
        """Requests held, answered ones not yet dropped included."""
        return len(self._due)

    def _expire(self) -> None:
        self._timer = None
        loop, due = self._loop, self._due
        assert loop is not None
        now = loop.time()
        while due:
            deadline, answer = due[0]
            if answer.done():
                due.popleft()
            elif deadline <= now:
                due.popleft()
                answer.set_exception(TimeoutError())
            else:
                self._timer = loop.call_at(deadline, self._expire)
                return
