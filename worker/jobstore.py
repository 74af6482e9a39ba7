"""The worker side of the job state machine: every change a worker makes to a job row.

The job row, not the broker, decides who runs a job. A worker owns a job while it holds the claim:
state running (or cancelling), worker_id = its id and lease_expires_at in the future. Every write
below is a conditional UPDATE on that claim, so a worker whose lease expired (and whose job another
worker took over) can no longer change the row. Each function is one short transaction.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from api import db
from api.db import Artifact, Job, JobLog, JobMetric, JobTransition, utcnow

OWNED_STATES = ("running", "cancelling")
TERMINAL_STATES = ("succeeded", "failed", "cancelled")
METRIC_COLUMNS = ("train_loss", "val_acc", "lr")

_engines: dict[tuple[int, str], sessionmaker[Session]] = {}
_engines_lock = threading.Lock()


def sessions(database_url: str) -> sessionmaker[Session]:
    """A session factory per (process, url): a forked worker child never reuses its parent's connections."""
    key = (os.getpid(), database_url)
    with _engines_lock:
        if key not in _engines:
            _engines[key] = db.make_sessionmaker(db.make_engine(database_url))
        return _engines[key]


@dataclass
class Claim:
    job_id: str
    worker_id: str
    attempts: int
    spec: dict[str, Any]
    resumed: bool  # a previous attempt ran (its checkpoints may be there)


def _add_transition(session: Session, job_id: str, state: str, detail: str | None = None,
                    phase: str | None = None, at: datetime | None = None) -> None:
    session.execute(insert(JobTransition).values(job_id=job_id, state=state, phase=phase,
                                                 at=at or utcnow(), detail=detail))


class JobStore:
    def __init__(self, database_url: str, lease_seconds: float, max_attempts: int):
        self.sessions = sessions(database_url)
        self.lease_seconds = lease_seconds
        self.max_attempts = max_attempts

    def _owned(self, job_id: str, worker_id: str):
        return (Job.id == job_id) & (Job.worker_id == worker_id) & Job.state.in_(OWNED_STATES)

    def claim(self, job_id: str, worker_id: str) -> Claim | None:
        """queued (or running with an expired lease) -> running, owned by worker_id. None: not ours."""
        now = utcnow()
        with self.sessions.begin() as session:
            claimable = (Job.state == "queued") | ((Job.state == "running") & (Job.lease_expires_at < now))
            result = session.execute(
                update(Job).where((Job.id == job_id) & claimable & ~Job.cancel_requested).values(
                    state="running", worker_id=worker_id, attempts=Job.attempts + 1,
                    lease_expires_at=now + timedelta(seconds=self.lease_seconds),
                    started_at=now, finished_at=None, updated_at=now,
                ).execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:
                return None
            spec, attempts = session.execute(select(Job.spec, Job.attempts).where(Job.id == job_id)).one()
            detail = f"worker {worker_id}, attempt {attempts}"
            _add_transition(session, job_id, "running", detail=detail, at=now)
        return Claim(job_id, worker_id, attempts, spec, resumed=attempts > 1)

    def renew_lease(self, job_id: str, worker_id: str) -> bool:
        """Push the lease forward; False means the claim is lost (requeued, taken over, or deleted)."""
        now = utcnow()
        with self.sessions.begin() as session:
            result = session.execute(
                update(Job).where(self._owned(job_id, worker_id))
                .values(lease_expires_at=now + timedelta(seconds=self.lease_seconds))
                .execution_options(synchronize_session=False)
            )
            return result.rowcount == 1

    def set_progress(self, job_id: str, worker_id: str, phase: str, progress: dict[str, Any]) -> bool:
        now = utcnow()
        with self.sessions.begin() as session:
            result = session.execute(
                update(Job).where(self._owned(job_id, worker_id))
                .values(phase=phase, progress=progress, updated_at=now)
                .execution_options(synchronize_session=False)
            )
            return result.rowcount == 1

    def cancel_requested(self, job_id: str) -> bool:
        with self.sessions() as session:
            row = session.execute(
                select(Job.cancel_requested, Job.state).where(Job.id == job_id)).one_or_none()
        return row is None or bool(row[0]) or row[1] == "cancelling"

    def add_metric(self, job_id: str, phase: str, epoch: int, metrics: dict[str, float]) -> None:
        extra = {k: v for k, v in metrics.items() if k not in METRIC_COLUMNS}
        with self.sessions.begin() as session:
            session.execute(insert(JobMetric).values(
                job_id=job_id, phase=phase, epoch=epoch, at=utcnow(), extra=extra or None,
                **{k: metrics.get(k) for k in METRIC_COLUMNS},
            ))

    def add_log(self, job_id: str, message: str, level: str = "info") -> None:
        with self.sessions.begin() as session:
            session.execute(insert(JobLog).values(job_id=job_id, at=utcnow(), level=level, message=message))

    def finish(self, job_id: str, worker_id: str, state: str, *, error_code: str | None = None,
               error_message: str | None = None, results_summary: dict | None = None,
               artifacts: Iterable[dict[str, Any]] = ()) -> bool:
        """running/cancelling -> a terminal state, with its artifacts rows. False: the claim was lost."""
        assert state in TERMINAL_STATES
        now = utcnow()
        with self.sessions.begin() as session:
            result = session.execute(
                update(Job).where(self._owned(job_id, worker_id)).values(
                    state=state, error_code=error_code, error_message=error_message,
                    results_summary=results_summary, lease_expires_at=None, finished_at=now, updated_at=now,
                ).execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:
                return False
            detail = f"{error_code}: {error_message}" if error_code else None
            _add_transition(session, job_id, state, detail=detail, at=now)
            rows = [dict(a, job_id=job_id) for a in artifacts]
            if rows:
                session.execute(delete(Artifact).where(Artifact.job_id == job_id))
                session.execute(insert(Artifact), rows)
        return True

    def release(self, job_id: str, worker_id: str, reason: str) -> bool:
        """running -> queued on a clean worker shutdown; the attempt does not count against max_attempts."""
        now = utcnow()
        with self.sessions.begin() as session:
            result = session.execute(
                update(Job).where(self._owned(job_id, worker_id) & (Job.state == "running")).values(
                    state="queued", worker_id=None, lease_expires_at=None, attempts=Job.attempts - 1,
                    queued_at=now, enqueued_at=now, updated_at=now,
                ).execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:
                return False
            _add_transition(session, job_id, "queued", detail=reason, at=now)
        return True

    def requeue_expired(self, now: datetime | None = None) -> list[str]:
        """Sweeper: jobs whose lease expired go back to queued (or end). Returns the ids to enqueue.

        cancelling -> cancelled (the user asked); attempts >= max_attempts -> failed
        "too_many_attempts" (a job that always kills its worker must not loop forever); else queued.
        """
        now = now or utcnow()
        with self.sessions() as session:
            expired = session.execute(
                select(Job.id, Job.state, Job.attempts, Job.worker_id, Job.cancel_requested)
                .where(Job.state.in_(OWNED_STATES) & (Job.lease_expires_at < now))
            ).all()
        requeued = []
        for job_id, state, attempts, worker_id, cancel in expired:
            reason = f"lease of worker {worker_id} expired"
            if state == "cancelling" or cancel:
                target = dict(state="cancelled", finished_at=now)
            elif attempts >= self.max_attempts:
                target = dict(state="failed", finished_at=now, error_code="too_many_attempts",
                              error_message=f"the job's worker died {attempts} times "
                                            f"(max_attempts={self.max_attempts}); last: {reason}")
            else:
                target = dict(state="queued", queued_at=now, enqueued_at=now)
            with self.sessions.begin() as session:
                # Conditional on the row still being the one we read: sweepers run in every worker.
                result = session.execute(
                    update(Job).where((Job.id == job_id) & (Job.state == state) & (Job.worker_id == worker_id)
                                      & (Job.lease_expires_at < now))
                    .values(worker_id=None, lease_expires_at=None, updated_at=now, **target)
                    .execution_options(synchronize_session=False)
                )
                if result.rowcount != 1:
                    continue
                _add_transition(session, job_id, target["state"], detail=target.get("error_message", reason),
                                at=now)
            if target["state"] == "queued":
                requeued.append(job_id)
        return requeued

    def queued_unsent_since(self, cutoff: datetime) -> tuple[int, list[str]]:
        """(how many jobs are queued, the ids of those whose message was last sent before cutoff, oldest first)."""
        sent_at = func.coalesce(Job.enqueued_at, Job.queued_at)
        with self.sessions() as session:
            queued = session.scalar(select(func.count()).where(Job.state == "queued"))
            stale = session.scalars(
                select(Job.id).where((Job.state == "queued") & (sent_at < cutoff)).order_by(sent_at, Job.id)
            ).all()
        return int(queued or 0), list(stale)

    def mark_resent(self, job_id: str, cutoff: datetime, now: datetime | None = None) -> bool:
        """Stamp a job about to be sent again; False if it left queued or another sweeper stamped it first."""
        now = now or utcnow()
        with self.sessions.begin() as session:
            result = session.execute(
                update(Job).where((Job.id == job_id) & (Job.state == "queued")
                                  & (func.coalesce(Job.enqueued_at, Job.queued_at) < cutoff))
                .values(enqueued_at=now).execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:
                return False
            session.execute(insert(JobLog).values(job_id=job_id, at=now, level="warning",
                                                  message="no queue message seemed left for it: sent again"))
        return True
