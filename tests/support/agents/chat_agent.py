"""A ChatAgent that answers the last message back, and streams it a chunk a word."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import mlflow
from mlflow.pyfunc import ChatAgent
from mlflow.types.agent import ChatAgentChunk, ChatAgentMessage, ChatAgentResponse, ChatContext
from words import stream_words  # type: ignore[import-not-found]


class EchoChatAgent(ChatAgent):
    def predict(
        self,
        messages: list[ChatAgentMessage],
        context: ChatContext | None = None,
        custom_inputs: dict[str, Any] | None = None,
    ) -> ChatAgentResponse:
        reply = ChatAgentMessage(role="assistant", content=messages[-1].content, id="reply-1")
        return ChatAgentResponse(messages=[reply])

    def predict_stream(
        self,
        messages: list[ChatAgentMessage],
        context: ChatContext | None = None,
        custom_inputs: dict[str, Any] | None = None,
    ) -> Generator[ChatAgentChunk, None, None]:
        def chunk(index: int, word: str) -> ChatAgentChunk:
            return ChatAgentChunk(delta=ChatAgentMessage(role="assistant", content=word, id="reply-1"))

        yield from stream_words(str(messages[-1].content), custom_inputs, chunk)


mlflow.models.set_model(EchoChatAgent())
