"""One timer keeps every waiting request's predict timeout (gateway.dataplane.deadlines)."""

from __future__ import annotations

import asyncio

import pytest

from gateway.dataplane.deadlines import Deadlines

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _until_done(answer: asyncio.Future[bytes]) -> float:
    """Poll (a deadline of 10 s) until ``answer`` is done; the loop's clock then."""
    loop = asyncio.get_running_loop()
    limit = loop.time() + 10
    while not answer.done():
        assert loop.time() < limit, "the deadline never came"
        await asyncio.sleep(0.005)
    return loop.time()


async def test_each_future_times_out_after_the_timeout_unless_answered() -> None:
    loop = asyncio.get_running_loop()
    timeout = 0.05
    deadlines = Deadlines(timeout)
    first, answered = loop.create_future(), loop.create_future()
    added = loop.time()
    deadlines.add(first)
    deadlines.add(answered)
    answered.set_result(b"ok")
    await asyncio.sleep(0)  # a turn of the loop: the next one is added later
    second, second_added = loop.create_future(), loop.time()
    deadlines.add(second)  # waits behind the first's timer, which must set one for it
    assert await _until_done(first) - added >= timeout  # a timer never fires early
    assert isinstance(first.exception(), TimeoutError)
    assert answered.result() == b"ok"  # an answered one is never failed
    assert await _until_done(second) - second_added >= timeout
    assert isinstance(second.exception(), TimeoutError)
    # One added after the timer fired gets a timer of its own: its full timeout, not less.
    late = loop.create_future()
    added = loop.time()
    deadlines.add(late)
    assert await _until_done(late) - added >= timeout
    assert isinstance(late.exception(), TimeoutError)
    assert len(deadlines) == 0


async def test_answered_requests_leave_the_queue_as_new_ones_arrive() -> None:
    """At thousands of requests a second over a 30 s timeout, what is held must not be every
    request of the last 30 s: answered ones at the head go with each arrival."""
    loop = asyncio.get_running_loop()
    deadlines = Deadlines(30.0)
    for _ in range(1000):
        answer = loop.create_future()
        deadlines.add(answer)
        answer.set_result(b"")
    assert len(deadlines) == 1  # only the last one, answered since it arrived
    held = loop.create_future()
    deadlines.add(held)
    assert len(deadlines) == 1 and not held.done()
    held.cancel()  # a client that went away: cancelled, never failed with a timeout


def test_a_new_event_loop_starts_afresh() -> None:
    deadlines = Deadlines(0.01)

    async def one() -> BaseException | None:
        answer = asyncio.get_running_loop().create_future()
        deadlines.add(answer)
        await _until_done(answer)
        return answer.exception()

    assert isinstance(asyncio.run(one()), TimeoutError)
    assert isinstance(asyncio.run(one()), TimeoutError)  # the first loop's timer is not this one's
