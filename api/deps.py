"""Request dependencies: settings, database access, and the caller's API key (the owner).

Database work never holds a connection while waiting for a thread, nor a thread while waiting for a
connection (the pairing that once stopped the API under ~40 concurrent requests):

- `Database.run(work)`: wait (asynchronously, first come first served, at most KD_DB_WAIT_SECONDS) for
  one of KD_DB_POOL_SIZE slots, then run `work(session)` in a thread of its own with a session opened
  and closed there. Slots equal the pool's connections, so a slot holder never waits for one. A
  request that waits too long gets 503 + Retry-After. The owner lookup and the hot job routes use it.
- `SessionDep` (the other routes): a session for the duration of the route function, closed before
  the response is sent (also for streams) in one of the database threads. Its connection is checked
  out when first used, from the pool's overflow, waiting at most KD_DB_WAIT_SECONDS (503 after).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Annotated, TypeVar

import anyio
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from api.problems import ProblemError, busy
from kdservice.db import make_sessionmaker
from kdservice.security import find_api_key
from kdservice.settings import Settings
from kdservice.tables import ApiKey

T = TypeVar("T")


class Database:
    """The API process's engine, its session factory, and the slots that bound concurrent database work."""

    def __init__(self, engine: Engine, slots: int, wait_seconds: float):
        self.engine = engine
        self.sessions = make_sessionmaker(engine)
        self.wait_seconds = wait_seconds
        self._slots = anyio.CapacityLimiter(slots)
        # As many threads as slots: a slot holder never waits for a thread either.
        self._threads = anyio.CapacityLimiter(slots)

    async def run(self, work: Callable[[Session], T]) -> T:
        """work(session) in a database thread, once a slot is free (503 busy after wait_seconds)."""
        token = object()
        with anyio.move_on_after(self.wait_seconds) as waited:
            await self._slots.acquire_on_behalf_of(token)
        if waited.cancelled_caught:
            raise busy("every database connection stayed busy")
        try:
            return await anyio.to_thread.run_sync(self._in_session, work, limiter=self._threads)
        finally:
            self._slots.release_on_behalf_of(token)

    def _in_session(self, work: Callable[[Session], T]) -> T:
        with self.sessions() as session:
            return work(session)

    async def close(self, session: Session) -> None:
        """Close a session; one that holds a connection is closed in a thread (a rollback is I/O)."""
        if session.in_transaction():
            await anyio.to_thread.run_sync(session.close, limiter=self._threads)
        else:
            session.close()


def get_database(request: Request) -> Database:
    return request.app.state.db


async def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


async def _session(request: Request) -> AsyncIterator[Session]:
    database = get_database(request)
    session = database.sessions()
    try:
        yield session
    finally:
        await database.close(session)


def _unauthorized(detail: str) -> ProblemError:
    return ProblemError(401, detail, field="Authorization", kind="unauthorized",
                        headers={"WWW-Authenticate": 'Bearer realm="kd"'})


_bearer = HTTPBearer(auto_error=False, description="an API key from `kd admin create-key NAME`")


async def get_owner(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> ApiKey:
    """The API key row of `Authorization: Bearer <key>`; 401 problem when missing or unknown."""
    if credentials is None or not credentials.credentials.strip():
        if request.headers.get("authorization"):
            raise _unauthorized("Authorization must be 'Bearer <API key>'")
        raise _unauthorized("missing Authorization header; send 'Authorization: Bearer <API key>'")
    key = credentials.credentials.strip()
    row = await get_database(request).run(lambda session: find_api_key(session, key))
    if row is None:
        raise _unauthorized("unknown API key")
    return row


DatabaseDep = Annotated[Database, Depends(get_database)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
# scope="function": closed when the route function returns, before the response (or a stream) is sent.
SessionDep = Annotated[Session, Depends(_session, scope="function")]
OwnerDep = Annotated[ApiKey, Depends(get_owner)]


def owned(session: Session, table: type[T], row_id: str | None, owner: ApiKey) -> T | None:
    """The row if it exists and belongs to owner, else None: others' objects are never revealed."""
    row = session.get(table, row_id) if row_id else None
    return row if row is not None and row.owner_id == owner.id else None


def owned_or_404(session: Session, table: type[T], row_id: str, owner: ApiKey, noun: str) -> T:
    """owned(), or a 404 problem naming the `<noun>_id` field: others' objects look like missing ones."""
    row = owned(session, table, row_id, owner)
    if row is None:
        raise ProblemError(404, f"{noun} {row_id} not found", field=f"{noun}_id", kind="not-found")
    return row
