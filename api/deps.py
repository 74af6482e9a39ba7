"""Request dependencies: settings, a database session, and the caller's API key (the owner)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, TypeVar

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from api.problems import ProblemError
from kdservice.security import AuthError, authenticate
from kdservice.settings import Settings
from kdservice.tables import ID_PATTERN, ApiKey

T = TypeVar("T")


def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as session:
        yield session


def _unauthorized(detail: str) -> ProblemError:
    return ProblemError(401, detail, field="Authorization", kind="unauthorized",
                        headers={"WWW-Authenticate": 'Bearer realm="kd"'})


_bearer = HTTPBearer(auto_error=False, description="an API key from `kd admin create-key NAME`")


def get_owner(
    request: Request, session: Annotated[Session, Depends(get_session)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> ApiKey:
    """The API key row of `Authorization: Bearer <key>`; 401 problem when missing, unknown, revoked or
    expired (looked up on every request: a revocation takes effect at once)."""
    try:
        return authenticate(session, request.headers.get("authorization"))
    except AuthError as exc:
        raise _unauthorized(str(exc)) from exc


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
OwnerDep = Annotated[ApiKey, Depends(get_owner)]


def owned(session: Session, table: type[T], row_id: str | None, owner: ApiKey) -> T | None:
    """The row if it exists and belongs to owner, else None: others' objects are never revealed."""
    # Ids are 32 hex characters: anything else (a NUL, which PostgreSQL refuses, or megabytes) is no row.
    row = session.get(table, row_id) if row_id and ID_PATTERN.fullmatch(row_id) else None
    return row if row is not None and row.owner_id == owner.id else None


def owned_or_404(session: Session, table: type[T], row_id: str, owner: ApiKey, noun: str) -> T:
    """owned(), or a 404 problem naming the `<noun>_id` field: others' objects look like missing ones."""
    row = owned(session, table, row_id, owner)
    if row is None:
        raise ProblemError(404, f"{noun} {row_id} not found", field=f"{noun}_id", kind="not-found")
    return row
