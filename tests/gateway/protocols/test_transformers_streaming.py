"""A tiny transformers GPT-2 from the registry, two ways (issue 44, issue 49 point 8): a tiny GPT-2
built from a config with random weights and a word tokenizer, no download.

- ``tiny-generator``: a PythonModel (models from code, tests/support/agents/tiny_generator.py)
  that generates with it greedily and streams a token an event over SSE.
- ``tiny-gpt2``: the same weights as a ``text-generation`` pipeline logged with
  ``mlflow.transformers.log_model`` (task ``llm/v1/chat``, as MLflow's docs log a chat model).
  MLflow 3.17's transformers flavor has no ``predict_stream``: it writes no ``streamable`` flag
  and its pyfunc's ``predict_stream`` raises. The gateway says so (400) when asked to stream it,
  on MLflow's route and on OpenAI's, and answers it whole as MLflow's own pyfunc does.

Runs where transformers is installed (the flavor matrix's extra installs it); fails under CI
without it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.ci import importable

importable("transformers", "pip install '.[flavors]'")

from tests.conftest import Gateway, Registry, empty_registry, running_gateway, settings_under  # noqa: E402
from tests.support import agents  # noqa: E402

pytestmark = pytest.mark.anyio
ASK = {"prompt": "the quick brown fox", "max_new_tokens": 6}
CHAT = {"messages": [{"role": "user", "content": "the quick brown fox"}], "max_tokens": 6}


def log_text_generation_pipeline(name: str, weights: Path) -> int:
    """``weights`` as a transformers ``text-generation`` pipeline, logged by MLflow's transformers
    flavor as a chat model (greedy, at most six new tokens unless asked otherwise)."""
    import mlflow
    import mlflow.transformers
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast, pipeline

    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(weights))
    # llm/v1/chat renders the messages with the tokenizer's chat template: each message's words
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }} {% endfor %}"
    model = AutoModelForCausalLM.from_pretrained(str(weights))
    pipe = pipeline("text-generation", model=model, tokenizer=tokenizer, device="cpu")
    with mlflow.start_run(run_name=name):
        info = mlflow.transformers.log_model(
            pipe,
            name="model",
            task="llm/v1/chat",
            model_config={"do_sample": False, "max_new_tokens": 6},
            registered_model_name=name,
            pip_requirements=["mlflow", "torch", "transformers"],
        )
    return int(info.registered_model_version or 0)


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
    registry.log(log_text_generation_pipeline, "tiny-gpt2", weights)
    return registry, weights


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def gateway(generator: tuple[Registry, Path], tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gateway]:
    registry, _ = generator
    async with running_gateway(settings_under(tmp_path_factory.mktemp("gateway")), registry.tracking_uri) as gw:
        yield gw


def greedy(weights: Path) -> list[str]:
    """What transformers' own ``generate`` (greedy) adds to the prompt, a token's text each."""
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    model = AutoModelForCausalLM.from_pretrained(str(weights))
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(weights))
    ids = tokenizer(ASK["prompt"], return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=ASK["max_new_tokens"], do_sample=False, pad_token_id=0)
    return [" " + tokenizer.decode(token) for token in out[0, ids.shape[1] :]]


async def test_a_python_model_wrapping_a_tiny_transformer_streams_its_greedy_generation_token_by_token(
    generator: tuple[Registry, Path], gateway: Gateway
) -> None:
    _, weights = generator
    expected = greedy(weights)
    assert len(expected) == ASK["max_new_tokens"]
    response = await gateway.client.post("/models/tiny-generator/invocations", json={**ASK, "stream": True})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    blocks = [block for block in response.text.split("\n\n") if block]
    assert blocks[-1] == "data: [DONE]"
    assert [json.loads(block.removeprefix("data: ")) for block in blocks[:-1]] == expected
    whole = await gateway.client.post("/models/tiny-generator/invocations", json=ASK)
    assert whole.status_code == 200 and whole.json() == ["".join(expected)]


def _answer(completion: dict[str, Any]) -> str:
    (choice,) = completion["choices"]
    return str(choice["message"]["content"])


async def test_a_transformers_flavor_text_generation_model_cannot_stream_as_mlflow_says_and_answers_whole(
    generator: tuple[Registry, Path], gateway: Gateway
) -> None:
    import openai
    from mlflow.exceptions import MlflowException

    registry, weights = generator
    # MLflow's own: no streamable flag written, and its pyfunc refuses to stream
    mlflow_own = registry.pyfunc("tiny-gpt2", 1)
    assert "streamable" not in mlflow_own.metadata.flavors["python_function"]
    with pytest.raises(MlflowException, match="This model does not support predict_stream method"):
        list(mlflow_own.predict_stream(CHAT))
    (reference,) = mlflow_own.predict(CHAT)
    assert reference["choices"][0]["finish_reason"] == "length"

    # MLflow's route: asked to stream, 400 naming the version; whole, what MLflow's pyfunc answers
    streamed = await gateway.client.post("/models/tiny-gpt2/invocations", json={**CHAT, "stream": True})
    assert streamed.status_code == 400 and streamed.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "'tiny-gpt2' version 1 does not implement predict_stream" in streamed.json()["message"]
    whole = await gateway.client.post("/models/tiny-gpt2/invocations", json=CHAT)
    assert whole.status_code == 200, whole.text
    (answer,) = whole.json()
    assert _answer(answer) == _answer(reference) and answer["usage"] == reference["usage"]

    # OpenAI's client, as a user would: stream=True is refused naming the version; without, the same answer
    client = openai.AsyncOpenAI(
        base_url="http://gateway/v1", api_key="unused", http_client=gateway.client, max_retries=0
    )
    assert "tiny-gpt2" in [listed.id async for listed in client.models.list()]
    with pytest.raises(openai.BadRequestError, match="'tiny-gpt2' version 1 does not implement predict_stream"):
        await client.chat.completions.create(model="tiny-gpt2", stream=True, **CHAT)  # type: ignore[call-overload]
    completion = await client.chat.completions.create(model="tiny-gpt2", **CHAT)  # type: ignore[call-overload]
    assert completion.choices[0].message.content == _answer(reference)

    # the same weights stream as the PythonModel above does: its tokens join to the flavor's answer
    assert "".join(greedy(weights)).strip() == _answer(reference)
