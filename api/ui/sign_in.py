"""/ui, /ui/sign-in and /ui/sign-out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from api.deps import SessionDep
from api.ui import auth
from api.ui.auth import PREFIX, PageOwner, PostOwner
from api.ui.render import PageRoute, csrf_refused, page, see_other
from kdservice.security import AuthError, working_key

router = APIRouter(prefix=PREFIX, route_class=PageRoute, include_in_schema=False)


@router.get("")
def home(owner: PageOwner) -> Response:
    return see_other(f"{PREFIX}/jobs")


def _sign_in_page(request: Request, next_path: str, error: str | None = None, status: int = 200) -> Response:
    token, new = auth.signin_token(request)
    response = page(request, "sign_in.html", {"signin_token": token, "next": auth.safe_next(next_path),
                                              "error": error}, status)
    if new:
        auth.set_signin_cookie(response, request, token)
    return response


@router.get("/sign-in")
def sign_in_form(request: Request, next: str | None = None) -> Response:  # noqa: A002 (the query name)
    return _sign_in_page(request, next or "")


@router.post("/sign-in")
def sign_in(request: Request, session: SessionDep, key: Annotated[str, Form(max_length=200)] = "",
            csrf: Annotated[str, Form(max_length=100)] = "", next: Annotated[str, Form(max_length=2000)] = "",
            ) -> Response:
    # The double-submit token: the form's copy must equal the cookie this site set (another site can do
    # neither), so a cross-site form cannot sign this browser in to someone else's account.
    cookie = request.cookies.get(auth.SIGNIN_COOKIE)
    if cookie is None or not auth.tokens_match(csrf, cookie):
        return csrf_refused(request)
    key = key.strip()
    if not key:
        return _sign_in_page(request, next, "Enter an API key.", 422)
    try:
        working_key(session, key)
    except AuthError as exc:  # unknown, revoked or expired: the same words as a 401 of /v1
        reason = str(exc)
        return _sign_in_page(request, next, f"{reason[:1].upper()}{reason[1:]}.", 422)
    response = see_other(auth.safe_next(next))
    auth.set_key_cookie(response, request, key)
    response.delete_cookie(auth.SIGNIN_COOKIE, path=auth.SIGN_IN_PATH, httponly=True, samesite="strict")
    return response


@router.post("/sign-out")
def sign_out(request: Request, owner: PostOwner) -> Response:
    response = see_other(auth.SIGN_IN_PATH)
    auth.clear_key_cookie(response, request)
    return response
