"""Authenticate an upload from its headers before any byte of its body is read.

Route dependencies run only after FastAPI has parsed (and spooled to disk) a multipart body, so an
anonymous client could make the server receive a gigabyte before learning it is not signed in. This
middleware runs a check per POST path first: the check sees the request's headers (no body: it gets no
`receive`) and a database session, and returns None to let the request in or the response that refuses
it (sent with `Connection: close`, so the unread body is dropped with the connection).

One middleware serves every such path: the pages register their cookie + CSRF check for /ui uploads
(api/ui/__init__.py); a bearer-key check for /v1 uploads plugs in the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import anyio
from fastapi import Request
from sqlalchemy.orm import Session
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

Check = Callable[[Request, Session], Response | None]


class AuthenticateBeforeBody:
    def __init__(self, app: ASGIApp, checks: Mapping[str, Check]):
        self.app = app
        self.checks = dict(checks)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        check = self.checks.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if check is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope)  # headers, cookies and query only: the body stays unread
        refusal = await anyio.to_thread.run_sync(self._run, check, request)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        refusal.headers["Connection"] = "close"
        await refusal(scope, receive, send)

    @staticmethod
    def _run(check: Check, request: Request) -> Response | None:
        with request.app.state.sessions() as session:
            return check(request, session)
