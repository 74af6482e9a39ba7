"""Every change to a job row: submit, cancel and delete (the API), claim, lease, progress, finish and
requeue (the worker and its sweeper). Every state change writes its job_transitions row here.

The job row, not the broker, decides who runs a job. A worker owns a job while it holds the claim:
state running (or cancelling), worker_id = its id and lease_expires_at in the future. Every worker write
below is a conditional UPDATE on that claim, so a worker whose lease expired (and whose job another
worker took over) can no longer change the row. Each function is one short transaction.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from kdservice.db import sessions
from kdservice.redact import service_redactor
from kdservice.settings import Settings
from kdservice.states import OWNED_STATES, TERMINAL_STATES
from kdservice.tables import Artifact, Job, JobLog, JobMetric, JobTransition, new_id, utcnow

METRIC_COLUMNS = ("train_loss", "val_acc", "lr")


def add_transition(session: Session, job_id: str, state: str, detail: str | None = None,
                   phase: str | None = None, at: datetime | None = None) -> None:
    """The job_transitions row of a state change; the caller's transaction commits it."""
    session.execute(insert(JobTransition).values(job_id=job_id, state=state, phase=phase,
                                                 at=at or utcnow(), detail=detail))


# --- the API's changes: each takes the request's session and commits

def submit_job(session: Session, owner_id: str, name: str, spec: dict[str, Any],
               idempotency_key: str | None) -> Job:
    """Insert a queued job (raises IntegrityError when a concurrent request took the Idempotency-Key)."""
    now = utcnow()
    job = Job(id=new_id(), owner_id=owner_id, name=name, spec=spec, state="queued", cancel_requested=False,
              attempts=0, idempotency_key=idempotency_key, created_at=now, queued_at=now, enqueued_at=now,
              updated_at=now)
    session.add(job)
    session.flush()
    add_transition(session, job.id, "queued", detail="submitted", at=now)
    session.commit()
    return job


def forget_job(session: Session, job_id: str) -> None:
    """Remove a job whose message could not be sent, so that a retry with its Idempotency-Key starts afresh."""
    session.execute(delete(Job).where(Job.id == job_id))
    session.commit()


def request_cancel(session: Session, job: Job) -> None:
    """queued -> cancelled at once; running -> cancelling (its worker stops within seconds); else nothing.
    Conditional updates: the worker may claim or finish the job between our read and write."""
    now = utcnow()
    for current, target, detail in (("queued", "cancelled", "cancelled before it started"),
                                    ("running", "cancelling", "cancel requested")):
        values: dict[str, Any] = {"state": target, "cancel_requested": True, "updated_at": now}
        if target == "cancelled":
            values["finished_at"] = now
        result = session.execute(update(Job).where(Job.id == job.id, Job.state == current).values(**values)
                                 .execution_options(synchronize_session=False))
        if result.rowcount == 1:
            add_transition(session, job.id, target, detail=detail, at=now)
            break
    session.commit()
    session.refresh(job)


def delete_finished(session: Session, job: Job) -> bool:
    """Delete the row of a finished job (cascades to its transitions, metrics, logs, artifacts).
    False when the job is not in a terminal state."""
    result = session.execute(delete(Job).where(Job.id == job.id, Job.state.in_(TERMINAL_STATES))
                             .execution_options(synchronize_session=False))
    if result.rowcount != 1:
        session.rollback()
        return False
    session.commit()
    return True


# --- the worker's changes: each is its own short transaction, conditional on the claim

@dataclass
class Claim:
    job_id: str
    worker_id: str
    attempts: int
    spec: dict[str, Any]
    resumed: bool  # a previous attempt ran (its checkpoints may be there)


def finite(value: Any) -> Any:
    """value with every NaN/Infinity (a diverged run's loss) replaced by None: JSON answers have no such
    numbers, and the API must not fail on a job's own numbers."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


class JobStore:
    """The worker's writes. `redact` cleans every message a client will read (error, log lines): the
    worker passes kdservice.redact.service_redactor(settings), so no server path is stored."""

    def __init__(self, database_url: str, lease_seconds: float, max_attempts: int,
                 redact: Callable[[str | None], str | None] | None = None):
        self.sessions = sessions(database_url)
        self.lease_seconds = lease_seconds
        self.max_attempts = max_attempts
        self.redact = redact or (lambda text: text)

    @classmethod
    def for_settings(cls, settings: Settings) -> JobStore:
        return cls(settings.database_url, settings.lease_seconds, settings.max_attempts,
                   redact=service_redactor(settings))

    def _owned(self, job_id: str, worker_id: str):
        return (Job.id == job_id) & (Job.worker_id == worker_id) & Job.state.in_(OWNED_STATES)

    @staticmethod
    def _claimable(job_id: str, now: datetime):
        """queued, or running under an expired lease; never once a cancel was asked."""
        claimable = (Job.state == "queued") | ((Job.state == "running") & (Job.lease_expires_at < now))
        return (Job.id == job_id) & claimable & ~Job.cancel_requested

    def claimable(self, job_id: str) -> bool:
        """Whether claim() would take the job now (a read: the worker's main process drops stale messages)."""
        with self.sessions() as session:
            return session.scalar(select(func.count()).where(self._claimable(job_id, utcnow()))) == 1

    def claim(self, job_id: str, worker_id: str) -> Claim | None:
        """queued (or running with an expired lease) -> running, owned by worker_id. None: not ours."""
        now = utcnow()
        with self.sessions.begin() as session:
            result = session.execute(
                update(Job).where(self._claimable(job_id, now)).values(
                    state="running", worker_id=worker_id, attempts=Job.attempts + 1,
                    lease_expires_at=now + timedelta(seconds=self.lease_seconds),
                    started_at=now, finished_at=None, updated_at=now,
                ).execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:
                return None
            spec, attempts = session.execute(select(Job.spec, Job.attempts).where(Job.id == job_id)).one()
            detail = f"worker {worker_id}, attempt {attempts}"
            add_transition(session, job_id, "running", detail=detail, at=now)
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
                .values(phase=phase, progress=finite(progress), updated_at=now)
                .execution_options(synchronize_session=False)
            )
            return result.rowcount == 1

    def cancel_requested(self, job_id: str) -> bool:
        with self.sessions() as session:
            row = session.execute(
                select(Job.cancel_requested, Job.state).where(Job.id == job_id)).one_or_none()
        return row is None or bool(row[0]) or row[1] == "cancelling"

    def add_metric(self, job_id: str, phase: str, epoch: int, metrics: dict[str, float]) -> None:
        metrics = finite(metrics)
        extra = {k: v for k, v in metrics.items() if k not in METRIC_COLUMNS}
        with self.sessions.begin() as session:
            session.execute(insert(JobMetric).values(
                job_id=job_id, phase=phase, epoch=epoch, at=utcnow(), extra=extra or None,
                **{k: metrics.get(k) for k in METRIC_COLUMNS},
            ))

    def add_log(self, job_id: str, message: str, level: str = "info") -> None:
        with self.sessions.begin() as session:
            session.execute(insert(JobLog).values(job_id=job_id, at=utcnow(), level=level,
                                                  message=self.redact(message)))

    def finish(self, job_id: str, worker_id: str, state: str, *, error_code: str | None = None,
               error_message: str | None = None, results_summary: dict | None = None,
               artifacts: Iterable[dict[str, Any]] = ()) -> bool:
        """running/cancelling -> a terminal state, with its artifacts rows. False: the claim was lost."""
        if state not in TERMINAL_STATES:
            raise ValueError(f"not a terminal state: {state!r}")
        error_message = self.redact(error_message)
        results_summary = finite(results_summary)
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
            add_transition(session, job_id, state, detail=detail, at=now)
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
            add_transition(session, job_id, "queued", detail=reason, at=now)
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
                add_transition(session, job_id, target["state"], detail=target.get("error_message", reason),
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
