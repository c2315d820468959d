"""/docs and /redoc work with no network: every script, style and icon comes from the gateway."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
import uvicorn

from gateway.app import create_app
from gateway.http import api_docs
from gateway.settings import GatewaySettings
from tests.support.browser import dump_dom
from tests.support.servers import LOOPBACK, free_port
from tests.support.waiting import wait_until

CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


class _References(HTMLParser):
    """Every URL the page makes the browser fetch: scripts, stylesheets, icons, images."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag in ("script", "img") and found.get("src"):
            self.urls.append(str(found["src"]))
        if tag == "link" and found.get("href"):
            self.urls.append(str(found["href"]))


def references(html: str) -> list[str]:
    parser = _References()
    parser.feed(html)
    return parser.urls


def _settings(tmp_path: Path) -> GatewaySettings:
    # The pages and /openapi.json need no registry: the app is served without its lifespan.
    return GatewaySettings(database_url=f"sqlite:///{tmp_path / 'state.db'}", artifact_cache_dir=tmp_path / "cache")


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(_settings(tmp_path))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client:
        yield client


@pytest.mark.anyio
@pytest.mark.parametrize(("page", "script"), [("/docs", api_docs.SWAGGER_JS), ("/redoc", api_docs.REDOC_JS)])
async def test_the_docs_pages_load_everything_from_the_gateway(
    client: httpx.AsyncClient, page: str, script: str
) -> None:
    response = await client.get(page)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    html = response.text
    assert "http://" not in html and "https://" not in html, "the page names another host"
    urls = references(html)
    assert f"{api_docs.ASSETS}/{script}" in urls
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), url
        asset = await client.get(url)
        assert asset.status_code == 200, url
        expected = CONTENT_TYPES[Path(url).suffix]
        assert asset.headers["content-type"].split(";")[0] == expected, (url, asset.headers["content-type"])
        assert len(asset.content) > 1000, url


@pytest.mark.anyio
async def test_the_pages_follow_a_root_path(tmp_path: Path) -> None:
    app = create_app(_settings(tmp_path))
    transport = httpx.ASGITransport(app=app, root_path="/gw")
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        html = (await client.get("/docs")).text
    assert "'/gw/openapi.json'" in html
    assert all(url.startswith(f"/gw{api_docs.ASSETS}/") for url in references(html))


@pytest.mark.anyio
async def test_fastapis_cdn_pages_are_not_served(client: httpx.AsyncClient) -> None:
    assert "cdn" not in (await client.get("/docs")).text
    assert (await client.get("/docs/oauth2-redirect")).status_code == 404
    assert (await client.get(f"{api_docs.ASSETS}/../app.py")).status_code == 404


# --- in a real browser, with every other host unreachable ----------------------------------------


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    """The app under real uvicorn on a free port (a browser needs a socket)."""
    port = free_port()
    config = uvicorn.Config(create_app(_settings(tmp_path)), port=port, lifespan="off", log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(f"{base}/openapi.json"), timeout=30, what="uvicorn serving the docs")
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _answers(url: str) -> bool:
    try:
        return LOOPBACK.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("page", "rendered"),
    [("/docs", "/models/{name}/versions/{version}/predict"), ("/redoc", "Predict with a chosen version")],
)
def test_the_docs_render_offline_in_chromium(served: str, page: str, rendered: str, tmp_path: Path) -> None:
    # wait for the scripts to fetch /openapi.json and draw
    dom = dump_dom(f"{served}{page}", tmp_path / "profile", wait_ms=10000)
    assert "registry-gateway" in dom, dom[-2000:]
    assert rendered in dom, f"{page} did not draw the operations"


@pytest.mark.anyio
async def test_route_summaries_are_plain_text(client: httpx.AsyncClient) -> None:
    """Swagger UI and ReDoc show an operation's summary as it is: a backtick there shows as a
    backtick (descriptions are Markdown, summaries are not)."""
    spec = (await client.get("/openapi.json")).json()
    summaries = {
        f"{method.upper()} {path}": operation.get("summary", "")
        for path, operations in spec["paths"].items()
        for method, operation in operations.items()
    }
    assert len(summaries) > 20
    assert not {where: s for where, s in summaries.items() if "`" in s}


@pytest.mark.anyio
async def test_the_user_guide_names_every_group_of_the_docs_page(client: httpx.AsyncClient) -> None:
    """docs/user-guide.md says which groups `docs.png` shows: the page's tags, every one."""
    spec = (await client.get("/openapi.json")).json()
    tags = {tag for operations in spec["paths"].values() for op in operations.values() for tag in op.get("tags", [])}
    guide = " ".join((Path(__file__).parents[2] / "docs" / "user-guide.md").read_text().split())
    sentence = guide.split("`docs.png` shows the operations grouped under ", 1)[1].split(";", 1)[0]
    named = {name.strip() for name in sentence.replace(" and ", ", ").split(",")}
    assert named == tags, f"the guide names {sorted(named)}, the page groups {sorted(tags)}"


@pytest.mark.anyio
async def test_every_operation_that_takes_a_body_shows_an_example_of_it(client: httpx.AsyncClient) -> None:
    """/docs fills its "Try it out" box from these: MLflow's predict routes, OIP's infer and
    OpenAI's routes alike (the examples run as they are: tests/gateway/test_models_api.py for
    the iris ones, tests/gateway/protocols/test_openai.py for OpenAI's). Its path parameters are
    shown too: Swagger UI cannot send a request whose path it cannot fill."""
    spec = (await client.get("/openapi.json")).json()
    taking = {"/v1/chat/completions", "/v1/responses"} | {
        path for path in spec["paths"] if path.endswith(("/infer", "/predict", "/invocations"))
    }
    assert len(taking) >= 8
    bare = {}
    for path, operations in spec["paths"].items():
        operation = operations.get("post", {})
        body = operation.get("requestBody", {}).get("content", {}).get("application/json")
        if body is None and path not in taking:
            continue  # takes no JSON body (/admin/sync, the webhook's signed bytes)
        named = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
        if body is None or not body.get("examples") or named != {p[1:-1] for p in path.split("/") if p[:1] == "{"}:
            bare[path] = sorted(named)
    assert bare == {}
