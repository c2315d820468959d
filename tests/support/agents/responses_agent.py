"""A ResponsesAgent that streams the last user message back, a text delta a word, then the
whole message as one output item (MLflow's own stream events)."""

from __future__ import annotations

from collections.abc import Generator

import mlflow
from mlflow.pyfunc import ResponsesAgent
from mlflow.types.responses import ResponsesAgentRequest, ResponsesAgentResponse, ResponsesAgentStreamEvent
from words import stream_words  # type: ignore[import-not-found]  # logged beside it (code_paths)


def _text(request: ResponsesAgentRequest) -> str:
    for item in reversed(request.input):
        message = item.model_dump() if hasattr(item, "model_dump") else dict(item)
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
            return str(content)
    return ""


class EchoAgent(ResponsesAgent):
    def predict(self, request: ResponsesAgentRequest) -> ResponsesAgentResponse:
        done = [e.item for e in self.predict_stream(request) if e.type == "response.output_item.done"]
        return ResponsesAgentResponse(output=done, custom_outputs=request.custom_inputs)

    def predict_stream(self, request: ResponsesAgentRequest) -> Generator[ResponsesAgentStreamEvent, None, None]:
        words: list[str] = []

        def delta(index: int, word: str) -> ResponsesAgentStreamEvent:
            words.append(word)
            return ResponsesAgentStreamEvent(**self.create_text_delta(delta=word, item_id="msg-1"))

        yield from stream_words(_text(request), request.custom_inputs, delta)
        item = self.create_text_output_item(text="".join(words), id="msg-1")
        yield ResponsesAgentStreamEvent(type="response.output_item.done", item=item)


mlflow.models.set_model(EchoAgent())
