"""A stream's chunks as server-sent events on bare ASGI, whatever the protocol.

Each protocol adapter opens its stream (gateway.dataplane.streaming) and says how its events
read (:class:`Dialect`: MLflow's scoring routes send each chunk as MLflow serialises it and
``{"error_code", "message"}`` errors; the OpenAI routes send OpenAI's chunk and error shapes);
:func:`send_events` does the rest, the same for all:

- the answer starts only with the first chunk, so a request the model refuses at once (its
  input, a version that does not stream) still gets an HTTP error and its status;
- one ``http.response.body`` message per chunk, sent before the next is asked for: a slow reader
  holds the stream back (uvicorn's send waits while its transport is over its high-water mark)
  instead of making the gateway buffer; one that takes nothing for the idle timeout is let go;
- a client that goes away (``http.disconnect``, or a send that fails) cancels the stream, which
  closes the model's generator;
- an error after the first chunk (the model raised, nothing came for the idle timeout, the
  process is stopping) is one ``event: error`` in the protocol's error shape, then the end,
  without the protocol's end marker: a client tells a cut stream from a finished one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.types import Receive, Send

from gateway.dataplane.streaming import ClientGone, Stream
from gateway.errors import ShuttingDown, StreamIdle
from gateway.wire import events

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Dialect:
    """How one protocol writes a stream: a chunk's event, the error event, the end marker."""

    chunk: Callable[[Any], bytes]
    error: Callable[[BaseException], bytes]
    done: bytes | None = events.DONE
    http_error: Callable[[Any], Any] | None = None  # an HTTP error answer in the protocol's shape


@dataclass(slots=True)
class Outcome:
    """How a stream ended (``done``, ``error``, ``idle``, ``shutdown``, ``disconnected``,
    ``slow_reader``), the
    error when one ended it, and the chunks kept for the inference record (when asked to)."""

    reason: str = "done"
    error: BaseException | None = None
    kept: list[Any] | None = None


async def _disconnected(receive: Receive, stream: Stream) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            stream.cancel()
            return


async def send_events(
    stream: Stream,
    receive: Receive,
    send: Send,
    *,
    headers: list[tuple[bytes, bytes]],
    dialect: Dialect,
    keep: bool = False,
) -> Outcome:
    """Send ``stream`` as server-sent events. Raises what ended it before its first chunk (for
    the caller to answer as an HTTP error); the caller closes the stream either way."""
    outcome = Outcome(kept=[] if keep else None)
    watcher = asyncio.create_task(_disconnected(receive, stream))
    try:
        try:
            chunk = await stream.next()
        except StopAsyncIteration:
            chunk = None
            ended = True
        except ClientGone:
            outcome.reason = "disconnected"
            return outcome
        else:
            ended = False
        await send({"type": "http.response.start", "status": 200, "headers": [*events.HEADERS, *headers]})
        while not ended:
            if outcome.kept is not None:
                outcome.kept.append(chunk)
            message = {"type": "http.response.body", "body": dialect.chunk(chunk), "more_body": True}
            try:
                # A reader that takes nothing for the idle timeout is let go: it would hold the
                # stream, its lease and its permit as long as it liked.
                await asyncio.wait_for(send(message), timeout=stream.idle_seconds)
            except TimeoutError:
                log.info(
                    "stream of %s: the client read nothing for %g s; closing it",
                    stream.served.name,
                    stream.idle_seconds,
                )
                stream.cancel()
                outcome.reason = "slow_reader"
                return outcome
            try:
                chunk = await stream.next()
            except StopAsyncIteration:
                ended = True
            except ClientGone:
                outcome.reason = "disconnected"
                return outcome
            except Exception as exc:
                outcome.reason, outcome.error = _why(exc), exc
                if outcome.reason != "error":
                    log.info("stream of %s ended: %s", stream.served.name, exc)
                await send({"type": "http.response.body", "body": dialect.error(exc), "more_body": False})
                return outcome
        await send({"type": "http.response.body", "body": dialect.done or b"", "more_body": False})
        return outcome
    except OSError:  # a send to a client already gone (uvicorn's ClientDisconnected)
        stream.cancel()
        outcome.reason = "disconnected"
        return outcome
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await watcher


def _why(exc: BaseException) -> str:
    if isinstance(exc, StreamIdle):
        return "idle"
    if isinstance(exc, ShuttingDown):
        return "shutdown"
    return "error"
