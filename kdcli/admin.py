"""`kd admin create-key|list-keys|revoke-key`: API keys, in the service's database (runs next to it).

The logic is kdservice.security; this module only parses arguments and prints.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from sqlalchemy.orm import Session


@contextmanager
def _session(args: argparse.Namespace) -> Iterator[Session]:
    """One transaction on the migrated database of --database-url (default: the service's settings)."""
    from kdservice.db import make_engine, make_sessionmaker, upgrade_database
    from kdservice.settings import get_settings

    database_url = args.database_url or get_settings().database_url
    upgrade_database(database_url)
    engine = make_engine(database_url)
    try:
        with make_sessionmaker(engine).begin() as session:
            yield session
    finally:
        engine.dispose()


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value else "-"


def cmd_create_key(args: argparse.Namespace) -> int:
    from kdservice.security import create_api_key

    expires_in = timedelta(days=args.expires_in) if args.expires_in is not None else None
    with _session(args) as session:
        row, key = create_api_key(session, args.name, expires_in)
        expires = row.expires_at
    print(key)
    if expires is not None:
        print(f"expires {_when(expires)}", file=sys.stderr)
    return 0


def cmd_list_keys(args: argparse.Namespace) -> int:
    from kdservice.security import list_api_keys
    from kdservice.tables import utcnow

    with _session(args) as session:
        rows = [(r.id, r.name, r.prefix, _when(r.created_at), _when(r.expires_at), _when(r.revoked_at),
                 "expired" if r.expires_at and r.expires_at <= utcnow() and not r.revoked_at else "")
                for r in list_api_keys(session)]
    header = ("id", "name", "prefix", "created", "expires", "revoked", "")
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(value).ljust(width) for value, width in zip(row, widths, strict=True)).rstrip())
    return 0


def cmd_revoke_key(args: argparse.Namespace) -> int:
    from kdservice.security import KeyLookupError, revoke_api_key

    try:
        with _session(args) as session:
            row, revoked = revoke_api_key(session, args.key)
            key_id, name, prefix = row.id, row.name, row.prefix
    except KeyLookupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{'revoked' if revoked else 'already revoked'}: {key_id} ({name}, {prefix}...)")
    return 0


def _positive_days(text: str) -> float:
    days = float(text)
    if not 0 < days <= 36_500:
        raise argparse.ArgumentTypeError("give a number of days between 0 and 36500")
    return days


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    admin = subparsers.add_parser("admin", help="service administration (runs next to the database)")
    commands = admin.add_subparsers(dest="admin_command", required=True)

    def command(name: str, func: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        p = commands.add_parser(name, help=help)
        p.add_argument("--database-url", help="default: KD_DATABASE_URL or sqlite:///<KD_ARTIFACT_DIR>/kd.db")
        p.set_defaults(func=func)
        return p

    p = command("create-key", cmd_create_key, "create an API key for NAME and print it (stored hashed)")
    p.add_argument("name", help="owner name of the key (e.g. a user or team)")
    p.add_argument("--expires-in", type=_positive_days, metavar="DAYS", help="the key stops working after DAYS "
                   "days (default: never)")
    command("list-keys", cmd_list_keys, "list API keys: id, name, prefix, created, expires, revoked (never the key)")
    p = command("revoke-key", cmd_revoke_key, "revoke a key at once (by its id or its listed prefix)")
    p.add_argument("key", metavar="ID_OR_PREFIX")
