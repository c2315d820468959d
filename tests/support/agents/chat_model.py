"""A ChatModel that answers the last message back, and streams it a chunk a word."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import mlflow
from mlflow.pyfunc import ChatModel
from mlflow.types.llm import (
    ChatChoice,
    ChatChoiceDelta,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionResponse,
    ChatMessage,
    ChatParams,
)
from words import stream_words  # type: ignore[import-not-found]


def _options(params: ChatParams) -> dict[str, Any]:
    return dict(params.custom_inputs or {})


class EchoChat(ChatModel):
    def predict(self, context: Any, messages: list[ChatMessage], params: ChatParams) -> ChatCompletionResponse:
        text = str(messages[-1].content)
        message = ChatMessage(role="assistant", content=text)
        return ChatCompletionResponse(choices=[ChatChoice(index=0, message=message)], model="echo-chat")

    def predict_stream(
        self, context: Any, messages: list[ChatMessage], params: ChatParams
    ) -> Generator[ChatCompletionChunk, None, None]:
        def chunk(index: int, word: str) -> ChatCompletionChunk:
            delta = ChatChoiceDelta(role="assistant", content=word)
            return ChatCompletionChunk(choices=[ChatChunkChoice(index=0, delta=delta)], model="echo-chat")

        yield from stream_words(str(messages[-1].content), _options(params), chunk)


mlflow.models.set_model(EchoChat())
