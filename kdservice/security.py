"""API keys: random tokens shown once, stored as sha256 hex; `Authorization: Bearer <key>`.

A key works until it expires (`expires_at`, optional) or an admin revokes it (`revoked_at`). Every
request looks the key up in the database (`authenticate`, or `key_columns` for the API's Core reads):
nothing is cached, so a revocation or an expiry takes effect on the very next request, on every API
replica. `refusal` is the one rule that says whether a known key works.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, or_, select
from sqlalchemy.orm import Session

from kdservice.db import PreparedSelect
from kdservice.tables import ApiKey, utcnow

KEY_PREFIX = "kd_"
PREFIX_LENGTH = 10  # what listings show: "kd_" and 7 random characters
MAX_KEY_LENGTH = 200
UNKNOWN_KEY = "unknown API key"


class AuthError(Exception):
    """The request's credentials do not name a working key; the message says why (a 401)."""


class KeyLookupError(Exception):
    """An admin's key reference matches no key, or more than one."""


def hash_key(key: str) -> str:
    # A fast hash is enough: keys are 256-bit random tokens, not user-chosen passwords.
    return hashlib.sha256(key.encode()).hexdigest()


def create_api_key(session: Session, name: str, expires_in: timedelta | None = None) -> tuple[ApiKey, str]:
    """Insert a key row for owner `name`; returns (row, the plain key). The caller commits."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    expires_at = utcnow() + expires_in if expires_in is not None else None
    row = ApiKey(name=name, key_hash=hash_key(key), prefix=key[:PREFIX_LENGTH], expires_at=expires_at)
    session.add(row)
    session.flush()
    return row, key


def find_api_key(session: Session, key: str) -> ApiKey | None:
    """The row of a key, working or not."""
    return session.scalars(select(ApiKey).where(ApiKey.key_hash == hash_key(key))).first()


def bearer_token(authorization: str | None) -> str:
    """The key of an `Authorization: Bearer <key>` header; AuthError naming what is wrong."""
    if not authorization or not authorization.strip():
        raise AuthError("missing Authorization header; send 'Authorization: Bearer <API key>'")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthError("Authorization must be 'Bearer <API key>'")
    if len(token) > MAX_KEY_LENGTH:
        raise AuthError(UNKNOWN_KEY)
    return token


def authenticate(session: Session, authorization: str | None, now: datetime | None = None) -> ApiKey:
    """The working key row named by an Authorization header value; AuthError when there is none."""
    return working_key(session, bearer_token(authorization), now)


def working_key(session: Session, key: str, now: datetime | None = None) -> ApiKey:
    """The row of a key that is known, not revoked and not expired (the pages' sign-in cookie holds the key
    itself); AuthError saying which it is not."""
    row = find_api_key(session, key) if len(key) <= MAX_KEY_LENGTH else None
    if row is None:
        raise AuthError(UNKNOWN_KEY)
    if (reason := refusal(row.revoked_at, row.expires_at, now)) is not None:
        raise AuthError(reason)
    return row


def refusal(revoked_at: datetime | None, expires_at: datetime | None, now: datetime | None = None) -> str | None:
    """Why a known key does not work (revoked, expired), or None when it works."""
    if revoked_at is not None:
        return "this API key was revoked"
    if expires_at is not None and expires_at <= (now or utcnow()):
        return "this API key expired; ask for a new one"
    return None


_KEYS = ApiKey.__table__
# Not the ORM: the API looks a key up on every request (api/deps.py, api/reads.py).
_KEY_BY_HASH = PreparedSelect(select(_KEYS).where(_KEYS.c.key_hash == bindparam("key_hash")))


def key_columns(connection: Connection, key: str) -> dict[str, Any] | None:
    """Every column of a key's row (working or not), by name; None for an unknown key."""
    if len(key) > MAX_KEY_LENGTH:
        return None
    rows = _KEY_BY_HASH.rows(connection, {"key_hash": hash_key(key)})
    return dict(zip(_KEYS.columns.keys(), rows[0], strict=True)) if rows else None


def list_api_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)))


def revoke_api_key(session: Session, id_or_prefix: str) -> tuple[ApiKey, bool]:
    """Revoke the key whose id or listed prefix is given; (row, False if it was already revoked).
    KeyLookupError when none or several match. The caller commits."""
    rows = list(session.scalars(select(ApiKey).where(or_(ApiKey.id == id_or_prefix,
                                                          ApiKey.prefix == id_or_prefix))))
    if not rows:
        raise KeyLookupError(f"no API key has the id or prefix {id_or_prefix!r} (see `kd admin list-keys`)")
    if len(rows) > 1:
        raise KeyLookupError(f"{len(rows)} keys have the prefix {id_or_prefix!r}; give the key's id instead")
    row = rows[0]
    if row.revoked_at is not None:
        return row, False
    row.revoked_at = utcnow()
    session.flush()
    return row, True
