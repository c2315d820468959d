"""Requests that trickle in one per event-loop turn still share batches (issue 28).

grpc.aio hands its handlers one call per loop turn however many a client has sent on one
connection, so such calls never find company in a version's queue. These tests drive a real
:class:`VersionQueue` with a transport that does exactly that: it holds what its clients sent
and hands the loop one call a turn. With 16 clients sending concurrently, batches must form;
with one client, nothing may wait for company that cannot come.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

import pytest

from gateway.dataplane.batching import Request, Stages, TensorCall, VersionQueue
from gateway.metrics import GatewayMetrics

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class OneCallPerTurn:
    """A transport like grpc.aio's server: calls its clients sent wait here, and each loop
    turn at most one of them reaches its handler, which queues it in the version's queue."""

    def __init__(self, queue: VersionQueue, trickles: bool = True) -> None:
        self.queue = queue
        self.trickles = trickles
        self.sent: deque[tuple[int, asyncio.Future[bytes]]] = deque()
        self.handed_over = 0

    def send(self, value: int) -> asyncio.Future[bytes]:
        answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.sent.append((value, answer))
        return answer

    async def serve(self) -> None:
        while True:
            if self.sent:
                value, answer = self.sent.popleft()
                self.handed_over += 1
                asyncio.get_running_loop().create_task(self._handle(value, answer))
            await asyncio.sleep(0)

    async def _handle(self, value: int, answer: asyncio.Future[bytes]) -> None:
        call = TensorCall(lambda model: None, lambda model, rows: b"", lambda model: b"", trickles=self.trickles)
        job = self.queue.submit(_Tagged(call, value))
        answer.set_result(await job.future)


class _Tagged(TensorCall):
    """A TensorCall that carries the number its client sent, to check each got its own answer."""

    def __init__(self, call: TensorCall, value: int) -> None:
        object.__setattr__(self, "tensors", call.tensors)
        object.__setattr__(self, "encode", call.encode)
        object.__setattr__(self, "alone", call.alone)
        object.__setattr__(self, "trickles", call.trickles)
        object.__setattr__(self, "value", value)

    __slots__ = ("value",)


def _queue(batches: list[int]) -> tuple[VersionQueue, ThreadPoolExecutor]:
    def run(model: Any, requests: list[Request], stages: Stages) -> tuple[list[bytes | Exception], int]:
        batches.append(len(requests))
        return [str(request.value * 2).encode() for request in requests], len(requests)  # type: ignore[union-attr]

    executor = ThreadPoolExecutor(1)
    # A fast path that computes on the CPU: after a first batch measured in the pool, batches
    # run on the event loop itself, as sklearn's do, so nothing arrives while one runs.
    model = SimpleNamespace(name="m", version=1, fast=SimpleNamespace(on_cpu=True))
    queue = VersionQueue(
        model,  # type: ignore[arg-type]
        run,
        executor,
        GatewayMetrics(),
        max_batch=64,
        max_wait=0.0,
        max_queue=1000,
        max_workers=2,
        inline_cpu=1.0,
    )
    return queue, executor


async def _clients(transport: OneCallPerTurn, clients: int, calls_each: int) -> None:
    async def client(first: int) -> None:
        for i in range(calls_each):
            value = first * 10_000 + i
            assert await transport.send(value) == str(value * 2).encode()  # its own answer

    server = asyncio.get_running_loop().create_task(transport.serve())
    try:
        await asyncio.wait_for(asyncio.gather(*(client(c) for c in range(clients))), timeout=60)
    finally:
        server.cancel()


Served = tuple[VersionQueue, list[int]]


@pytest.fixture
def served() -> Iterator[Served]:
    """A version's queue as _queue makes it, and the sizes of the batches it ran."""
    batches: list[int] = []
    queue, executor = _queue(batches)
    yield queue, batches
    executor.shutdown()


async def test_sixteen_clients_on_one_call_per_turn_share_batches_of_four_or_more(
    served: Served,
) -> None:
    queue, batches = served
    await _clients(OneCallPerTurn(queue), clients=16, calls_each=40)
    assert sum(batches) == 16 * 40
    assert sum(batches) / len(batches) >= 4, f"{len(batches)} batches for {sum(batches)} calls"
    assert queue.waits_in_vain <= 1  # company was found, so waits stayed regular


async def test_without_the_trickle_mark_such_calls_mostly_go_alone(served: Served) -> None:
    """The control: the same transport and clients, calls not marked as trickling in. (What
    the mark buys: without it the queue sees no company and does not wait for any.)"""
    queue, batches = served
    await _clients(OneCallPerTurn(queue, trickles=False), clients=16, calls_each=40)
    assert sum(batches) == 16 * 40
    assert sum(batches) / len(batches) < 4


async def test_one_client_never_waits_for_company(served: Served) -> None:
    queue, batches = served
    await _clients(OneCallPerTurn(queue), clients=1, calls_each=50)
    assert batches == [1] * 50
    # A wait that finds no company makes the next ones exponentially rarer (of 50 batches the
    # 1st, 3rd, 7th, 15th and 31st would wait, each at most GATHER_MAX_WAIT), and after a few
    # such waits a batch of one does not wait at all until that has had time to change.
    assert 1 <= queue.waits_in_vain <= 5


async def test_four_clients_in_one_batch_do_not_wait_for_a_fifth(served: Served) -> None:
    """Four callers with one call in flight each: once all four are in a batch, a fifth cannot
    come before their answers, and waiting for it only delays them. After the first few such
    waits ran out, batches of four go at once; a wait at that size is tried again only now and
    then (every few dozen batches), in case more callers came."""
    queue, batches = served
    await _clients(OneCallPerTurn(queue), clients=4, calls_each=100)
    assert sum(batches) == 4 * 100
    assert sum(batches) / len(batches) >= 3, f"{len(batches)} batches for {sum(batches)} calls"  # they still share
    assert queue.waits_timed_out <= len(batches) // 8, f"{queue.waits_timed_out} of {len(batches)} batches waited"


async def test_batches_grow_again_when_more_clients_come(served: Served) -> None:
    """What a queue learned from four clients (a batch of four waits in vain) does not hold
    sixteen back: when they come, batches of four or more form again."""
    queue, batches = served
    await _clients(OneCallPerTurn(queue), clients=4, calls_each=100)
    four = len(batches)
    await _clients(OneCallPerTurn(queue), clients=16, calls_each=40)
    sixteen = batches[four:]
    assert sum(sixteen) == 16 * 40
    assert sum(sixteen) / len(sixteen) >= 4, f"{len(sixteen)} batches for {sum(sixteen)} calls"


async def test_a_worker_stopped_while_gathering_fails_its_jobs_and_returns_what_they_hold(served: Served) -> None:
    """A worker cancelled while it waits for company (the loop closing) still holds the jobs it
    took: each caller is answered (ShuttingDown, not left to its timeout) and what its job
    held (a version's lease) is returned."""
    from gateway.errors import ShuttingDown

    class Lease:
        released = 0

        def release(self) -> None:
            Lease.released += 1

    queue, batches = served
    call = TensorCall(lambda model: None, lambda model, rows: b"", lambda model: b"", trickles=True)
    job = queue.submit(_Tagged(call, 1), Lease())
    (worker,) = queue._workers
    for _ in range(100):  # loop turns until the worker has taken the job and waits for another
        if queue._arrival is not None:
            break
        await asyncio.sleep(0)
    assert queue._arrival is not None, "the worker is not gathering"
    worker.cancel()
    with pytest.raises(asyncio.CancelledError):
        await worker
    assert isinstance(job.future.exception(), ShuttingDown)
    assert Lease.released == 1 and batches == []
