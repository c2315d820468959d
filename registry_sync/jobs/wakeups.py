"""Waking every process's job runner when chunks are queued: PostgreSQL's LISTEN/NOTIFY.

A submission, and a chunk given back to the queue, notify :data:`CHANNEL` in their own
transaction (PostgreSQL delivers it at the commit, never for a rollback). Each process that runs
chunks keeps a :class:`Listener`: a thread with a connection of its own, listening, that wakes
its runner at once rather than at its next poll (GATEWAY_JOBS_POLL_SECONDS). So a job submitted
to one replica is claimed by the others, and by ``--role jobs`` processes (to which serving
processes leave the chunks), within milliseconds of its submission instead of within a poll.

A wake-up is a hint, never the only way: the poll still finds every chunk, so a notification
lost while a listener reconnects (with backoff, the database restarting) costs at most a poll.
On sqlite (one host) there is no such channel; the processes find jobs at their poll.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy import Connection, Engine, text

log = logging.getLogger(__name__)

CHANNEL = "gateway_jobs"
_FIRST_BACKOFF = 0.5  # seconds before reconnecting after the listening connection failed
_MAX_BACKOFF = 30.0
_WAIT = 0.2  # seconds a wait for notifications lasts before the listener looks whether it stops


def notify(connection: Connection) -> None:
    """Wake the listeners once this transaction commits (PostgreSQL; a no-op on sqlite)."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_notify(:channel, '')"), {"channel": CHANNEL})


class Listener:
    """Calls ``wake`` (from its own thread) whenever chunks were queued, and once each time it
    starts listening (for what was queued while it was not)."""

    def __init__(self, engine: Engine, wake: Callable[[], None]) -> None:
        self._engine = engine
        self._wake = wake
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.listening = threading.Event()
        """Set while its connection listens (for tests)."""

    @classmethod
    def for_engine(cls, engine: Engine, wake: Callable[[], None]) -> Listener | None:
        """A listener for a PostgreSQL state database; None for sqlite."""
        return cls(engine, wake) if engine.dialect.name == "postgresql" else None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="jobs wake-ups", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stops within a fifth of a second (the wait in progress ends)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=_WAIT * 5)

    def _run(self) -> None:
        delay = _FIRST_BACKOFF
        while not self._stopping.is_set():
            try:
                self._listen()
                delay = _FIRST_BACKOFF
            except Exception as exc:  # psycopg's and SQLAlchemy's errors: never the thread's end
                self.listening.clear()
                log.warning(
                    "job wake-ups: listening failed, again in %.1f s (the poll finds jobs meanwhile): %s", delay, exc
                )
                self._stopping.wait(delay)
                delay = min(delay * 2, _MAX_BACKOFF)

    def _listen(self) -> None:
        # A connection of its own, out of the engine's pool (its connect arguments kept), in
        # autocommit: LISTEN takes effect at once, and waiting holds no transaction open.
        pooled = self._engine.raw_connection()
        connection = pooled.driver_connection
        pooled.detach()
        if connection is None:
            raise RuntimeError("the engine gave no driver connection")
        try:
            connection.autocommit = True
            connection.execute(f"LISTEN {CHANNEL}")
            self.listening.set()
            self._wake()
            while not self._stopping.is_set():
                for _ in connection.notifies(timeout=_WAIT):
                    self._wake()
        finally:
            self.listening.clear()
            connection.close()
