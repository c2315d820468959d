"""OpenAI-compatible routes for MLflow's agent and chat interfaces, on bare ASGI beside the
predict lane: ``POST /v1/responses`` (a ``ResponsesAgent``) and ``POST /v1/chat/completions``
(``ChatModel``, ``ChatAgent``, chat-format pyfuncs), streaming (``"stream": true``) and not.
``GET /v1/models`` is an ordinary route (gateway.protocols.openai_routes).

The body's ``model`` names a registry version as the predict paths do: ``name`` (its default
route: the default alias, else latest, with any canary split by the route key), ``name@alias``
or ``name/3``. The model is in the body, so this lane reads the body first and then asks the
same gate every other request passes (gateway.admission.gate: key, ``predict:`` scope on that
model, rate and concurrency limits) before anything looks at the registry; the permit is held
until the answer (or the stream) ends. Shapes are gateway.wire.openai_shapes; errors go out in
OpenAI's ``{"error": {"message", "type", "code"}}`` with the statuses every other route uses.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import orjson
from mlflow.models import Model
from starlette.types import Receive, Scope, Send

from gateway.admission.access import Access
from gateway.admission.limits import NO_PERMIT
from gateway.dataplane.loader import LoadedModel
from gateway.errors import InvalidInput, MalformedRequest, WrongInterface
from gateway.http import errors as http_errors
from gateway.http.request_body import read_body
from gateway.observability.context import current
from gateway.observability.records.record import Exchange
from gateway.process import Services
from gateway.protocols import mlflow_stream
from gateway.protocols.event_stream import Dialect
from gateway.protocols.mlflow_predict import header_text, served_headers
from gateway.routing.catalog import Resolved
from gateway.wire import events, openai_shapes
from gateway.wire.mlflow_scoring import JSON, ScoringInput, encode_predictions, parse_content_type
from gateway.wire.selectors import split_model_reference

RESPONSES = "/v1/responses"
CHAT = "/v1/chat/completions"
# A PythonModel's pyfunc loaders: pickled, or logged from code (and MLflow's agent loaders)
_PYTHON_MODEL_LOADERS = ("mlflow.pyfunc.model", "mlflow.pyfunc.loaders.")
ROUTES = frozenset({RESPONSES, CHAT})


def match(path: str) -> str | None:
    return path if path in ROUTES else None


def openai_error(answer: http_errors.ErrorAnswer) -> http_errors.ErrorAnswer:
    """An error answer in OpenAI's shape: the same status and headers."""
    body = orjson.loads(answer.body)
    shaped = openai_shapes.error_body(str(body.get("message")), str(body.get("error_code")), answer.status)
    return http_errors.ErrorAnswer(answer.status, orjson.dumps(shaped), answer.headers)


def _error_event(exc: BaseException) -> bytes:
    answer = openai_error(http_errors.answer_for(exc, "POST", "stream"))
    return events.named("error", answer.body)


OPENAI = Dialect(
    chunk=lambda chunk: events.data(encode_predictions(chunk, unwrapped=True)),
    error=_error_event,
    http_error=openai_error,
)


def _task(mlmodel: Model) -> str | None:
    meta = mlmodel.metadata or {}
    return meta.get("task") if isinstance(meta.get("task"), str) else None


def speaks_openai(mlmodel: Model) -> bool:
    """Whether a version (its MLmodel) takes a route of this lane: a ResponsesAgent, ChatModel or
    ChatAgent, a transformers pipeline logged as ``llm/v1/chat``, or a PythonModel whose signature
    names a ``messages`` input or no input at all (nothing says it cannot). A flavor's model
    (scikit-learn's iris) takes columns: it does not."""
    if _task(mlmodel) in openai_shapes.INTERFACES or _task(mlmodel) == openai_shapes.TRANSFORMERS_CHAT:
        return True
    loader = str(mlmodel.flavors.get("python_function", {}).get("loader_module", ""))
    if not loader.startswith(_PYTHON_MODEL_LOADERS):
        return False
    names = _input_names(mlmodel)
    return names is None or "messages" in names


def _check(model: LoadedModel, route: str) -> str | None:
    """The version's interface, if ``route`` serves it; else WrongInterface (400)."""
    task = _task(model.metadata)
    if route == RESPONSES and task != openai_shapes.RESPONSES_AGENT:
        raise WrongInterface(
            model.name,
            model.version,
            route=RESPONSES,
            wants="ResponsesAgent versions",
            found=openai_shapes.interface(task),
        )
    if route == CHAT and task == openai_shapes.RESPONSES_AGENT:
        raise WrongInterface(
            model.name,
            model.version,
            route=CHAT,
            wants="ChatModel, ChatAgent and chat-format pyfunc versions (use /v1/responses)",
            found=openai_shapes.interface(task),
        )
    if route == CHAT and task is None:
        names = _input_names(model.metadata)
        if names is not None and "messages" not in names:  # a pyfunc, but not of the chat format
            raise WrongInterface(
                model.name,
                model.version,
                route=CHAT,
                wants="ChatModel, ChatAgent and chat-format pyfunc versions (a `messages` input)",
                found=f"a pyfunc whose signature takes {', '.join(map(str, names))}",
            )
    return task


def _input_names(mlmodel: Model) -> list[str] | None:
    """The names of the inputs the version's signature declares; None when it declares none."""
    signature = mlmodel.signature
    if signature is None or signature.inputs is None or not signature.inputs.has_input_names():
        return None
    return [str(name) for name in signature.inputs.input_names()]


def _input(document: dict[str, Any], route: str, task: str | None) -> ScoringInput:
    try:
        data = (
            openai_shapes.responses_input(document) if route == RESPONSES else openai_shapes.chat_input(document, task)
        )
    except openai_shapes.ShapeError as exc:
        raise InvalidInput(str(exc)) from None
    return ScoringInput(data, None)


class _Request:
    """One OpenAI request, read: its body, what it names, and the ids its answer carries."""

    def __init__(self, route: str, body: bytes, document: dict[str, Any], model: str) -> None:
        self.route = route
        self.body = body
        self.document = document
        self.model = model
        request = current()
        suffix = request.request_id if request is not None else str(time.time_ns())
        self.answer_id = ("resp_" if route == RESPONSES else "chatcmpl-") + suffix
        self.created = int(time.time())
        self.tokens = 0  # usage.total_tokens of the answer, where the model reports it

    def answer(self, model: LoadedModel) -> bytes:
        """In the inference thread: predict, in the route's answer shape."""
        task = _check(model, self.route)
        output = model.predict(_input(self.document, self.route, task))
        if self.route == RESPONSES:
            shaped = openai_shapes.response(events.plain(output), model=self.model, response_id=self.answer_id)
        else:
            shaped = openai_shapes.completion(events.plain(output), model=self.model, completion_id=self.answer_id)
        self.tokens = openai_shapes.total_tokens(shaped)
        return encode_predictions(shaped, unwrapped=True)

    def start(self, model: LoadedModel) -> Iterator[Any]:
        """In a stream thread: the version's stream, in the route's chunk shape."""
        task = _check(model, self.route)
        inner = model.predict_stream(_input(self.document, self.route, task))
        return self._responses(inner) if self.route == RESPONSES else self._chat(inner)

    def _responses(self, inner: Iterator[Any]) -> Iterator[Any]:
        items: list[Any] = []
        try:
            for event in inner:
                event = events.plain(event)
                if isinstance(event, dict) and event.get("type") == "response.output_item.done":
                    items.append(event.get("item"))
                yield event
            completed = openai_shapes.response({"output": items}, model=self.model, response_id=self.answer_id)
            yield {"type": "response.completed", "response": completed}
        finally:
            _close(inner)

    def _chat(self, inner: Iterator[Any]) -> Iterator[Any]:
        ended = False
        announced: set[int] = set()
        try:
            for chunk in inner:
                shaped = openai_shapes.completion_chunk(
                    events.plain(chunk), model=self.model, completion_id=self.answer_id, created=self.created
                )
                shaped = openai_shapes.role_once(shaped, announced)
                ended = ended or openai_shapes.finished(shaped)
                yield shaped
            if not ended:
                yield openai_shapes.final_chunk(model=self.model, completion_id=self.answer_id, created=self.created)
        finally:
            _close(inner)


def _close(generator: Any) -> None:
    close = getattr(generator, "close", None)
    if close is not None:
        close()


def _read(body: bytes, route: str) -> tuple[dict[str, Any], str]:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise MalformedRequest(f"Request body is not valid JSON: {exc}") from None
    try:
        return document, openai_shapes.model_of(document)
    except openai_shapes.ShapeError as exc:
        raise MalformedRequest(str(exc)) from None


async def serve(services: Services, scope: Scope, receive: Receive, send: Send, route: str) -> None:
    """Answer one OpenAI request on ASGI: the answer, its stream, or the error in OpenAI's shape."""
    started = time.perf_counter()
    headers = scope["headers"]
    content_type = content_length = route_key = None
    for key, value in headers:
        if key == b"content-type" and content_type is None:
            content_type = value.decode("latin-1")
        elif key == b"content-length" and content_length is None:
            content_length = value.decode("latin-1")
        elif key == services.route_key_header and route_key is None:
            route_key = header_text(value)
    permit = NO_PERMIT
    served: Resolved | None = None
    admitted = False
    try:
        if parse_content_type(content_type) != JSON:
            raise MalformedRequest("OpenAI's routes take JSON bodies (Content-Type: application/json)")
        body = await read_body(receive, content_length, services.settings.max_body_bytes)
        document, model = _read(body, route)
        name, selector = split_model_reference(model)
        if services.gate.active:  # the same check as every predict, on the model the body names
            key, limits = await services.gate.check(Access.PREDICT, name, headers)
            if limits:
                permit = await services.gate.acquire(key, limits)
        admitted = True
        if not services.ready:
            await services.until_ready()
        served = await services.inference.choose(name, path=selector, route_key=route_key)
        request = _Request(route, body, document, model)
        if document.get("stream") is True:
            stream = await services.streams.open(served, request.start)
            await mlflow_stream.serve(
                services,
                stream,
                receive,
                send,
                headers=served_headers(stream.served),
                dialect=OPENAI,
                protocol="openai",
                request_body=body,
                route_key=route_key,
                started=started,
            )
            return
        prediction = await services.inference.call(served, request.answer, kind=f"openai {route}", body=body)
    except Exception as exc:
        answer = openai_error(http_errors.answer_for(exc, scope["method"], scope["path"]))
        if admitted:  # the body was read: a row of the inference tables, as a failed request
            failed = Exchange("openai", JSON, body, b"", route_key, error_code=http_errors.classify(exc).code)
            services.predict_finished(served, status=answer.status, started=started, error=exc, exchange=failed)
        await http_errors.send_error(send, answer)
        return
    finally:
        permit.release()
    served = prediction.served
    if request.tokens and (context := current()) is not None:
        context.tokens = request.tokens
    services.predict_finished(
        served, status=200, started=started, exchange=Exchange("openai", JSON, body, prediction.body, route_key)
    )
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(prediction.body)).encode())]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in served_headers(served).items()]
    await send({"type": "http.response.start", "status": 200, "headers": raw})
    await send({"type": "http.response.body", "body": prediction.body})
