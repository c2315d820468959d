"""A model's ``predict_stream``, served: the generator runs in threads, never on the event loop.

A stream holds its version's lease from its start until its generator is closed (a version is
never unloaded under a stream, nor under a step still running after the stream ended), and one
of the process's ``GATEWAY_MAX_STREAMS`` places; past them, a new stream is refused at once
(503, :class:`~gateway.errors.StreamsExhausted`), never queued. Each step of the generator
(``next``, then ``close``) runs in one of the stream threads (``GATEWAY_STREAM_THREADS``), one
step at a time per stream; the next chunk is asked for as soon as the last one is handed over,
and no sooner, so a stream holds at most one chunk the client has not read, however slow the
reader: what a slow reader costs is the transport's own buffer (uvicorn pauses sending past its
high-water mark, and the stream waits for it; past the idle timeout, the reader is let go).

A stream ends when the generator does, when it raises, when it yields nothing for
``GATEWAY_STREAM_IDLE_TIMEOUT_SECONDS`` (:class:`~gateway.errors.StreamIdle`), when its caller
goes away (:meth:`Stream.cancel`), or when the process stops (:meth:`Streams.end_all`, from the
drain). Whatever ends it closes the generator (``GeneratorExit`` inside the model's code, so
its ``finally`` blocks run, and a worker's generator is closed in the worker): at once when
no step is running, else as soon as the running step returns.

A version streams when MLflow says its model does: the ``streamable`` flag MLflow writes in
the ``python_function`` flavor when the model implements ``predict_stream`` (a
``ResponsesAgent``, a ``ChatModel`` or ``ChatAgent`` that overrides it, any ``PythonModel`` with
one). Asked of a version that does not: :class:`~gateway.errors.NotStreamable` (400).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

from gateway.admission.limits import LoadBudget
from gateway.dataplane.cache import Lease, ModelCache
from gateway.dataplane.loader import LoadedModel
from gateway.errors import GatewayError, NotStreamable, ShuttingDown, StreamIdle, StreamsExhausted
from gateway.metrics import GatewayMetrics
from gateway.routing.catalog import Resolved

log = logging.getLogger(__name__)

Start = Callable[[LoadedModel], Iterator[Any]]  # in a stream thread: the model's generator for one request


class _End:
    """What a step returns when the generator is over."""


class ClientGone(Exception):
    """The stream's caller went away (the connection closed)."""


END = _End()


def streams(model: LoadedModel) -> bool:
    """Whether the version implements ``predict_stream``, as MLflow recorded it at log time."""
    conf = model.metadata.flavors.get("python_function", {})
    return bool(conf.get("streamable"))


class ChunkSource:
    """One generator, stepped from threads one step at a time; :meth:`close` may be called from
    anywhere, any number of times, and closes it in a stream thread when no step is running."""

    def __init__(
        self,
        start: Callable[[], Iterator[Any]],
        executor: Executor,
        on_closed: Callable[[], None] = lambda: None,
    ) -> None:
        self._start = start
        self._on_closed = on_closed  # called once, from whichever thread closed it
        # Every step in one context, whichever thread runs it: a generator that sets a context
        # variable in one step and resets it in a later one (MLflow's predict_stream sets its
        # prediction context so) must find its own token there.
        self._context = contextvars.copy_context()
        self._generator: Iterator[Any] | None = None
        self.executor = executor  # where its steps run
        self._lock = threading.Lock()
        self._running = False
        self._closing = False
        self.closed = threading.Event()  # set once the generator was closed (or never started)

    def step(self) -> Any:
        """In a stream thread: the next chunk, or END."""
        return self._context.run(self._step)

    def _step(self) -> Any:
        with self._lock:
            if self._closing:
                return END
            self._running = True
        try:
            if self._generator is None:
                self._generator = iter(self._start())
            return next(self._generator)
        except StopIteration:
            return END
        finally:
            with self._lock:
                self._running = False
                close_now = self._closing
            if close_now:
                self._close()

    def close(self) -> None:
        with self._lock:
            if self._closing:
                return
            self._closing = True
            running = self._running
        if not running:
            try:
                self.executor.submit(self._context.run, self._close)
            except RuntimeError:  # the pool is shut down: the process is stopping; close it here
                self._context.run(self._close)

    def _close(self) -> None:
        generator, self._generator = self._generator, None
        try:
            close = getattr(generator, "close", None)
            if close is not None:
                close()
        except Exception as exc:  # the model's finally raised: nothing to tell the client now
            log.warning("closing a stream's generator raised %s: %s", type(exc).__name__, exc)
        finally:
            self.closed.set()
            self._on_closed()


class Stream:
    """One request's stream: ``await next()`` until it raises StopAsyncIteration; ``close()``
    when done, whatever happened (idempotent: it returns the lease and the stream's place)."""

    def __init__(self, owner: Streams, served: Resolved, lease: Lease, source: ChunkSource) -> None:
        self.served = served
        self.model: LoadedModel = lease.model
        self.started = time.perf_counter()
        self.first_at: float | None = None  # perf_counter of the first chunk
        self.events = 0
        self._owner = owner
        self._lease = lease
        self.source = source
        self._loop = asyncio.get_running_loop()
        self._step: asyncio.Future[Any] | None = None
        self._interrupt: asyncio.Future[None] = self._loop.create_future()
        self._closed = False

    def _ask(self) -> None:
        self._step = self._loop.run_in_executor(self.source.executor, self.source.step)

    async def next(self) -> Any:
        """The next chunk. Raises StopAsyncIteration at the end; StreamIdle when none came for
        the idle timeout; ShuttingDown when the process ends its streams; the model's error
        (as the data plane words it) when it raised; ClientGone once cancelled."""
        if self._interrupt.done():
            self._interrupt.result()  # raises why it was ended
        if self._step is None:
            self._ask()
        step = self._step
        assert step is not None
        idle = self._owner.idle_seconds
        done, _ = await asyncio.wait((step, self._interrupt), timeout=idle, return_when=asyncio.FIRST_COMPLETED)
        if self._interrupt.done():
            self._interrupt.result()
        if step not in done:
            raise StreamIdle(self.served.name, self.served.version, idle or 0.0)
        self._step = None
        try:
            chunk = step.result()
        except Exception as exc:
            raise self.model._predict_error(exc) from exc
        if chunk is END:
            raise StopAsyncIteration
        if self.first_at is None:
            self.first_at = time.perf_counter()
        self.events += 1
        # The next chunk is asked for by the next call, once this one is handed to the server:
        # asked now, the model would compute it while the event loop sends this one, and take
        # the GIL from it (a switch interval is 5 ms), delaying the first event most of all.
        return chunk

    def interrupt(self, error: BaseException) -> None:
        """End the stream from outside (the process stopping): a ``next()`` waiting raises ``error``."""
        if not self._interrupt.done():
            self._interrupt.set_exception(error)
            self._interrupt.exception()  # retrieved: no "never retrieved" warning if nobody waits

    def cancel(self) -> None:
        """The caller went away: close the generator now (or when its running step returns)."""
        self.interrupt(ClientGone())
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.source.close()
        if self._step is not None:
            self._step.cancel()  # the step itself finishes in its thread; nobody waits on it now
            self._step = None
        # The lease is given back when the generator is closed (ChunkSource's on_closed): a step
        # still running in its thread keeps the version loaded until it returns.
        self._owner._ended(self)

    @property
    def idle_seconds(self) -> float | None:
        """How long the stream may wait on its model, or on its reader (GATEWAY_STREAM_IDLE_TIMEOUT_SECONDS)."""
        return self._owner.idle_seconds

    @property
    def first_event_seconds(self) -> float | None:
        return None if self.first_at is None else self.first_at - self.started


class Streams:
    """This process's open streams: their bound, their threads, and their end at shutdown."""

    def __init__(
        self,
        cache: ModelCache,
        *,
        metrics: GatewayMetrics,
        max_streams: int,
        threads: int,
        idle_seconds: float | None,
        load_budget: LoadBudget | None = None,
    ) -> None:
        self._cache = cache
        self._metrics = metrics
        self.max_streams = max_streams
        self.idle_seconds = idle_seconds
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="stream")
        self._load_budget = load_budget
        self._open: set[Stream] = set()
        self._ending: BaseException | None = None

    @property
    def open_count(self) -> int:
        return len(self._open)

    async def open(self, served: Resolved, start: Start) -> Stream:
        """A stream of ``served`` (leased, counted), its generator not started yet: the first
        :meth:`Stream.next` starts it."""
        if self._ending is not None:
            raise ShuttingDown()
        if len(self._open) >= self.max_streams:
            raise StreamsExhausted(self.max_streams)
        if served.fallback is not None and not self._cache.holds(served.id):
            served = served.fallback  # a canary unloaded since it was chosen: never a cold load for a split
        lease = await self._cache.acquire(served.id, budget=self._load_budget)
        model = lease.model
        if not streams(model):
            lease.release()
            raise NotStreamable(served.name, served.version)
        if len(self._open) >= self.max_streams:  # others opened while this one leased
            lease.release()
            raise StreamsExhausted(self.max_streams)
        loop = asyncio.get_running_loop()

        def give_back() -> None:  # the lease goes back once no step of the model runs any more
            try:
                loop.call_soon_threadsafe(lease.release)
            except RuntimeError:  # the loop is closed: the process is gone
                pass

        # An isolated worker's chunks wait on its group's threads (LoadedModel.calls_on), never the
        # shared stream pool, which streams of one model that sleeps would otherwise hold.
        source = ChunkSource(lambda: start(model), model.calls_on(self.executor), give_back)
        stream = Stream(self, served, lease, source)
        self._open.add(stream)
        self._metrics.streams_open.set(len(self._open))
        return stream

    def _ended(self, stream: Stream) -> None:
        self._open.discard(stream)
        self._metrics.streams_open.set(len(self._open))
        labels = (stream.served.name, str(stream.served.version))
        self._metrics.stream_events.inc(labels, stream.events)
        self._metrics.stream_seconds.observe(labels, time.perf_counter() - stream.started)
        if (first := stream.first_event_seconds) is not None:
            self._metrics.stream_first_event_seconds.observe(labels, first)

    def end_all(self, error: GatewayError | None = None) -> int:
        """The process is stopping: every open stream ends with ``error`` (an error event, then
        its end), and no new one opens. How many were open."""
        self._ending = error or ShuttingDown()
        ended = list(self._open)
        for stream in ended:
            stream.interrupt(self._ending)
        if ended:
            log.info("ending %d open streams: the process is stopping", len(ended))
        return len(ended)

    def ending(self) -> None:
        """:meth:`end_all` as the drain calls it, when its delay is over."""
        self.end_all()

    def close(self) -> None:
        for stream in list(self._open):
            stream.close()
        self.executor.shutdown(wait=False, cancel_futures=True)
