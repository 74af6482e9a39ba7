"""`kd admin create-key NAME`: create an API key in the service's database and print it (shown once)."""

from __future__ import annotations

import argparse


def cmd_create_key(args: argparse.Namespace) -> int:
    from kdservice.db import make_engine, make_sessionmaker, upgrade_database
    from kdservice.security import create_api_key
    from kdservice.settings import get_settings

    database_url = args.database_url or get_settings().database_url
    upgrade_database(database_url)
    engine = make_engine(database_url)
    try:
        with make_sessionmaker(engine).begin() as session:
            _, key = create_api_key(session, args.name)
    finally:
        engine.dispose()
    print(key)
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    admin = subparsers.add_parser("admin", help="service administration (runs next to the database)")
    commands = admin.add_subparsers(dest="admin_command", required=True)
    p = commands.add_parser("create-key", help="create an API key for NAME and print it (stored hashed)")
    p.add_argument("name", help="owner name of the key (e.g. a user or team)")
    p.add_argument("--database-url", help="default: KD_DATABASE_URL or sqlite:///<KD_ARTIFACT_DIR>/kd.db")
    p.set_defaults(func=cmd_create_key)
