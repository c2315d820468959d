"""The OpenAPI pages, ``/docs`` (Swagger UI) and ``/redoc``, with nothing fetched from outside.

FastAPI's own pages load Swagger UI and ReDoc from a CDN, which a gateway in a private
network or an air-gapped cluster cannot reach: the page stays blank. Here their scripts,
styles and icon come from the ``fastapi-offline`` package, installed with the gateway, and
the gateway serves them itself under ``/docs/assets``.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.requests import Request

from gateway.admission.access import Access, requires

ASSETS = "/docs/assets"
# The package's directory of Swagger UI and ReDoc builds (tests/gateway/test_api_docs.py
# checks that each file named here is there and served).
_PACKAGE = ("fastapi_offline", "static")
SWAGGER_JS = "swagger-ui-bundle.js"
SWAGGER_CSS = "swagger-ui.css"
REDOC_JS = "redoc.standalone.js"
FAVICON = "favicon.png"


def install(app: FastAPI, *, docs_url: str = "/docs", redoc_url: str = "/redoc") -> None:
    """Serve the two pages and their assets; build ``app`` with ``docs_url=None, redoc_url=None``
    so that FastAPI's CDN pages are not there too."""
    app.mount(ASSETS, requires(Access.PUBLIC)(StaticFiles(packages=[_PACKAGE])), name="docs-assets")

    def asset(request: Request, name: str) -> str:
        return f"{request.scope.get('root_path', '')}{ASSETS}/{name}"

    def openapi_url(request: Request) -> str:
        return f"{request.scope.get('root_path', '')}{app.openapi_url}"

    @requires(Access.PUBLIC)
    async def swagger_ui(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url(request),
            title=f"{app.title} - Swagger UI",
            swagger_js_url=asset(request, SWAGGER_JS),
            swagger_css_url=asset(request, SWAGGER_CSS),
            swagger_favicon_url=asset(request, FAVICON),
            oauth2_redirect_url=None,
            swagger_ui_parameters=app.swagger_ui_parameters,
        )

    @requires(Access.PUBLIC)
    async def redoc(request: Request) -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url(request),
            title=f"{app.title} - ReDoc",
            redoc_js_url=asset(request, REDOC_JS),
            redoc_favicon_url=asset(request, FAVICON),
            with_google_fonts=False,
        )

    app.add_route(docs_url, swagger_ui, include_in_schema=False)
    app.add_route(redoc_url, redoc, include_in_schema=False)
