"""The demo registry `make demo` builds, served as the README shows."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from gateway.demo import (
    AGENT,
    CHAT,
    DISAGREEING_ROW,
    IRIS,
    TORCH,
    build_demo_registry,
    torch_available,
    using_registry,
)
from tests.conftest import iris_split, running_gateway


@pytest.mark.anyio
async def test_demo_registry_serves_what_the_readme_promises(tmp_path: Path, make_settings) -> None:  # type: ignore[no-untyped-def]
    demo = build_demo_registry(tmp_path / "demo")
    assert demo.models[IRIS] == {"champion": 1, "challenger": 2}
    again = build_demo_registry(tmp_path / "demo")  # idempotent: reuses what is there
    assert again.models == demo.models
    printed = demo.describe("http://127.0.0.1:8000").splitlines()
    assert "The OpenAPI page, with examples: http://127.0.0.1:8000/docs" in printed
    assert not [line for line in printed if line.split()[:1] == ["open"]], "`open` is a macOS command"
    async with running_gateway(make_settings(), demo.tracking_uri) as gateway:
        row = iris_split([[6.7, 3.0, 5.2, 2.3]])
        champion = await gateway.client.post(f"/models/{IRIS}/predict", json=row)
        challenger = await gateway.client.post(
            f"/models/{IRIS}/predict", json=row, headers={"X-Model-Version": "challenger"}
        )
        assert champion.status_code == challenger.status_code == 200
        assert (champion.headers["x-model-version"], challenger.headers["x-model-version"]) == ("1", "2")
        # the agent and the chat model stream, as the printed lines show
        assert demo.models[AGENT] == demo.models[CHAT] == {"champion": 1}
        ask = {"input": [{"role": "user", "content": "streamed a word at a time"}], "stream": True}
        streamed = await gateway.client.post(f"/models/{AGENT}/invocations", json=ask)
        assert streamed.headers["content-type"].startswith("text/event-stream")
        assert streamed.text.count("response.output_text.delta") == 6 and streamed.text.endswith("data: [DONE]\n\n")
        chat = {"model": CHAT, "messages": [{"role": "user", "content": "hello there"}], "stream": True}
        chunks = await gateway.client.post("/v1/chat/completions", json=chat)
        assert chunks.text.count("chat.completion.chunk") == 3 and chunks.text.endswith("data: [DONE]\n\n")
        assert any(AGENT in line and '"stream": true' in line for line in printed)
        if torch_available():
            assert demo.models[TORCH] == {"champion": 1}
            response = await gateway.client.post(f"/models/{TORCH}/predict", json={"inputs": [[0.1, 0.2, 0.3, 0.4]]})
            assert response.status_code == 200
            assert len(response.json()["predictions"][0]) == 3


ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.anyio
async def test_the_tours_promotion_shows_at_once_in_the_answer(tmp_path: Path, make_settings) -> None:  # type: ignore[no-untyped-def]
    """The README's tour, step 1 and 5, as `make demo` serves it: its row gets another answer
    from v1 than from v2, and after the promotion in MLflow, /admin/sync (with the token the
    Makefile sets) answers once champion serves v2, so the very next request shows it."""
    readme, makefile = (ROOT / "README.md").read_text(), (ROOT / "Makefile").read_text()
    body = json.loads(re.search(r"^ROW='(.+)'$", readme, re.MULTILINE).group(1))  # type: ignore[union-attr]
    token = re.search(r"/admin/sync\?model=iris' -H 'Authorization: Bearer (\S+)'", readme).group(1)  # type: ignore[union-attr]
    assert f"ADMIN_TOKEN ?= {token}" in makefile and "GATEWAY_ADMIN_TOKEN=$(ADMIN_TOKEN)" in makefile
    assert "GATEWAY_DEFAULT_MODEL=iris" in makefile  # the /docs examples of POST /invocations answer
    assert body["dataframe_split"]["data"] == [list(DISAGREEING_ROW)]
    demo = build_demo_registry(tmp_path / "demo")
    settings = make_settings(warm_aliases=["champion"], admin_token=token, default_model=IRIS)
    async with running_gateway(settings, demo.tracking_uri) as gateway:
        client = gateway.client
        champion = await client.post(f"/models/{IRIS}/predict", json=body)
        challenger = await client.post(f"/models/{IRIS}/versions/challenger/predict", json=body)
        assert (champion.json(), challenger.json()) == ({"predictions": [2]}, {"predictions": [1]})  # as the tour says
        assert (await client.post("/invocations", json=body)).json() == {"predictions": [2]}
        with using_registry(demo.tracking_uri) as mlflow_client:
            mlflow_client.set_registered_model_alias(IRIS, "champion", "2")
        synced = await client.post("/admin/sync", params={"model": IRIS}, headers={"Authorization": f"Bearer {token}"})
        assert synced.status_code == 200, synced.text
        promoted = await client.post(f"/models/{IRIS}/predict", json=body)
        assert (promoted.headers["x-model-version"], promoted.json()) == ("2", {"predictions": [1]})
        events = (await client.get("/events", params={"model": IRIS, "limit": 4})).json()["events"]
        assert {"alias_set", "warmed", "swapped"} <= {e["kind"] for e in events}, events


def test_a_new_start_puts_the_aliases_back_where_the_tour_begins(tmp_path: Path) -> None:
    """Issue 49: `make demo` run again kept the aliases the tour had moved (champion -> 2), so
    the tour's step 1 answered [1], not the README's [2]."""
    build_demo_registry(tmp_path / "demo")
    with using_registry(f"sqlite:///{tmp_path / 'demo' / 'mlflow.db'}") as client:
        client.set_registered_model_alias(IRIS, "champion", "2")  # the tour's step 5
        client.set_registered_model_alias(IRIS, "mine", "1")
    again = build_demo_registry(tmp_path / "demo")
    assert again.models[IRIS] == {"champion": 1, "challenger": 2}
    with using_registry(again.tracking_uri) as client:
        assert {a: int(v) for a, v in client.get_registered_model(IRIS).aliases.items()} == again.models[IRIS]
    assert any("iris: aliases reset" in note and "champion was 2" in note for note in again.notes), again.notes
