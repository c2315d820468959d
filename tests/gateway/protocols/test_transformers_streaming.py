"""A PythonModel (models from code, tests/support/agents/tiny_generator.py) that generates with
a transformers GPT-2 from the registry, streamed a token at a time over SSE (issue 44): a tiny
GPT-2 built from a config with random weights, no download. Not a version logged with
``mlflow.transformers.log_model``: its own ``predict_stream`` yields the tokens. Runs where
transformers is installed (the flavor matrix's extra installs it); fails under CI without it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.ci import importable

importable("transformers", "pip install '.[flavors]'")

from tests.conftest import Registry, empty_registry, running_gateway, settings_under  # noqa: E402
from tests.support import agents  # noqa: E402

pytestmark = pytest.mark.anyio
ASK = {"prompt": "the quick brown fox", "max_new_tokens": 6}


@pytest.fixture(scope="module")
def generator(tmp_path_factory: pytest.TempPathFactory) -> tuple[Registry, Path]:
    root = tmp_path_factory.mktemp("generator")
    weights = agents.tiny_transformer(root / "tiny-gpt2")
    registry = empty_registry(root / "registry")
    registry.log(
        agents.log_model_from_code,
        "tiny-generator",
        agents.TINY_GENERATOR,
        artifacts={"model": str(weights)},
        pip_requirements=["mlflow", "torch", "transformers"],
    )
    return registry, weights


def greedy(weights: Path) -> list[str]:
    """What transformers' own ``generate`` (greedy) adds to the prompt, a token's text each."""
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    model = AutoModelForCausalLM.from_pretrained(str(weights))
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(weights))
    ids = tokenizer(ASK["prompt"], return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=ASK["max_new_tokens"], do_sample=False, pad_token_id=0)
    return [" " + tokenizer.decode(token) for token in out[0, ids.shape[1] :]]


async def test_a_python_model_wrapping_a_tiny_transformer_streams_its_greedy_generation_token_by_token(
    generator: tuple[Registry, Path], tmp_path: Path
) -> None:
    registry, weights = generator
    expected = greedy(weights)
    assert len(expected) == ASK["max_new_tokens"]
    async with running_gateway(settings_under(tmp_path), registry.tracking_uri) as gw:
        response = await gw.client.post("/models/tiny-generator/invocations", json={**ASK, "stream": True})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/event-stream")
        blocks = [block for block in response.text.split("\n\n") if block]
        assert blocks[-1] == "data: [DONE]"
        assert [json.loads(block.removeprefix("data: ")) for block in blocks[:-1]] == expected
        whole = await gw.client.post("/models/tiny-generator/invocations", json=ASK)
        assert whole.status_code == 200 and whole.json() == ["".join(expected)]
