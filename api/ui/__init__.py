"""The pages under /ui: server-rendered (Jinja2), signed in with an API key kept in a cookie.

`install_ui(app)` adds the routes, the static files and the check that authenticates an upload before
its body is read. The pages call the API's own route logic (api/ui/service.py), so they answer what
the /v1 routes answer, as HTML.
"""

from __future__ import annotations

from fastapi import FastAPI

from api.offline_docs import ImmutableStaticFiles
from api.preauth import AuthenticateBeforeBody
from api.ui import compare_page, job_pages, sign_in, upload_pages
from api.ui.render import STATIC_DIR, STATIC_URL
from api.ui.upload_pages import UI_UPLOAD_PATHS, check_upload_headers

__all__ = ["UI_UPLOAD_PATHS", "install_ui"]


def install_ui(app: FastAPI) -> None:
    app.mount(STATIC_URL, ImmutableStaticFiles(directory=STATIC_DIR), name="ui-static")
    for module in (sign_in, job_pages, compare_page, upload_pages):
        app.include_router(module.router)
    app.add_middleware(AuthenticateBeforeBody, checks=dict.fromkeys(UI_UPLOAD_PATHS, check_upload_headers))
