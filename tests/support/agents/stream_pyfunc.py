"""A plain PythonModel with predict_stream: a prompt's words, a string chunk each; given chat
``messages``, chat-completion chunks (a chat-format pyfunc)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import mlflow
from mlflow.pyfunc import PythonModel
from words import stream_words  # type: ignore[import-not-found]


def _text(model_input: Any) -> tuple[str, dict[str, Any], bool]:
    if isinstance(model_input, dict):
        options = dict(model_input.get("options") or {})
        if model_input.get("messages"):
            return str(model_input["messages"][-1]["content"]), options, True
        return str(model_input.get("prompt", "")), options, False
    return str(model_input), {}, False


class Words(PythonModel):
    def predict(self, context: Any, model_input: Any, params: dict[str, Any] | None = None) -> Any:
        text, _, chat = _text(model_input)
        if chat:
            message = {"role": "assistant", "content": text}
            return {
                "object": "chat.completion",
                "created": int(time.time()),
                "model": "words",
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            }
        return [text]

    def predict_stream(self, context: Any, model_input: Any, params: dict[str, Any] | None = None) -> Iterator[Any]:
        text, options, chat = _text(model_input)
        if not chat:
            yield from stream_words(text, options, lambda index, word: word)
            return

        def chunk(index: int, word: str) -> dict[str, Any]:
            return {
                "object": "chat.completion.chunk",
                "model": "words",
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": word}}],
            }

        yield from stream_words(text, options, chunk)


mlflow.models.set_model(Words())
