"""Server-sent events as bytes: the framing of a stream's chunks, its error and its end.

One event per chunk, ``data: <JSON>`` and a blank line, as Databricks Model Serving and
OpenAI's APIs send them; the end is ``data: [DONE]``. A chunk is written as MLflow's pyfunc
hands it over: ``predict_stream`` of a ``ResponsesAgent``, ``ChatModel`` or ``ChatAgent``
yields dicts already (the stream event, ``ChatCompletionChunk`` or ``ChatAgentChunk``
as MLflow dumps them, ``None`` fields left out); a ``PythonModel``'s chunks go through the same
JSON as its predictions (:func:`gateway.wire.mlflow_scoring.jsonable`), and a pydantic object
is dumped as MLflow dumps its own (``model_dump(exclude_none=True)``).
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.wire.mlflow_scoring import encode_predictions

DONE = b"data: [DONE]\n\n"
CONTENT_TYPE = b"text/event-stream; charset=utf-8"
# What every stream's answer carries besides its content type: no cache or proxy may hold the
# events back (nginx buffers a proxied answer unless told not to).
HEADERS = (
    (b"content-type", CONTENT_TYPE),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
)


def plain(chunk: Any) -> Any:
    """A chunk as data: a pydantic object (``ResponsesAgentStreamEvent``...) dumped as MLflow's
    wrappers dump it, MLflow's dataclasses (``ChatCompletionChunk``) as their dicts."""
    dump = getattr(chunk, "model_dump", None)
    if callable(dump):
        return dump(exclude_none=True)
    to_dict = getattr(chunk, "to_dict", None)
    if callable(to_dict) and not hasattr(chunk, "iloc"):  # not a pandas object
        return to_dict()
    return chunk


def chunk_json(chunk: Any) -> bytes:
    """A chunk as JSON, as MLflow serialises that chunk's type."""
    return encode_predictions(plain(chunk), unwrapped=True)


def data(payload: bytes) -> bytes:
    """One event carrying ``payload`` (JSON: no newline in it)."""
    return b"data: " + payload + b"\n\n"


def named(event: str, payload: bytes) -> bytes:
    """An event with a type (``event: error``), for what is not a chunk."""
    return b"event: " + event.encode("ascii") + b"\ndata: " + payload + b"\n\n"


def error(payload: dict[str, Any]) -> bytes:
    """The error event a stream ends with: ``event: error`` and the protocol's error body."""
    return named("error", orjson.dumps(payload))
