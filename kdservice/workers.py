"""Worker heartbeats: each running worker keeps a `workers` row fresh; readiness asks for a recent one.

A row per worker (its Celery node name), renewed by the worker's sweeper thread every few seconds and
deleted when the worker stops cleanly. The database is shared by every machine, so the API sees workers
anywhere. Rows of workers that died without stopping are pruned after a day.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime, timedelta

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from kdservice.tables import Worker, utcnow

PRUNE_AFTER = timedelta(days=1)


def beat(sessions: sessionmaker[Session], worker_id: str, now: datetime | None = None) -> None:
    """Record that worker_id is alive now (insert its row the first time)."""
    now = now or utcnow()
    with sessions.begin() as session:
        result = session.execute(update(Worker).where(Worker.id == worker_id).values(
            last_seen_at=now, pid=os.getpid(), hostname=socket.gethostname()))
        if result.rowcount == 0:
            session.execute(insert(Worker).values(id=worker_id, hostname=socket.gethostname(), pid=os.getpid(),
                                                  started_at=now, last_seen_at=now))
        session.execute(delete(Worker).where(Worker.last_seen_at < now - PRUNE_AFTER))


def forget(sessions: sessionmaker[Session], worker_id: str) -> None:
    """A worker that stops cleanly removes its row: readiness should not count it any more."""
    with sessions.begin() as session:
        session.execute(delete(Worker).where(Worker.id == worker_id))


def last_seen(session: Session) -> datetime | None:
    """When the most recently seen worker last sent a heartbeat (None: no worker row at all)."""
    return session.scalar(select(func.max(Worker.last_seen_at)))


def live_workers(session: Session, stale_seconds: float, now: datetime | None = None) -> list[Worker]:
    cutoff = (now or utcnow()) - timedelta(seconds=stale_seconds)
    return list(session.scalars(select(Worker).where(Worker.last_seen_at >= cutoff).order_by(Worker.id)))
