"""The demo's ChatModel: the last message back, a chunk a word."""

from __future__ import annotations

import warnings
from collections.abc import Generator
from typing import Any

import mlflow
from mlflow.types.llm import (
    ChatChoice,
    ChatChoiceDelta,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionResponse,
    ChatMessage,
    ChatParams,
)

with warnings.catch_warnings():  # MLflow 3 deprecates ChatModel for ResponsesAgent; registries still hold them
    warnings.simplefilter("ignore", FutureWarning)
    from mlflow.pyfunc.model import ChatModel


class EchoChat(ChatModel):
    def predict(  # type: ignore[override]  # ChatModel's own signature, as MLflow defines it
        self, context: Any, messages: list[ChatMessage], params: ChatParams
    ) -> ChatCompletionResponse:
        message = ChatMessage(role="assistant", content=str(messages[-1].content))
        return ChatCompletionResponse(choices=[ChatChoice(index=0, message=message)], model="echo-chat")

    def predict_stream(  # type: ignore[override]
        self, context: Any, messages: list[ChatMessage], params: ChatParams
    ) -> Generator[ChatCompletionChunk, None, None]:
        words = str(messages[-1].content).split()
        for index, word in enumerate(words):
            delta = ChatChoiceDelta(role="assistant", content=word if index == len(words) - 1 else word + " ")
            yield ChatCompletionChunk(choices=[ChatChunkChoice(index=0, delta=delta)], model="echo-chat")


with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    mlflow.models.set_model(EchoChat())
