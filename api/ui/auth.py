"""Who is signed in to the pages, and the CSRF token of their forms. No server-side session state.

- The API key itself is the session: sign-in stores it in an HttpOnly, SameSite=Strict cookie scoped to
  /ui (Secure over https), and every request looks it up again (`working_key`, as `Authorization:
  Bearer` does), so a key revoked or expired signs its pages out at once.
- CSRF token = HMAC-SHA256 keyed with that API key over a fixed label: only a holder of the key can
  compute it, it needs no storage, and it is checked (constant-time) on every POST. urlencoded forms
  send it as the `csrf` field; multipart uploads send it in the query string, so it is checked from the
  headers before any of the body is read (the request gate, api/middleware.py).
- The sign-in form itself (no key yet) carries a random double-submit token, also kept in a
  SameSite=Strict cookie, so another site cannot sign a browser in to the attacker's account.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from api.deps import SessionDep
from kdservice.security import AuthError, working_key
from kdservice.tables import ApiKey

KEY_COOKIE = "kd_ui_key"
SIGNIN_COOKIE = "kd_ui_signin"
PREFIX = "/ui"
SIGN_IN_PATH = f"{PREFIX}/sign-in"
CSRF_FIELD = "csrf"
_CSRF_LABEL = b"kd-ui csrf v1"


class SignInRequired(Exception):
    """No valid key cookie: the page route answers 303 to the sign-in page (see routing.PageRoute)."""

    def __init__(self, next_path: str):
        super().__init__(next_path)
        self.next_path = next_path


class CsrfRefused(Exception):
    """A POST without the right CSRF token: 403."""


def csrf_token(api_key: str) -> str:
    return hmac.new(api_key.encode(), _CSRF_LABEL, hashlib.sha256).hexdigest()


def tokens_match(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def is_https(request: Request) -> bool:
    return request.url.scheme == "https"


def set_key_cookie(response: Response, request: Request, api_key: str) -> None:
    # A browser-session cookie (no Max-Age): it ends with the browser; /ui only, never sent to /v1.
    response.set_cookie(KEY_COOKIE, api_key, path=PREFIX, httponly=True, samesite="strict",
                        secure=is_https(request))


def clear_key_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(KEY_COOKIE, path=PREFIX, httponly=True, samesite="strict", secure=is_https(request))


def signin_token(request: Request) -> tuple[str, bool]:
    """(the sign-in form's double-submit token, whether it is new and must be set as a cookie)."""
    token = request.cookies.get(SIGNIN_COOKIE)
    if token and len(token) == 43:
        return token, False
    return secrets.token_urlsafe(32), True


def set_signin_cookie(response: Response, request: Request, token: str) -> None:
    response.set_cookie(SIGNIN_COOKIE, token, path=SIGN_IN_PATH, httponly=True, samesite="strict",
                        secure=is_https(request), max_age=3600)


def safe_next(path: str | None) -> str:
    """Where to go after signing in: a page under /ui, never another host (no open redirect)."""
    if path and path.startswith(PREFIX + "/") and not path.startswith("//") and "\\" not in path \
            and not path.startswith(SIGN_IN_PATH):
        return path
    return f"{PREFIX}/jobs"


def sign_in_url(next_path: str) -> str:
    return f"{SIGN_IN_PATH}?next={quote(safe_next(next_path), safe='/')}"


def owner_from_cookie(request: Request, session: Session) -> ApiKey | None:
    """The working key row named by the cookie (and request.state.ui_key set to the key), or None."""
    key = request.cookies.get(KEY_COOKIE, "").strip()
    try:
        row = working_key(session, key)
    except AuthError:
        return None
    request.state.ui_key = key
    request.state.ui_owner = row.name
    return row


def _here(request: Request) -> str:
    query = request.url.query
    return request.url.path + (f"?{query}" if query and request.method == "GET" else "")


def page_owner(request: Request, session: SessionDep) -> ApiKey:
    """Dependency of every signed-in page: the cookie's key row, or SignInRequired (303 to sign-in)."""
    row = owner_from_cookie(request, session)
    if row is None:
        raise SignInRequired(_here(request) if request.method == "GET" else f"{PREFIX}/jobs")
    return row


def check_csrf(request: Request, given: str | None) -> None:
    """Raise CsrfRefused unless `given` is the token of the signed-in key (page_owner ran first)."""
    key = getattr(request.state, "ui_key", None)
    if key is None or not tokens_match(given, csrf_token(key)):
        raise CsrfRefused()


async def posted_by_owner(request: Request, owner: Annotated[ApiKey, Depends(page_owner)]) -> ApiKey:
    """Dependency of every urlencoded POST: signed in, and the form's `csrf` field is right."""
    form = await request.form()
    token = form.get(CSRF_FIELD)
    check_csrf(request, token if isinstance(token, str) else None)
    return owner


PageOwner = Annotated[ApiKey, Depends(page_owner)]
PostOwner = Annotated[ApiKey, Depends(posted_by_owner)]
