"""The OpenAI-compatible routes, spoken by the official ``openai`` Python client: /v1/responses
for a ResponsesAgent, /v1/chat/completions for a ChatModel, a ChatAgent and a chat-format
pyfunc, /v1/models; streaming and not; ``model`` as name, name@alias and name/version, through
the same keys, scopes and limits as every request (issue 44)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import Registry, settings_under
from tests.gateway.protocols.conftest import served_app
from tests.support.keys import add_key

TEXT = "the quick brown fox"
MESSAGES: list[Any] = [{"role": "user", "content": TEXT}]
CHATS = ["chat", "chat-agent", "words"]
pytestmark = pytest.mark.usefixtures("traces_kept_here")


@pytest.fixture(scope="module")
def gateway_url(agents_registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with served_app(settings_under(tmp_path_factory.mktemp("openai-gateway")), agents_registry) as (url, _):
        yield url


@pytest.fixture(scope="module")
def client(gateway_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{gateway_url}/v1", api_key="unused", max_retries=0) as client:
        yield client


@pytest.mark.parametrize("model", ["agent", "agent@champion", "agent/1"])
def test_a_responses_agent_answers_the_responses_api(client: openai.OpenAI, model: str) -> None:
    raw = client.responses.with_raw_response.create(model=model, input=TEXT)
    assert raw.headers["X-Model-Name"] == "agent" and raw.headers["X-Model-Version"] == "1"
    response = raw.parse()
    assert response.output_text == TEXT
    assert response.model == model and response.object == "response"


def test_a_responses_agent_streams_the_responses_api(client: openai.OpenAI) -> None:
    stream = client.responses.create(model="agent", input=[{"role": "user", "content": TEXT}], stream=True)
    events = list(stream)
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert deltas == ["the ", "quick ", "brown ", "fox"]
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == TEXT


@pytest.mark.parametrize("model", CHATS)
def test_chat_models_answer_chat_completions(client: openai.OpenAI, model: str) -> None:
    completion = client.chat.completions.create(model=model, messages=MESSAGES)
    assert completion.choices[0].message.content == TEXT
    assert completion.object == "chat.completion" and completion.model == model


@pytest.mark.parametrize("model", CHATS)
def test_chat_models_stream_chat_completions(client: openai.OpenAI, model: str) -> None:
    chunks = list(client.chat.completions.create(model=model, messages=MESSAGES, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == TEXT
    assert len(chunks) >= 4 and chunks[-1].choices[0].finish_reason == "stop"
    assert {c.object for c in chunks} == {"chat.completion.chunk"} and len({c.id for c in chunks}) == 1
    # the role once, in the first delta, as OpenAI sends it
    assert [c.choices[0].delta.role for c in chunks] == ["assistant"] + [None] * (len(chunks) - 1)


def test_an_error_mid_stream_raises_in_the_client(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="chat", messages=MESSAGES, stream=True, extra_body={"custom_inputs": {"fail_at": 2}}
    )
    received = []
    with pytest.raises(openai.APIError, match="the model failed before word 2"):
        for chunk in stream:
            received.append(chunk.choices[0].delta.content)
    assert received == ["the ", "quick "]


def test_the_wrong_interface_and_unknown_models_are_openai_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="is a ResponsesAgent; /v1/chat/completions serves"):
        client.chat.completions.create(model="agent", messages=MESSAGES)
    with pytest.raises(openai.BadRequestError, match="is a ChatModel; /v1/responses serves ResponsesAgent"):
        client.responses.create(model="chat", input=TEXT)
    with pytest.raises(openai.BadRequestError, match="does not implement predict_stream"):
        list(client.chat.completions.create(model="plain", messages=MESSAGES, stream=True))
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="nobody-registered-this", messages=MESSAGES)
    assert missing.value.body["code"] == "RESOURCE_DOES_NOT_EXIST"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError, match="no alias 'nope'"):
        client.responses.create(model="agent@nope", input=TEXT)


def test_the_model_list_names_each_model_and_its_aliases(client: openai.OpenAI) -> None:
    ids = {model.id for model in client.models.list()}
    assert {"agent", "agent@champion", "chat", "chat-agent", "words", "plain"} <= ids


def test_the_model_list_shows_a_key_the_models_it_may_call_and_only_those_that_speak_openai(
    agents_registry: Registry, tmp_path: Path
) -> None:
    """OpenAI's client lists with the key it calls with: a predict key lists what it may call
    (no read scope needed); a tabular pyfunc and scikit-learn's iris take no chat input and are
    not listed, though /models shows them."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    from gateway.demo import log_iris_version
    from tests.support import agents

    columns = ModelSignature(inputs=Schema([ColSpec("double", "x")]))
    agents_registry.log(agents.log_model_from_code, "listed-columns", agents.MODELS["plain"], signature=columns)
    agents_registry.log(log_iris_version, "listed-iris", c=1.0)
    agents_registry.client.set_registered_model_alias("listed-iris", "champion", "1")
    settings = settings_under(tmp_path, auth="keys")
    keys = {
        "chat-only": add_key(settings, "chat-only", "predict:chat*"),
        "every": add_key(settings, "every", "predict:*"),
        "reader": add_key(settings, "reader", "read"),
        "admin": add_key(settings, "admin", "admin"),
    }
    speaking = {"agent", "agent@champion", "chat", "chat-agent", "words", "plain"}
    with served_app(settings, agents_registry) as (url, _):

        def listed(key: str) -> set[str]:
            with openai.OpenAI(base_url=f"{url}/v1", api_key=keys[key], max_retries=0) as client:
                return {model.id for model in client.models.list()}

        assert listed("chat-only") == {"chat", "chat-agent"}
        every = listed("every")
        assert speaking <= every and not {i for i in every if i.startswith("listed-")}
        assert listed("reader") == every
        with pytest.raises(openai.PermissionDeniedError, match="read or predict"):
            listed("admin")
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {keys['reader']}"}) as plain_http:
            shown = {m["name"] for m in plain_http.get("/models").json()["models"]}
        assert {"listed-columns", "listed-iris"} <= shown


def test_the_docs_examples_run_as_they_are_on_the_demos_models(agents_registry: Registry, gateway_url: str) -> None:
    """/docs's bodies for the OpenAI routes name the demo's echo-chat and echo-agent."""
    from gateway import demo_models
    from gateway.demo import AGENT, CHAT
    from tests.support import agents

    for name, code in ((AGENT, demo_models.ECHO_AGENT), (CHAT, demo_models.ECHO_CHAT)):
        agents_registry.log(agents.log_model_from_code, name, code)
        agents_registry.client.set_registered_model_alias(name, "champion", "1")
    with httpx.Client(base_url=gateway_url, timeout=60) as http:
        spec = http.get("/openapi.json").json()
        tried = 0
        for path in ("/v1/chat/completions", "/v1/responses"):
            examples = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["examples"]
            for key, example in examples.items():
                response = http.post(path, json=example["value"])
                assert response.status_code == 200, (path, key, response.text)
                assert "hello" in response.text and "there" in response.text, (path, key)  # whole, or a word a chunk
                tried += 1
    assert tried == 4


def test_keys_scopes_and_limits_hold_on_the_openai_routes(agents_registry: Registry, tmp_path: Path) -> None:
    settings = settings_under(tmp_path, auth="keys")
    chat_only = add_key(settings, "chat-only", "predict:chat*")
    single = add_key(settings, "single", "predict:*", concurrency=1)
    with served_app(settings, agents_registry) as (url, _):
        with openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0) as anonymous:
            with pytest.raises(openai.AuthenticationError):
                anonymous.chat.completions.create(model="chat", messages=MESSAGES)
        with openai.OpenAI(base_url=f"{url}/v1", api_key=chat_only, max_retries=0) as scoped:
            assert scoped.chat.completions.create(model="chat", messages=MESSAGES).choices[0].message.content == TEXT
            with pytest.raises(openai.PermissionDeniedError, match="predict"):
                scoped.responses.create(model="agent", input=TEXT)
        with openai.OpenAI(base_url=f"{url}/v1", api_key=single, max_retries=0) as limited:
            # an open stream holds the key's one place until it ends
            long = {"custom_inputs": {"repeat": 500, "delay": 0.01}}
            stream = limited.chat.completions.create(model="chat", messages=MESSAGES, stream=True, extra_body=long)
            first = next(iter(stream))
            assert first.choices[0].delta.content == "the "
            with pytest.raises(openai.RateLimitError):
                limited.chat.completions.create(model="chat", messages=MESSAGES)
            stream.close()
        with httpx.Client(base_url=url) as plain_http:
            assert plain_http.get("/v1/models").status_code == 401


def test_a_pyfunc_whose_signature_takes_no_messages_is_told_so_by_chat_completions(
    agents_registry: Registry, client: openai.OpenAI
) -> None:
    """Not MLflow's schema enforcement failing on a `messages` column: the interface, in words."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    from tests.support import agents

    signature = ModelSignature(inputs=Schema([ColSpec("double", "sepal_length"), ColSpec("double", "sepal_width")]))
    agents_registry.log(agents.log_model_from_code, "tabular", agents.MODELS["plain"], signature=signature)
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="tabular", messages=MESSAGES)
    assert "is a pyfunc whose signature takes sepal_length, sepal_width; /v1/chat/completions serves" in str(
        refused.value
    )


def test_the_openai_client_calls_with_an_identity_providers_token(agents_registry: Registry, tmp_path: Path) -> None:
    """GATEWAY_AUTH=oidc (issue 53): the token goes where OpenAI's client puts its api_key."""
    from tests.support.issuer import AUDIENCE, TestIssuer

    issuer = TestIssuer()
    issuer.add("k1", "ES256")
    try:
        settings = settings_under(tmp_path, auth="oidc", oidc_issuer=issuer.url, oidc_audience=AUDIENCE)
        token = issuer.token("k1", scope="openid profile predict:chat*")
        with served_app(settings, agents_registry) as (url, _):
            with openai.OpenAI(base_url=f"{url}/v1", api_key=token, max_retries=0) as client:
                answer = client.chat.completions.create(model="chat", messages=MESSAGES)
                assert answer.choices[0].message.content == TEXT
                assert {model.id for model in client.models.list()} == {"chat", "chat-agent"}
                with pytest.raises(openai.PermissionDeniedError, match="predict"):
                    client.responses.create(model="agent", input=TEXT)
            expired = issuer.token("k1", exp=1, scope="predict:*")
            with openai.OpenAI(base_url=f"{url}/v1", api_key=expired, max_retries=0) as refused:
                with pytest.raises(openai.AuthenticationError, match="expired"):
                    refused.chat.completions.create(model="chat", messages=MESSAGES)
    finally:
        issuer.stop()


def test_tokens_are_counted_and_a_token_quota_is_the_clients_rate_limit_error(
    agents_registry: Registry, tmp_path: Path
) -> None:
    """Issue 53: the tokens a model reports (``usage.total_tokens``) are counted per caller; a
    quota in tokens, used up, is a 429 the official client raises as RateLimitError, with the
    quota's headers."""
    from registry_sync.quotas import Quota
    from tests.support import agents
    from tests.support.keys import add_quota

    agents_registry.log(agents.log_model_from_code, "counted", agents.COUNTED_CHAT)
    settings = settings_under(tmp_path, auth="keys", usage_flush_seconds=3600)
    secret = add_key(settings, "talker", "predict:counted")
    reader = add_key(settings, "reader", "read")
    add_quota(settings, Quota("talk", "talker", "count*", "month", "tokens", 10))
    four = [{"role": "user", "content": "one two three four"}]  # 8 tokens an answer
    with served_app(settings, agents_registry) as (url, app):
        with openai.OpenAI(base_url=f"{url}/v1", api_key=secret, max_retries=0) as client:
            first = client.chat.completions.create(model="counted", messages=four)
            assert first.usage is not None and first.usage.total_tokens == 8
            client.chat.completions.create(model="counted", messages=four)  # 8 of 10 before: admitted
            with pytest.raises(openai.RateLimitError, match="talk") as refused:
                client.chat.completions.create(model="counted", messages=four)  # 16 of 10
        assert refused.value.response.headers["X-RateLimit-Limit"] == "10"
        assert refused.value.response.headers["X-RateLimit-Remaining"] == "0"
        assert int(refused.value.response.headers["Retry-After"]) > 0
        meter = app.state.services.rooms.usage.meter
        (tally,) = meter.pending().values()  # flushed at the interval; read here before it
        assert (tally.requests, tally.tokens) == (2, 16)
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {reader}"}) as http:
            (quota,) = http.get("/usage").json()["quotas"]
        assert (quota["name"], quota["unit"], quota["amount"]) == ("talk", "tokens", 10)
