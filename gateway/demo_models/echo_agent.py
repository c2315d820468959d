"""The demo's ResponsesAgent: the last user message back, a text delta a word."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import mlflow
from mlflow.pyfunc.model import ResponsesAgent
from mlflow.types.responses import ResponsesAgentRequest, ResponsesAgentResponse, ResponsesAgentStreamEvent


def _last_user_text(request: ResponsesAgentRequest) -> str:
    for item in reversed(request.input):
        message: dict[str, Any] = item.model_dump()
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
            return str(content)
    return ""


class EchoAgent(ResponsesAgent):
    def predict(self, request: ResponsesAgentRequest) -> ResponsesAgentResponse:  # type: ignore[override]
        events = [e.model_dump() for e in self.predict_stream(request)]
        return ResponsesAgentResponse(output=[e["item"] for e in events if e["type"] == "response.output_item.done"])

    def predict_stream(  # type: ignore[override]  # ResponsesAgent's own signature, as MLflow defines it
        self, request: ResponsesAgentRequest
    ) -> Generator[ResponsesAgentStreamEvent, None, None]:
        words = _last_user_text(request).split()
        for index, word in enumerate(words):
            delta = word if index == len(words) - 1 else word + " "
            yield ResponsesAgentStreamEvent(**self.create_text_delta(delta=delta, item_id="msg-1"))
        item = self.create_text_output_item(text=" ".join(words), id="msg-1")
        yield ResponsesAgentStreamEvent.model_validate({"type": "response.output_item.done", "item": item})


mlflow.models.set_model(EchoAgent())
