"""A pass run every interval on the event loop, until stopped: the background loops of the
gateway and the sync (traffic counts, version figures, the quality monitor, the answers kept
for feedback, the write-back to MLflow) each hand theirs to one :class:`Periodic`.

A pass that raises is logged and the loop goes on: one bad pass never ends the loop. An
interval of 0 is a loop that never starts (a setting's "off"); ``when`` skips the passes of a
process that should not run them now (the sync leader's loops: ``when=leading``); ``last_pass``
makes one more when stopped (a publisher's last interval is not lost).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable


class Periodic:
    def __init__(
        self,
        name: str,
        interval_seconds: float,
        step: Callable[[], Awaitable[object]],
        *,
        log: logging.Logger,
        when: Callable[[], bool] | None = None,
        last_pass: bool = False,
    ) -> None:
        self.name = name  # the task's name, and what a failed pass's log line says failed
        self._interval = interval_seconds
        self._step = step
        self._log = log
        self._when = when
        self._last_pass = last_pass  # a loop that publishes: what its last interval gathered is not lost
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._interval > 0:
            self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        """Cancel the loop and wait for it (a pass under way is cancelled with it); with
        ``last_pass``, a loop that ran makes one more pass, whatever ``when`` says."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
            if self._last_pass:
                await self._pass()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            if self._when is not None and not self._when():
                continue
            await self._pass()

    async def _pass(self) -> None:
        try:
            await self._step()
        except Exception:  # the loop must outlive any one bad pass
            self._log.exception("%s: a pass failed", self.name)


class Outage:
    """A background pass that keeps failing, told once: a WARNING the first time it fails, an
    INFO line the first time it works again, nothing in between (a pass every second against a
    state database that is down would otherwise log a line a second)."""

    def __init__(self, log: logging.Logger, failing: str, recovered: str) -> None:
        self._log = log
        self._failing = failing  # "could not publish this replica's traffic counts (trying again)"
        self._recovered = recovered  # "publishing this replica's traffic counts again"
        self.ongoing = False

    def failed(self, reason: object) -> None:
        if not self.ongoing:
            self._log.warning("%s: %s", self._failing, reason)
            self.ongoing = True

    def passed(self) -> None:
        if self.ongoing:
            self._log.info("%s", self._recovered)
            self.ongoing = False
