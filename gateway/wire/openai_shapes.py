"""OpenAI's API shapes, as data: the Responses API and Chat Completions bodies MLflow's agent
and chat interfaces map to, and back. No I/O; gateway.protocols.openai_serving speaks them.

- ``POST /v1/responses`` serves a ``ResponsesAgent`` (MLflow's ``ResponsesAgentRequest`` is the
  Responses API's ``input``, with ``custom_inputs`` and ``context`` beside it); its stream events
  are the Responses API's already, and the stream ends with ``response.completed`` carrying the
  response MLflow's own output reducer adds the stream up to.
- ``POST /v1/chat/completions`` serves a ``ChatModel`` (its answers and chunks are Chat
  Completions' already), a ``ChatAgent`` (its messages and delta chunks become choices) and
  pyfuncs that take chat ``messages`` (dicts with ``choices`` pass through, text is the
  assistant's content), and a transformers text-generation pipeline MLflow logged as
  ``llm/v1/chat`` (its one-completion list is that completion). Not streamed: MLflow's
  transformers flavor has no ``predict_stream``.
"""

from __future__ import annotations

import time
from typing import Any

RESPONSES_AGENT = "agent/v1/responses"  # MLflow's metadata task of each interface
CHAT_MODEL = "agent/v1/chat"
CHAT_AGENT = "agent/v2/chat"
INTERFACES = {RESPONSES_AGENT: "a ResponsesAgent", CHAT_MODEL: "a ChatModel", CHAT_AGENT: "a ChatAgent"}
# A transformers text-generation pipeline logged by MLflow's transformers flavor with
# task="llm/v1/chat": it takes Chat Completions' body and answers a list of one chat.completion.
TRANSFORMERS_CHAT = "llm/v1/chat"

# What a request says to the gateway, not to the model.
_ROUTING_KEYS = frozenset({"model", "stream", "stream_options"})
# ChatParams' fields (mlflow.types.llm.ChatParams): what a ChatModel takes besides its messages.
_CHAT_PARAMS = frozenset(
    {
        "temperature",
        "max_tokens",
        "stop",
        "n",
        "top_p",
        "top_k",
        "frequency_penalty",
        "presence_penalty",
        "custom_inputs",
        "tools",
    }
)


class ShapeError(ValueError):
    """A body that is not the API's (the adapter answers it 400)."""


def model_of(body: Any) -> str:
    if not isinstance(body, dict):
        raise ShapeError("the body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ShapeError("'model' is required: a registered model's name, name@alias or name/version")
    return model


def interface(metadata_task: str | None) -> str:
    """What a version speaks, in words (for the error when it is the wrong route's)."""
    return INTERFACES.get(metadata_task or "", "a pyfunc")


def responses_input(body: dict[str, Any]) -> dict[str, Any]:
    """A ``ResponsesAgentRequest`` from a Responses API body: ``input`` (a string is one user
    message), ``instructions`` as a system message first, ``custom_inputs`` and ``context``."""
    given = body.get("input")
    if isinstance(given, str):
        items: list[Any] = [{"role": "user", "content": given}]
    elif isinstance(given, list):
        items = list(given)
    else:
        raise ShapeError("'input' must be a string or a list of messages and items")
    if isinstance(instructions := body.get("instructions"), str) and instructions:
        items = [{"role": "system", "content": instructions}, *items]
    request: dict[str, Any] = {"input": items}
    for key in ("custom_inputs", "context"):
        if body.get(key) is not None:
            request[key] = body[key]
    return request


def response(output: Any, *, model: str, response_id: str) -> dict[str, Any]:
    """A ``ResponsesAgentResponse`` as the Responses API's ``response`` object."""
    document = dict(output) if isinstance(output, dict) else {"output": output}
    document.setdefault("object", "response")
    document.setdefault("id", response_id)
    document.setdefault("created_at", int(time.time()))
    document.setdefault("status", "completed")
    document["model"] = model
    return document


def chat_input(body: dict[str, Any], task: str | None) -> dict[str, Any]:
    """What the version's pyfunc takes from a Chat Completions body: ``messages`` and, for a
    ChatModel, ChatParams; a ChatAgent's ``context`` and ``custom_inputs``; anything else the
    body carries, for a chat-format pyfunc."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ShapeError("'messages' must be a non-empty list")
    if task == CHAT_MODEL:
        return {"messages": messages, **{k: v for k, v in body.items() if k in _CHAT_PARAMS}}
    if task == CHAT_AGENT:
        return {"messages": messages, **{k: body[k] for k in ("context", "custom_inputs") if body.get(k) is not None}}
    return {k: v for k, v in body.items() if k not in _ROUTING_KEYS}


def _text(value: Any) -> str:
    if isinstance(value, list):
        return "".join(_text(v) for v in value)
    return "" if value is None else str(value)


def completion(output: Any, *, model: str, completion_id: str) -> dict[str, Any]:
    """A chat answer as Chat Completions' ``chat.completion``."""
    if isinstance(output, list) and len(output) == 1 and isinstance(output[0], dict) and "choices" in output[0]:
        output = output[0]  # MLflow's transformers flavor (llm/v1/chat): a completion per input, listed
    if isinstance(output, dict) and "choices" in output:
        document = dict(output)
    elif isinstance(output, dict) and "messages" in output:  # a ChatAgent's answer
        content = "".join(_text(m.get("content")) for m in output["messages"] if m.get("role") == "assistant")
        message = {"role": "assistant", "content": content}
        document = {"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}
    else:
        message = {"role": "assistant", "content": _text(output)}
        document = {"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}
    document.setdefault("id", completion_id)
    document["object"] = "chat.completion"
    document.setdefault("created", int(time.time()))
    document["model"] = model
    return document


def total_tokens(document: dict[str, Any]) -> int:
    """The tokens an answer says it used (``usage.total_tokens``, else prompt plus completion
    or input plus output tokens), 0 where it says nothing usable."""
    usage = document.get("usage")
    if not isinstance(usage, dict):
        return 0
    total = usage.get("total_tokens")
    if not isinstance(total, int) or isinstance(total, bool):
        parts = [usage.get(k) for k in ("prompt_tokens", "completion_tokens", "input_tokens", "output_tokens")]
        total = sum(p for p in parts if isinstance(p, int) and not isinstance(p, bool))
    return max(0, total)


def completion_chunk(chunk: Any, *, model: str, completion_id: str, created: int) -> dict[str, Any]:
    """A chat chunk as Chat Completions' ``chat.completion.chunk``."""
    if isinstance(chunk, dict) and "choices" in chunk:
        document = dict(chunk)
    elif isinstance(chunk, dict) and isinstance(chunk.get("delta"), dict):  # a ChatAgent's chunk
        delta = chunk["delta"]
        document = {
            "choices": [
                {"index": 0, "delta": {"role": delta.get("role", "assistant"), "content": _text(delta.get("content"))}}
            ]
        }
    else:
        document = {"choices": [{"index": 0, "delta": {"role": "assistant", "content": _text(chunk)}}]}
    document["id"] = completion_id
    document["object"] = "chat.completion.chunk"
    document["created"] = created
    document["model"] = model
    return document


def role_once(chunk: dict[str, Any], announced: set[int]) -> dict[str, Any]:
    """``chunk`` with a choice's ``delta.role`` kept only in its first delta, as OpenAI streams it
    (a ChatModel's chunks repeat ``"role": "assistant"`` in each); ``announced`` holds the choice
    indexes whose role went out already, and grows."""
    choices = []
    for choice in chunk.get("choices") or ():
        if isinstance(choice, dict) and isinstance(choice.get("delta"), dict) and "role" in choice["delta"]:
            index = choice.get("index", 0)
            if index in announced:
                choice = {**choice, "delta": {k: v for k, v in choice["delta"].items() if k != "role"}}
            elif choice["delta"]["role"] is not None:
                announced.add(index)
        choices.append(choice)
    return {**chunk, "choices": choices} if "choices" in chunk else chunk


def final_chunk(*, model: str, completion_id: str, created: int) -> dict[str, Any]:
    """The last chunk of a stream whose chunks gave no ``finish_reason``: OpenAI's ``stop``."""
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
    }


def finished(chunk: dict[str, Any]) -> bool:
    return any(isinstance(c, dict) and c.get("finish_reason") for c in chunk.get("choices") or ())


def error_body(message: str, code: str, status: int) -> dict[str, Any]:
    """OpenAI's error shape; ``type`` as OpenAI names its classes of error."""
    kind = (
        "invalid_request_error"
        if status < 500 and status not in (401, 403, 429)
        else {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}.get(status, "server_error")
    )
    return {"error": {"message": message, "type": kind, "code": code, "param": None}}


def models_list(entries: list[tuple[str, int]]) -> dict[str, Any]:
    """``GET /v1/models``: ``(id, created)`` pairs, each a model name or ``name@alias``."""
    data = [
        {"id": model_id, "object": "model", "created": created, "owned_by": "mlflow-registry"}
        for model_id, created in entries
    ]
    return {"object": "list", "data": data}
