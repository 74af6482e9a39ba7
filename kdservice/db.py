"""Engines, sessions and migrations: SQLite (WAL, busy timeout) by default, PostgreSQL in production."""

from __future__ import annotations

import fcntl
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Dialect, Engine, Select, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

# migrations/ sits beside kdservice/ in the checkout (and in the container image, which copies the tree).
MIGRATIONS_DIR = Path(__file__).resolve().parents[1] / "migrations"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL: readers (API, SSE) never block the writer (worker); busy_timeout: writers wait, not fail.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def make_engine(database_url: str, pool_size: int | None = None, pool_timeout: float = 30.0) -> Engine:
    """An engine for the URL; SQLite gets WAL, a busy timeout and foreign keys on every connection.

    pool_size (the API): that many connections plus as many again of overflow, each checkout waiting at
    most pool_timeout; None keeps SQLAlchemy's defaults (the worker and tools use few connections)."""
    url = make_url(database_url)
    pool: dict[str, Any] = {}
    if pool_size is not None:
        pool = {"pool_size": pool_size, "max_overflow": pool_size, "pool_timeout": pool_timeout}
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        else:
            pool = {}  # in-memory SQLite uses a single-connection pool
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **pool)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, **pool)


def is_local_sqlite(database_url: str) -> bool:
    """A SQLite file (not in memory): local, and in WAL mode its readers never wait for the writer."""
    url = make_url(database_url)
    return url.get_backend_name() == "sqlite" and bool(url.database) and url.database != ":memory:"


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


class PreparedSelect:
    """A Core select compiled once per dialect and run on the connection's DB-API cursor, each result value
    passed through its column type's own result processor, as Core does. What this skips is Core's work
    per execution (cache key, execution context, result object): on SQLite that cost more than the query
    (the API's hottest read, api/reads.py). Bind parameters are plain values named by bindparam(), with
    no bind processing; no IN lists that expand."""

    def __init__(self, statement: Select):
        self.statement = statement
        self._compiled: dict[Dialect, tuple[str, tuple[str, ...] | None, list[Any]]] = {}

    def _for(self, dialect: Dialect) -> tuple[str, tuple[str, ...] | None, list[Any]]:
        if dialect not in self._compiled:  # a race only compiles twice
            compiled = self.statement.compile(dialect=dialect)
            positions = tuple(compiled.positiontup) if compiled.positiontup is not None else None
            processors = [column.type.dialect_impl(dialect).result_processor(dialect, None)
                          for column in self.statement.selected_columns]
            self._compiled[dialect] = (compiled.string, positions, processors)
        return self._compiled[dialect]

    def rows(self, connection: Connection, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        sql, positions, processors = self._for(connection.dialect)
        cursor = connection.connection.cursor()
        try:
            cursor.execute(sql, tuple(params[name] for name in positions) if positions is not None else params)
            fetched = cursor.fetchall()
        finally:
            cursor.close()
        return [tuple([value if process is None else process(value)
                       for process, value in zip(processors, row, strict=True)]) for row in fetched]


@contextmanager
def _migration_lock(database_url: str):
    # The API and a worker may start together: on SQLite a lock file next to the database serialises
    # their migrations (PostgreSQL takes an advisory lock in migrations/env.py instead).
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        yield
        return
    lock_path = Path(url.database).with_suffix(".migrate.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


_upgrade_lock = threading.Lock()


def upgrade_database(database_url: str) -> None:
    """`alembic upgrade head` on database_url (programmatic; used by the API, the worker and make up)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolation: a literal % in a password must be doubled.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    config.attributes["configure_logger"] = False
    with _upgrade_lock, _migration_lock(database_url):
        command.upgrade(config, "head")


_engines: dict[tuple[int, str], sessionmaker[Session]] = {}
_engines_lock = threading.Lock()


def sessions(database_url: str) -> sessionmaker[Session]:
    """A session factory per (process, url): a forked worker child never reuses its parent's connections."""
    key = (os.getpid(), database_url)
    with _engines_lock:
        if key not in _engines:
            _engines[key] = make_sessionmaker(make_engine(database_url))
        return _engines[key]
