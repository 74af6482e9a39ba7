"""The worker's side of the job state machine, on a real SQLite database (no broker, no torch)."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select

from kdservice.jobstore import JobStore
from kdservice.tables import Job, JobTransition, utcnow
from tests.helpers import insert_job, service_settings


@pytest.fixture()
def settings(tmp_path, monkeypatch):
    return service_settings(tmp_path, monkeypatch, lease_seconds=30, max_attempts=3)


@pytest.fixture()
def store(settings) -> JobStore:
    return JobStore(settings.database_url, settings.lease_seconds, settings.max_attempts)


def _job(store: JobStore, job_id: str) -> Job:
    with store.sessions() as session:
        return session.get(Job, job_id)


def _states(store: JobStore, job_id: str) -> list[str]:
    with store.sessions() as session:
        rows = session.execute(select(JobTransition.state).where(JobTransition.job_id == job_id)
                               .order_by(JobTransition.id)).scalars().all()
    return list(rows)


def _expire(store: JobStore, job_id: str) -> None:
    with store.sessions.begin() as session:
        session.get(Job, job_id).lease_expires_at = utcnow() - timedelta(seconds=1)


def test_claim_is_exclusive_and_counts_attempts(settings, store):
    job_id = insert_job(settings)
    claim = store.claim(job_id, "w1")
    assert claim is not None and claim.attempts == 1 and claim.spec["name"] == "tiny"
    assert store.claim(job_id, "w2") is None  # a second delivery sees the live claim
    job = _job(store, job_id)
    assert (job.state, job.worker_id, job.attempts) == ("running", "w1", 1)
    assert job.lease_expires_at is not None
    assert _states(store, job_id).count("running") == 1


def test_concurrent_claims_have_one_winner(settings, store):
    job_id = insert_job(settings)
    winners: list[str] = []
    barrier = threading.Barrier(6)

    def contend(worker_id: str) -> None:
        own = JobStore(settings.database_url, settings.lease_seconds, settings.max_attempts)
        barrier.wait()
        if own.claim(job_id, worker_id) is not None:
            winners.append(worker_id)

    threads = [threading.Thread(target=contend, args=(f"w{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1
    assert _job(store, job_id).worker_id == winners[0]


def test_only_the_owner_renews_writes_and_finishes(settings, store):
    job_id = insert_job(settings)
    store.claim(job_id, "w1")
    assert store.renew_lease(job_id, "w1")
    assert not store.renew_lease(job_id, "intruder")
    assert not store.set_progress(job_id, "intruder", "distilling", {"fraction": 0.5})
    assert store.set_progress(job_id, "w1", "distilling", {"fraction": 0.5})
    assert not store.finish(job_id, "intruder", "succeeded")
    artifacts = [{"name": "results.json", "size": 2, "sha256": "0" * 64, "path": "/x/results.json"}]
    assert store.finish(job_id, "w1", "succeeded", results_summary={"student_kd": {"clean_acc": 0.5}},
                        artifacts=artifacts)
    job = _job(store, job_id)
    assert (job.state, job.phase, job.lease_expires_at) == ("succeeded", "distilling", None)
    assert job.finished_at is not None and job.results_summary["student_kd"]["clean_acc"] == 0.5
    assert not store.renew_lease(job_id, "w1")  # a finished job has no lease to renew
    assert _states(store, job_id)[-2:] == ["running", "succeeded"]


def test_expired_lease_is_requeued_then_taken_over(settings, store):
    job_id = insert_job(settings)
    store.claim(job_id, "dead")
    assert store.requeue_expired() == []  # lease still live
    _expire(store, job_id)
    assert store.requeue_expired() == [job_id]
    assert store.requeue_expired() == []  # a second sweeper finds nothing to do
    job = _job(store, job_id)
    assert (job.state, job.worker_id, job.attempts) == ("queued", None, 1)
    assert not store.renew_lease(job_id, "dead")  # the dead worker, if it wakes up, has lost the job
    claim = store.claim(job_id, "w2")
    assert claim is not None and claim.attempts == 2 and claim.resumed
    assert not store.finish(job_id, "dead", "failed", error_code="x", error_message="y")
    assert _states(store, job_id) == ["queued", "running", "queued", "running"]


def test_running_job_with_expired_lease_can_be_claimed_directly(settings, store):
    job_id = insert_job(settings)
    store.claim(job_id, "dead")
    _expire(store, job_id)
    assert store.claim(job_id, "w2").attempts == 2  # e.g. the broker redelivered before the sweep


def test_attempts_cap_fails_the_job(settings, store):
    job_id = insert_job(settings)
    for attempt in range(1, settings.max_attempts + 1):
        assert store.claim(job_id, f"w{attempt}").attempts == attempt
        _expire(store, job_id)
        requeued = store.requeue_expired()
        assert requeued == ([job_id] if attempt < settings.max_attempts else [])
    job = _job(store, job_id)
    assert (job.state, job.error_code) == ("failed", "too_many_attempts")
    assert str(settings.max_attempts) in job.error_message


def test_expired_cancelling_job_ends_cancelled(settings, store):
    job_id = insert_job(settings)
    store.claim(job_id, "w1")
    with store.sessions.begin() as session:
        job = session.get(Job, job_id)
        job.state, job.cancel_requested = "cancelling", True
    assert store.cancel_requested(job_id)
    _expire(store, job_id)
    assert store.requeue_expired() == []
    assert _job(store, job_id).state == "cancelled"


def test_cancelled_or_missing_jobs_are_not_claimed(settings, store):
    job_id = insert_job(settings, cancel_requested=True)
    assert store.claim(job_id, "w1") is None
    assert store.claim(uuid.uuid4().hex, "w1") is None
    assert store.cancel_requested(uuid.uuid4().hex)  # a deleted job counts as cancelled


def test_metrics_and_logs_are_stored(settings, store):
    from kdservice.tables import JobLog, JobMetric

    job_id = insert_job(settings)
    store.claim(job_id, "w1")
    store.add_metric(job_id, "distilling", 1, {"train_loss": 1.5, "val_acc": 0.25, "lr": 0.1, "loss_kd": 0.7})
    store.add_log(job_id, "distilling: resumed from checkpoint after epoch 1")
    with store.sessions() as session:
        metric = session.execute(select(JobMetric).where(JobMetric.job_id == job_id)).scalar_one()
        logs = session.execute(select(JobLog.message).where(JobLog.job_id == job_id)).scalars().all()
    assert (metric.phase, metric.epoch, metric.train_loss, metric.val_acc, metric.lr) == (
        "distilling", 1, 1.5, 0.25, 0.1)
    assert metric.extra == {"loss_kd": 0.7}
    assert logs == ["distilling: resumed from checkpoint after epoch 1"]
