"""Request dependencies: settings, database access, and the caller's API key (the owner).

Database work never holds a connection while waiting for a thread, nor a thread while waiting for a
connection (the pairing that once stopped the API under ~40 concurrent requests):

- `Database.run(work)`: wait (asynchronously, first come first served, at most KD_DB_WAIT_SECONDS) for
  one of KD_DB_POOL_SIZE slots (one on a local SQLite file, which takes one writer at a time), then run
  `work(session)` in a thread of its own with a session opened and closed there. Slots are at most the
  pool's connections, so a slot holder never waits for one. A request that waits too long gets 503 +
  Retry-After. Submitting a job uses it.
- `Database.read(work)`: the same for a read (the owner lookup, get and list jobs) with a Core
  Connection (api/reads.py: no ORM on the hottest routes), except on a local SQLite file, where it runs
  in the event loop on a connection of its own: WAL readers never wait for the writer, and such a read
  costs less than the hop to a thread.
- `SessionDep` (the other routes): a session for the duration of the route function, closed before
  the response is sent (also for streams) in one of the database threads. Its connection is checked
  out when first used, from the pool's overflow, waiting at most KD_DB_WAIT_SECONDS (503 after).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, TypeVar

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session

from api.problems import ProblemError, busy
from kdservice.db import make_sessionmaker
from kdservice.security import UNKNOWN_KEY, AuthError, bearer_token, key_columns, refusal
from kdservice.settings import Settings
from kdservice.tables import ID_PATTERN, ApiKey

T = TypeVar("T")


class Database:
    """The API process's engine, its session factory, and the slots that bound concurrent database work.

    Plain asyncio (uvicorn runs it): a semaphore and a thread pool of the same size cost a fraction of
    anyio's limiter and worker-thread machinery on this, the hottest path (docs/BENCHMARKS.md)."""

    def __init__(self, engine: Engine, slots: int, wait_seconds: float, reader: Engine | None = None):
        self.engine = engine
        self.sessions = make_sessionmaker(engine)
        self.wait_seconds = wait_seconds
        self._slots = asyncio.Semaphore(slots)
        # As many threads as slots: a slot holder never waits for a thread either.
        self._threads = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="kd-db")
        self._reader = reader

    async def read(self, work: Callable[[Connection], T]) -> T:
        """A read-only work(connection), Core only. With a reader engine (local SQLite: WAL readers never
        wait for the writer, and a small read takes less than the hop to a thread costs) it runs in the
        event loop on the reader's own connection; otherwise in a database thread as run()."""
        if self._reader is None:
            return await self._in_thread(self._on_connection, work)
        with self._reader.connect() as connection:
            return work(connection)

    async def run(self, work: Callable[[Session], T]) -> T:
        """work(session) in a database thread, once a slot is free (503 busy after wait_seconds)."""
        return await self._in_thread(self._in_session, work)

    async def _in_thread(self, call: Callable[[Callable[..., T]], T], work: Callable[..., T]) -> T:
        if self._slots.locked():
            try:
                await asyncio.wait_for(self._slots.acquire(), self.wait_seconds)
            except TimeoutError:
                raise busy("every database connection stayed busy") from None
        else:
            await self._slots.acquire()  # free: returns at once
        try:
            return await asyncio.get_running_loop().run_in_executor(self._threads, call, work)
        finally:
            self._slots.release()

    def _in_session(self, work: Callable[[Session], T]) -> T:
        with self.sessions() as session:
            return work(session)

    def _on_connection(self, work: Callable[[Connection], T]) -> T:
        with self.engine.connect() as connection:
            return work(connection)

    async def close(self, session: Session) -> None:
        """Close a session; one that holds a connection is closed in a thread (a rollback is I/O)."""
        if session.in_transaction():
            await asyncio.get_running_loop().run_in_executor(self._threads, session.close)
        else:
            session.close()

    def shutdown(self) -> None:
        self._threads.shutdown(wait=False)
        self.engine.dispose()
        if self._reader is not None:
            self._reader.dispose()


async def get_database(request: Request) -> Database:  # async: a sync dependency costs a thread hop
    return request.app.state.db


async def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


async def _session(request: Request) -> AsyncIterator[Session]:
    database: Database = request.app.state.db
    session = database.sessions()
    try:
        yield session
    finally:
        await database.close(session)


def unauthorized(detail: str) -> ProblemError:
    """The 401 problem of a missing, malformed, unknown, revoked or expired key."""
    return ProblemError(401, detail, field="Authorization", kind="unauthorized",
                        headers={"WWW-Authenticate": 'Bearer realm="kd"'})


def not_found(noun: str, row_id: str) -> ProblemError:
    """The 404 problem naming the `<noun>_id` field: also for another owner's object, which looks missing."""
    return ProblemError(404, f"{noun} {row_id} not found", field=f"{noun}_id", kind="not-found")


_bearer = HTTPBearer(auto_error=False, description="an API key from `kd admin create-key NAME`")


async def get_api_key(
    request: Request, _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The key of `Authorization: Bearer <key>` (not looked up yet); 401 problem when missing or malformed.
    (_credentials only puts the bearer scheme in the OpenAPI schema.)"""
    return api_key_of(request)


def api_key_of(request: Request) -> str:
    """get_api_key without FastAPI's dependency machinery, for a route that looks the key up itself in its
    one database call and declares BEARER_SECURITY (only where no request validation can fail: a 422 must
    not come before the 401 of an unknown key)."""
    try:
        return bearer_token(request.headers.get("authorization"))
    except AuthError as exc:
        raise unauthorized(str(exc)) from exc


# What `_credentials` above puts in a route's OpenAPI operation, for routes without that dependency.
BEARER_SECURITY = {"security": [{_bearer.scheme_name: []}]}


def owner_of_key(connection: Connection, key: str) -> ApiKey:
    """The row of a working key (a detached ApiKey); 401 problem when it is unknown, revoked or expired
    (looked up on every request, one statement: a revocation takes effect at once)."""
    columns = key_columns(connection, key)
    if columns is None:
        raise unauthorized(UNKNOWN_KEY)
    if (reason := refusal(columns["revoked_at"], columns["expires_at"])) is not None:
        raise unauthorized(reason)
    return ApiKey(**columns)


async def get_owner(request: Request, key: Annotated[str, Depends(get_api_key)]) -> ApiKey:
    """The caller's API key row (its own short database call); 401 problem when missing or not working."""
    database: Database = request.app.state.db
    return await database.read(lambda connection: owner_of_key(connection, key))


DatabaseDep = Annotated[Database, Depends(get_database)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
# scope="function": closed when the route function returns, before the response (or a stream) is sent.
SessionDep = Annotated[Session, Depends(_session, scope="function")]
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
        raise not_found(noun, row_id)
    return row
