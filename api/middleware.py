"""The gate every request passes before a route reads its body (pure ASGI, so nothing is parsed yet).

- OPTIONS on any route: 204 with `Allow` listing its methods (no key needed; no CORS headers).
- Body size: KD_REQUEST_MAX_BYTES on every route, KD_UPLOAD_MAX_BYTES on the upload routes; by the
  Content-Length header at once, and by counting for chunked bodies (413 problem).
- Upload routes (POST /v1/datasets, /v1/models) also: the API key is checked (kdservice.security)
  before a single byte of the body is read, so an unauthenticated upload costs no disk and no time
  (the pages' upload paths bring their own check, `upload_checks`: the sign-in cookie and CSRF token);
  then the body's bytes are reserved in the process's upload disk budget (kdservice.budget) as they
  arrive, and the reservation is handed to the route (request.state.upload_reservation), which grows it
  by what the archive expands to and releases it when the request ends.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import anyio
from fastapi import HTTPException, Request
from sqlalchemy.orm import Session, sessionmaker
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import problem_response
from api.uploads import budget_answer
from kdservice.budget import BudgetExceeded, DiskBudget
from kdservice.security import AuthError, authenticate
from kdservice.settings import Settings

UPLOAD_PATHS = ("/v1/datasets", "/v1/models")
MULTIPART_SLACK = 64 * 1024  # form boundaries and fields around the file
# An upload's body is on disk twice while it is handled: the parsed form's spooled file and its copy in tmp/.
UPLOAD_DISK_COPIES = 2
# An upload path's own credential check, from the request's headers only (no body): None lets the request
# in, a Response refuses it.
UploadCheck = Callable[[Request, Session], Response | None]
# How such a path answers the gate's own refusals (too large, no disk budget): the pages answer a page.
UploadRefusal = Callable[[Request, HTTPException], Response]


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int, variable: str):
        super().__init__(413, f"request body larger than the limit of {limit} bytes ({variable})")
        self.errors = [{"field": "file" if variable == "KD_UPLOAD_MAX_BYTES" else "body", "message": self.detail}]


def budget_problem(exc: BudgetExceeded) -> HTTPException:
    status, _, headers = budget_answer(exc)
    error = HTTPException(status, str(exc), headers=headers)
    error.errors = [{"field": "file", "message": str(exc)}]  # type: ignore[attr-defined]
    return error


def allowed_methods(routes: Sequence[BaseRoute], path: str) -> list[str]:
    """The methods of the routes whose path pattern matches path (empty: no such route)."""
    methods: set[str] = set()
    for route in routes:
        pattern, route_methods = getattr(route, "path_regex", None), getattr(route, "methods", None)
        if pattern is not None and route_methods and pattern.match(path):
            methods |= set(route_methods)
    return sorted(methods | {"OPTIONS"}) if methods else []


class RequestGate:
    def __init__(self, app: ASGIApp, settings: Settings, sessions: sessionmaker[Session], budget: DiskBudget,
                 routes: Sequence[BaseRoute], upload_checks: Mapping[str, UploadCheck] | None = None,
                 upload_refusal: UploadRefusal | None = None):
        self.app, self.settings, self.sessions, self.budget = app, settings, sessions, budget
        self.routes = routes  # every route with its path pattern and methods, for OPTIONS
        self.upload_checks = dict(upload_checks or {})  # more upload paths, each with its own check
        self.upload_refusal = upload_refusal  # their answer to a refusal below (default: a problem)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        if scope["method"] == "OPTIONS" and (methods := allowed_methods(self.routes, scope["path"])):
            await Response(status_code=204, headers={"Allow": ", ".join(methods)})(scope, receive, send)
            return  # (an unknown path goes on to the app's 404)
        check = self.upload_checks.get(scope["path"]) if scope["method"] == "POST" else None
        upload = check is not None or (scope["method"] == "POST" and scope["path"] in UPLOAD_PATHS)
        if check is not None:
            refusal = await anyio.to_thread.run_sync(self._check, check, request)
            if refusal is not None:
                refusal.headers["Connection"] = "close"  # the unread body ends the connection
                await refusal(scope, receive, send)
                return
        elif upload:
            try:
                await anyio.to_thread.run_sync(self._authenticate, request.headers.get("authorization"))
            except AuthError as exc:
                unauthorized = HTTPException(401, str(exc), headers={"WWW-Authenticate": 'Bearer realm="kd"'})
                unauthorized.errors = [{"field": "Authorization", "message": str(exc)}]  # type: ignore[attr-defined]
                await self._refuse(scope, receive, send, unauthorized, "unauthorized")
                return
        shown, variable = ((self.settings.upload_max_bytes, "KD_UPLOAD_MAX_BYTES") if upload
                           else (self.settings.request_max_bytes, "KD_REQUEST_MAX_BYTES"))
        limit = shown + MULTIPART_SLACK if upload else shown
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await self._refuse(scope, receive, send, BodyTooLarge(shown, variable))
            return
        reservation = self.budget.reservation() if upload else None
        if reservation is not None:
            try:
                if declared.isdigit():
                    reservation.grow(UPLOAD_DISK_COPIES * int(declared))
            except BudgetExceeded as exc:
                await self._refuse(scope, receive, send, budget_problem(exc))
                return
            scope.setdefault("state", {})["upload_reservation"] = reservation
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                chunk = len(message.get("body", b""))
                received += chunk
                if received > limit:
                    raise BodyTooLarge(shown, variable)
                if reservation is not None and not declared.isdigit():
                    try:
                        reservation.grow(UPLOAD_DISK_COPIES * chunk)
                    except BudgetExceeded as exc:
                        raise budget_problem(exc) from exc
            return message

        try:
            await self.app(scope, limited_receive, send)
        finally:
            if reservation is not None:
                reservation.release()

    def _check(self, check: UploadCheck, request: Request) -> Response | None:
        with self.sessions() as session:
            return check(request, session)

    def _authenticate(self, authorization: str | None) -> None:
        with self.sessions() as session:
            authenticate(session, authorization)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, error: HTTPException,
                      kind: str | None = None) -> None:
        headers = {**(error.headers or {}), "Connection": "close"}  # the unread body ends the connection
        if self.upload_refusal is not None and scope["path"] in self.upload_checks:
            response = self.upload_refusal(Request(scope), error)
            response.headers.update(headers)
            await response(scope, receive, send)
            return
        response = problem_response(Request(scope), error.status_code, str(error.detail),
                                    errors=getattr(error, "errors", None), headers=headers,
                                    kind=kind or ("payload-too-large" if error.status_code == 413 else None))
        await response(scope, receive, send)
