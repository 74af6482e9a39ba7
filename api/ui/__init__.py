"""The pages under /ui: server-rendered (Jinja2), signed in with an API key kept in a cookie.

`install_ui(app)` adds the routes and the static files; api/app.py gives the request gate
(api/middleware.py) UI_UPLOAD_CHECKS, so a page's upload is authenticated (cookie and CSRF token) before
its body is read, and counts against the same size limit and disk budget as /v1 uploads (a refusal there
is a page too: refused_upload). The pages call
the API's own route logic (api/ui/service.py), so they answer what the /v1 routes answer, as HTML.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.routing import BaseRoute

from api.offline_docs import ImmutableStaticFiles
from api.ui import compare_page, job_pages, sign_in, upload_pages
from api.ui.render import STATIC_DIR, STATIC_URL, refused_upload
from api.ui.upload_pages import UI_UPLOAD_PATHS, check_upload_headers

UI_UPLOAD_CHECKS = dict.fromkeys(UI_UPLOAD_PATHS, check_upload_headers)
__all__ = ["UI_UPLOAD_CHECKS", "install_ui", "refused_upload"]


def install_ui(app: FastAPI) -> list[BaseRoute]:
    """Add the pages and their static files to app; returns the pages' routes (for the gate's OPTIONS)."""
    app.mount(STATIC_URL, ImmutableStaticFiles(directory=STATIC_DIR), name="ui-static")
    routers = (sign_in.router, job_pages.router, compare_page.router, upload_pages.router)
    for router in routers:
        app.include_router(router)
    return [route for router in routers for route in router.routes]
