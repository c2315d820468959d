"""Wait for a condition with a deadline: the tests' only way to wait (never a bare sleep)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll ``predicate`` until it holds or ``timeout`` passes (then fail naming ``what``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")


# The default bound of the two waits below: what they mostly wait for is a model loaded and warmed
# in a thread (a canary, a shadow, a swap, a start-up), which on 2 cores busy with 4 xdist workers
# and their servers can take many times its idle second. A bound, not a delay: a wait that holds
# ends at once; only a failing one takes longer to say so.
WAIT_SECONDS = 60.0


async def until(predicate: Callable[[], bool], what: str, timeout: float = WAIT_SECONDS) -> None:
    """Poll ``predicate`` on the event loop until it holds; fail naming ``what`` after ``timeout``."""
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout:g} s waiting for {what}") from None


async def eventually(check: Callable[[], Awaitable[T | None]], what: str, timeout: float = WAIT_SECONDS) -> T:
    """Await ``check`` until it returns something (not None); fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = await check()
        if found is not None:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
