"""Alembic environment: the URL comes from api.db.upgrade_database, `-x url=...`, or Settings."""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import text

from kdservice.db import make_engine
from kdservice.tables import Base

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name)


def _database_url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from kdservice.settings import get_settings

    return get_settings().database_url


def run_migrations_offline() -> None:
    context.configure(url=_database_url(), target_metadata=Base.metadata, literal_binds=True,
                      render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(_database_url())
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            # Serialise concurrent starters (API + workers); released when the connection closes.
            connection.execute(text("SELECT pg_advisory_lock(727021)"))
            connection.commit()
        context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
