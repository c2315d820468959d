"""A PythonModel wrapping a transformers GPT-2, streamed a token at a time: a tiny GPT-2 built from a
config with random weights (no download), loaded from the version's artifacts, generating
greedily (``argmax``, as ``generate(do_sample=False)`` does) and yielding each new token's text."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import mlflow
from mlflow.pyfunc import PythonModel


class TinyGenerator(PythonModel):
    def load_context(self, context: Any) -> None:
        from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

        self.model = AutoModelForCausalLM.from_pretrained(context.artifacts["model"])
        self.model.eval()
        self.tokenizer = PreTrainedTokenizerFast.from_pretrained(context.artifacts["model"])

    def _tokens(self, model_input: Any) -> Iterator[str]:
        import torch

        prompt = str(model_input["prompt"])
        new_tokens = int(model_input.get("max_new_tokens", 8))
        ids = self.tokenizer(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            for _ in range(new_tokens):
                following = self.model(ids).logits[:, -1, :].argmax(-1, keepdim=True)
                ids = torch.cat([ids, following], dim=1)
                yield " " + self.tokenizer.decode(following[0])

    def predict(self, context: Any, model_input: Any, params: dict[str, Any] | None = None) -> list[str]:
        return ["".join(self._tokens(model_input))]

    def predict_stream(self, context: Any, model_input: Any, params: dict[str, Any] | None = None) -> Iterator[str]:
        yield from self._tokens(model_input)


mlflow.models.set_model(TinyGenerator())
