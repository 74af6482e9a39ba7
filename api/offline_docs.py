"""/docs (Swagger UI) and /redoc served from a packaged copy of their assets: they work with no internet.

FastAPI's own pages load Swagger UI, ReDoc and a favicon from public CDNs, so behind a closed network
they stay blank. The assets come from the pinned PyPI package `fastapi-offline` (see pyproject.toml;
1.7.7 ships Swagger UI 5.32.6, which renders OpenAPI 3.1, and ReDoc 2.5.3). Only its `static/` folder
is used; its FastAPI subclass is not. Build the app with `docs_url=None, redoc_url=None`, then call
`install_offline_docs(app)`. To update the assets, change that pin (the asset URLs follow it) and run
tests/test_offline_docs.py and tests/browser/test_docs_pages.py, which render both pages offline.
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse, Response
from starlette.types import Scope

DOCS_URL = "/docs"
REDOC_URL = "/redoc"
ASSETS_DIR = Path(fastapi_offline.__file__).with_name("static")
# The package version is in the path, so a browser may keep each file forever: an upgrade changes the URL.
ASSETS_URL = f"/docs-assets/fastapi-offline-{version('fastapi-offline')}"
CACHE_FOREVER = "public, max-age=31536000, immutable"
# Swagger UI would otherwise fetch a validity badge from validator.swagger.io for non-local hosts.
SWAGGER_UI_PARAMETERS = {"validatorUrl": None}
# ReDoc's sidebar always asks cdn.redoc.ly for its logo (no option turns it off); this policy keeps the
# browser from sending that request, and the image hides itself when it fails.
REDOC_CSP = "img-src 'self' data:"


class ImmutableStaticFiles(StaticFiles):
    """StaticFiles whose successful answers may be cached for a year (the URL carries the version)."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        if response.status_code == 200:
            response.headers["Cache-Control"] = CACHE_FOREVER
        return response


def install_offline_docs(app: FastAPI) -> None:
    """Add /docs, /redoc and the assets they load; the app must not have FastAPI's CDN pages."""
    if app.docs_url or app.redoc_url:
        raise ValueError("build the app with docs_url=None, redoc_url=None before install_offline_docs")
    if not app.openapi_url:
        raise ValueError("the docs pages need the app's OpenAPI schema (openapi_url)")
    app.mount(ASSETS_URL, ImmutableStaticFiles(directory=ASSETS_DIR), name="docs-assets")

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        assets = root + ASSETS_URL
        return get_swagger_ui_html(
            openapi_url=root + app.openapi_url, title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{assets}/swagger-ui-bundle.js", swagger_css_url=f"{assets}/swagger-ui.css",
            swagger_favicon_url=f"{assets}/favicon.png",
            swagger_ui_parameters={**SWAGGER_UI_PARAMETERS, **(app.swagger_ui_parameters or {})})

    @app.get(REDOC_URL, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        assets = root + ASSETS_URL
        page = get_redoc_html(
            openapi_url=root + app.openapi_url, title=f"{app.title} - ReDoc",
            redoc_js_url=f"{assets}/redoc.standalone.js", redoc_favicon_url=f"{assets}/favicon.png",
            with_google_fonts=False)
        page.headers["Content-Security-Policy"] = REDOC_CSP
        return page
