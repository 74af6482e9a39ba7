"""Templates, the pages' security headers, and PageRoute: errors of a page answer as HTML pages.

Jinja2 with autoescape on for every template. Every page gets a Content-Security-Policy that allows
only this server's own scripts, styles, images, frames and connections (no CDN can be used by
accident), `Cache-Control: no-store` (pages carry the CSRF token and private data), and may not be
framed by another site.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Coroutine
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.problems import ProblemError, validation_errors
from api.ui import views
from api.ui.auth import PREFIX, CsrfRefused, SignInRequired, csrf_token, sign_in_url
from kdservice.summaries import format_spread

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
STATIC_URL = f"{PREFIX}/static"
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
            "connect-src 'self'; frame-src 'self'; form-action 'self'; frame-ancestors 'none'; "
            "base-uri 'none'; object-src 'none'")
PAGE_HEADERS = {"Content-Security-Policy": PAGE_CSP, "Cache-Control": "no-store",
                "Referrer-Policy": "same-origin", "X-Content-Type-Options": "nosniff"}


@cache
def static_url(name: str) -> str:
    """/ui/static/<name>?v=<content hash>: a new file gets a new URL, so browsers may cache them."""
    digest = hashlib.sha256((STATIC_DIR / name).read_bytes()).hexdigest()[:12]
    return f"{STATIC_URL}/{name}?v={digest}"


@cache
def favicon() -> str:
    """The icon inline as a data: URL: no request, so none to lose when a page is left while it loads."""
    return "data:image/svg+xml," + quote((STATIC_DIR / "favicon.svg").read_text().strip())


def _page_context(request: Request) -> dict[str, Any]:
    key = getattr(request.state, "ui_key", None)
    return {"csrf": csrf_token(key) if key else None, "owner_name": getattr(request.state, "ui_owner", None),
            "static_url": static_url, "favicon": favicon, "prefix": PREFIX}


_env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                          undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
_env.filters.update(spread=format_spread, eta=views.eta_text, when=views.when, size=views.size_text)
templates = Jinja2Templates(env=_env, context_processors=[_page_context])


def page(request: Request, template: str, context: dict[str, Any] | None = None, status: int = 200,
         headers: dict[str, str] | None = None) -> HTMLResponse:
    return templates.TemplateResponse(request, template, context or {}, status_code=status,
                                      headers={**PAGE_HEADERS, **(headers or {})})


def error_page(request: Request, status: int, detail: str, errors: list[dict[str, str]] | None = None,
               headers: dict[str, str] | None = None) -> HTMLResponse:
    return page(request, "error.html", {"status": status, "detail": detail, "errors": errors or []}, status,
                headers)


def see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store"})


def csrf_refused(request: Request) -> HTMLResponse:
    return error_page(request, 403, "This form's security token is missing or out of date: reload the page "
                      "and submit it again.")


def refused_upload(request: Request, exc: StarletteHTTPException) -> HTMLResponse:
    """The page for an upload the request gate refused before reading it (too large, no disk budget)."""
    return error_page(request, exc.status_code, str(exc.detail), [{"field": "file", "message": str(exc.detail)}])


def answer_error(request: Request, exc: Exception) -> Response:
    """The HTML answer to an exception a page raised (the /v1 routes answer problem+json instead)."""
    if isinstance(exc, SignInRequired):
        return see_other(sign_in_url(exc.next_path))
    if isinstance(exc, CsrfRefused):
        return csrf_refused(request)
    if isinstance(exc, ProblemError):
        headers = {k: v for k, v in (exc.headers or {}).items() if k.lower() != "www-authenticate"}
        return error_page(request, exc.status, exc.detail, exc.errors, headers)
    if isinstance(exc, RequestValidationError):
        errors = validation_errors(list(exc.errors()))
        return error_page(request, 422, "The request's parameters are not valid.", errors)
    assert isinstance(exc, StarletteHTTPException)
    return error_page(request, exc.status_code, str(exc.detail))


class PageRoute(APIRoute):
    """An APIRoute whose errors (sign-in needed, CSRF, problems, bad parameters) are pages, not JSON."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except (SignInRequired, CsrfRefused, ProblemError, RequestValidationError,
                    StarletteHTTPException) as exc:
                return answer_error(request, exc)

        return page_handler
