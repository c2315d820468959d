"""``"stream": true`` on MLflow's scoring routes: ``predict_stream`` as server-sent events.

The body is the scoring body ``mlflow models serve`` takes (unified LLM input, such as a
``ResponsesAgent``'s ``{"input": [...]}`` or a chat model's ``{"messages": [...]}``, or
``dataframe_split`` and the rest) with ``"stream": true`` beside it, as Databricks Model Serving
takes it; ``stream`` is taken out before the model sees the body. The version is chosen as for
any predict (path, ``X-Model-Version``, default alias, canary split), and the answer names it in
the same headers; then one ``data:`` event per chunk, as MLflow serialises it
(gateway.wire.events), and ``data: [DONE]``. See gateway.protocols.event_stream for errors,
disconnects and slow readers.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from opentelemetry.trace import Status, StatusCode
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway.dataplane.loader import LoadedModel
from gateway.dataplane.streaming import Stream
from gateway.http import errors as http_errors
from gateway.observability.context import current
from gateway.observability.records.record import Exchange
from gateway.process import Services
from gateway.protocols.event_stream import Dialect, send_events
from gateway.routing.catalog import Resolved
from gateway.wire import events
from gateway.wire.mlflow_scoring import JSON, decode

STREAM_KEY = "stream"
RESPONSES_TASK = "agent/v1/responses"  # MLflow's metadata task of a ResponsesAgent


def requested(media_type: str, body: bytes) -> bytes | None:
    """The body without ``"stream": true`` when it asks to stream, else None (most bodies: a
    substring test, no parse)."""
    if media_type != JSON or b'"stream"' not in body:
        return None
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return None  # the predict path says what is wrong with it
    if not isinstance(document, dict) or document.get(STREAM_KEY) is not True:
        return None
    del document[STREAM_KEY]
    return json.dumps(document).encode()


async def open_stream(services: Services, served: Resolved, body: bytes) -> Stream:
    """The version's stream of this scoring body; decoding runs in the stream's thread."""

    def start(model: LoadedModel) -> Any:
        return model.predict_stream(decode(body, JSON, model.metadata, model.body_limits))

    return await services.streams.open(served, start)


def _error_event(exc: BaseException) -> bytes:
    answer = http_errors.answer_for(exc, "POST", "stream")
    return events.named("error", answer.body)


MLFLOW = Dialect(chunk=lambda chunk: events.data(events.chunk_json(chunk)), error=_error_event)


def reduced(model: LoadedModel, chunks: list[Any]) -> bytes:
    """What an inference record keeps of a stream: a ResponsesAgent's chunks through MLflow's
    own output reducer (the response the stream adds up to), else the chunks as a JSON list."""
    if model.metadata.metadata and model.metadata.metadata.get("task") == RESPONSES_TASK:
        from mlflow.types.responses import responses_agent_output_reducer

        try:
            return orjson.dumps(responses_agent_output_reducer(chunks))
        except Exception:  # chunks that are not stream events: kept as they came
            pass
    return b"[" + b",".join(events.chunk_json(chunk) for chunk in chunks) + b"]"


async def serve(
    services: Services,
    stream: Stream,
    receive: Receive,
    send: Send,
    *,
    headers: dict[str, str],
    dialect: Dialect = MLFLOW,
    protocol: str = "mlflow",
    request_body: bytes,
    route_key: str | None,
    started: float,
) -> None:
    """Send the stream, or the error that ended it before its first chunk; counted, traced and
    recorded when it ends. Closes the stream."""
    served = stream.served
    raw = [(key.lower().encode("latin-1"), value.encode("latin-1")) for key, value in headers.items()]
    request = current()
    span = None
    if request is not None and request.span is not None:  # a sampled request: the stream's span under it
        attributes = {"gateway.model": served.name, "gateway.version": served.version, "gateway.protocol": protocol}
        span = services.tracing.start_stream(request.span, attributes)
    try:
        outcome = await send_events(
            stream, receive, send, headers=raw, dialect=dialect, keep=services.records is not None
        )
    except Exception as exc:  # before the first chunk: an HTTP error
        stream.close()
        services.metrics.streams_ended.labels("error").inc()
        if span is not None:
            span.set_attribute("gateway.stream.end", "error")
            span.set_status(Status(StatusCode.ERROR))
            span.end()
        answer = http_errors.answer_for(exc, "POST", protocol)
        failed = Exchange(protocol, JSON, request_body, b"", route_key, error_code=http_errors.classify(exc).code)
        services.predict_finished(served, status=answer.status, started=started, error=exc, exchange=failed)
        await http_errors.send_error(send, _shaped(answer, dialect))
        return
    stream.close()
    if span is not None:
        span.set_attributes(
            {
                "gateway.stream.events": stream.events,
                "gateway.stream.end": outcome.reason,
                "gateway.stream.first_event_seconds": stream.first_event_seconds,
            }
        )
        if outcome.reason == "error":
            span.set_status(Status(StatusCode.ERROR))
        span.end()
    services.metrics.streams_ended.labels(outcome.reason).inc()
    model, kept = stream.model, outcome.kept
    exchange = None
    if kept is not None:
        exchange = Exchange(protocol, JSON, request_body, b"", route_key, answer_json=lambda _: reduced(model, kept))
    status = 200 if outcome.error is None else http_errors.classify(outcome.error).status
    services.predict_finished(served, status=status, started=started, error=outcome.error, exchange=exchange)


def _shaped(answer: http_errors.ErrorAnswer, dialect: Dialect) -> http_errors.ErrorAnswer:
    return dialect.http_error(answer) if dialect.http_error is not None else answer


class EventStreamResponse(Response):
    """The stream as a Starlette response, for the routes FastAPI declares (an app that mounts
    gateway.protocols.mlflow_routes itself): the same :func:`serve`."""

    def __init__(self, services: Services, stream: Stream, **kwargs: Any) -> None:
        super().__init__()
        self._services = services
        self._stream = stream
        self._kwargs = kwargs

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await serve(self._services, self._stream, receive, send, **self._kwargs)
