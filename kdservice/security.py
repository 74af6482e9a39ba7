"""API keys: random tokens shown once, stored as sha256 hex; `Authorization: Bearer <key>`."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from kdservice.tables import ApiKey

KEY_PREFIX = "kd_"


def hash_key(key: str) -> str:
    # A fast hash is enough: keys are 256-bit random tokens, not user-chosen passwords.
    return hashlib.sha256(key.encode()).hexdigest()


def create_api_key(session: Session, name: str) -> tuple[ApiKey, str]:
    """Insert a key row for owner `name`; returns (row, the plain key). The caller commits."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(name=name, key_hash=hash_key(key), prefix=key[:10])
    session.add(row)
    session.flush()
    return row, key


def find_api_key(session: Session, key: str) -> ApiKey | None:
    return session.scalars(select(ApiKey).where(ApiKey.key_hash == hash_key(key))).first()
