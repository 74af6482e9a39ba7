"""Data sets and models: lists and upload forms (multipart, through the API's upload functions).

An upload POST carries its CSRF token in the query string: the request gate (api/middleware.py) runs
check_upload_headers on the cookie and that token before any of the body is read; the route checks both
again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from api.deps import SessionDep, SettingsDep
from api.problems import ProblemError
from api.ui import service
from api.ui.auth import (
    CSRF_FIELD,
    PREFIX,
    PageOwner,
    check_csrf,
    csrf_token,
    owner_from_cookie,
    sign_in_url,
    tokens_match,
)
from api.ui.render import PageRoute, csrf_refused, page, see_other
from kdcore.spec import MODEL_ARCHS
from kdservice.settings import Settings
from kdservice.tables import ApiKey

router = APIRouter(prefix=PREFIX, route_class=PageRoute, include_in_schema=False)
DATASETS_PATH = f"{PREFIX}/datasets"
MODELS_PATH = f"{PREFIX}/models"
UI_UPLOAD_PATHS = (DATASETS_PATH, MODELS_PATH)
CreatedQuery = Annotated[str | None, Query(max_length=64)]


def check_upload_headers(request: Request, session: Session) -> Response | None:
    """The request gate's check of UI_UPLOAD_PATHS: signed in and the right CSRF token, from headers only."""
    if owner_from_cookie(request, session) is None:
        return see_other(sign_in_url(request.url.path))
    if not tokens_match(request.query_params.get(CSRF_FIELD), csrf_token(request.state.ui_key)):
        return csrf_refused(request)
    return None


def _limit(request: Request) -> dict[str, int]:
    # The form's file field carries the limit: the page's script refuses a larger file before sending it.
    return {"max_bytes": request.app.state.settings.upload_max_bytes}


def _datasets_page(request: Request, session: Session, owner: ApiKey, created: str | None = None,
                   errors: list[dict[str, str]] | None = None, values: dict[str, Any] | None = None,
                   status: int = 200) -> Response:
    return page(request, "datasets.html", {
        "nav": "datasets", "items": service.dataset_list(session, owner).items, "created": created,
        "errors": errors or [], "values": values or {}, **_limit(request)}, status)


def _models_page(request: Request, session: Session, owner: ApiKey, created: str | None = None,
                 errors: list[dict[str, str]] | None = None, values: dict[str, Any] | None = None,
                 status: int = 200) -> Response:
    return page(request, "models.html", {
        "nav": "models", "items": service.model_list(session, owner).items, "created": created,
        "errors": errors or [], "values": values or {"in_channels": "3"}, "archs": MODEL_ARCHS, **_limit(request)},
        status)


@router.get("/datasets")
def datasets_page(request: Request, owner: PageOwner, session: SessionDep, created: CreatedQuery = None) -> Response:
    return _datasets_page(request, session, owner, created)


@router.get("/models")
def models_page(request: Request, owner: PageOwner, session: SessionDep, created: CreatedQuery = None) -> Response:
    return _models_page(request, session, owner, created)


async def _upload(request: Request, owner: ApiKey, session: Session, settings: Settings,
                  store: Callable[..., Any], again: Callable[..., Response], done: str) -> Response:
    check_csrf(request, request.query_params.get(CSRF_FIELD))
    async with request.form(max_files=1, max_fields=10) as form:
        values = {k: v for k, v in form.items() if isinstance(v, str)}
        try:
            info = await anyio.to_thread.run_sync(store, request, session, owner, settings, form)
        except ProblemError as exc:
            if not exc.errors:
                raise
            return again(request, session, owner, errors=exc.errors, values=values, status=exc.status)
    return see_other(f"{done}?created={info.id}")


@router.post("/datasets")
async def upload_dataset(request: Request, owner: PageOwner, session: SessionDep, settings: SettingsDep) -> Response:
    return await _upload(request, owner, session, settings, service.upload_dataset, _datasets_page, DATASETS_PATH)


@router.post("/models")
async def upload_model(request: Request, owner: PageOwner, session: SessionDep, settings: SettingsDep) -> Response:
    return await _upload(request, owner, session, settings, service.upload_model, _models_page, MODELS_PATH)
