"""A ChatModel that answers the last message back and reports its tokens (a word each) in
``usage``, as a served LLM does: what the gateway's usage counts and a token quota bounds."""

from __future__ import annotations

from typing import Any

import mlflow
from mlflow.pyfunc import ChatModel
from mlflow.types.llm import ChatChoice, ChatCompletionResponse, ChatMessage, ChatParams, TokenUsageStats


class CountedChat(ChatModel):
    def predict(self, context: Any, messages: list[ChatMessage], params: ChatParams) -> ChatCompletionResponse:
        text = str(messages[-1].content)
        words = len(text.split())
        usage = TokenUsageStats(prompt_tokens=words, completion_tokens=words, total_tokens=2 * words)
        message = ChatMessage(role="assistant", content=text)
        return ChatCompletionResponse(choices=[ChatChoice(index=0, message=message)], usage=usage, model="counted")


mlflow.models.set_model(CountedChat())
