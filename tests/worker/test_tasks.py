"""Worker pieces in-process on real SQLite and the real filesystem broker: callbacks, lease, sweeper."""

from __future__ import annotations

import json
import os
import time
from datetime import timedelta

import pytest
from kombu import Connection
from sqlalchemy import select

from kdcore.callbacks import Progress
from kdservice.jobstore import JobStore
from kdservice.queue import QUEUE, producer, waiting_messages
from kdservice.tables import Job, JobLog, utcnow
from tests.helpers import insert_job, service_settings, wait_until
from worker import tasks
from worker.sweeper import limit_cache, requeue_expired, resend_lost


@pytest.fixture()
def settings(tmp_path, monkeypatch):
    return service_settings(tmp_path, monkeypatch, lease_seconds=0.6, max_attempts=3)


@pytest.fixture()
def store(settings) -> JobStore:
    return tasks.job_store(settings)


def _job(store: JobStore, job_id: str) -> Job:
    with store.sessions() as session:
        return session.get(Job, job_id)


def _queued_messages(settings) -> list[dict]:
    """Drain the kd queue of the filesystem broker; returns the task headers' args."""
    app = producer(settings)
    bodies = []
    with Connection(app.conf.broker_url, transport_options=app.conf.broker_transport_options) as conn:
        with conn.SimpleQueue(QUEUE) as queue:
            while True:
                try:
                    message = queue.get(timeout=0.2)
                except queue.Empty:
                    return bodies
                bodies.append({"task": message.headers["task"], "args": json.loads(message.body)[0]})
                message.ack()


def test_enqueue_writes_a_kd_run_job_message(settings):
    tasks.enqueue_job("abc123", settings)
    assert _queued_messages(settings) == [{"task": "kd.run_job", "args": ["abc123"]}]


def test_sweeper_requeues_and_enqueues_expired_jobs(settings, store):
    live, dead = insert_job(settings), insert_job(settings)
    store.claim(live, "alive")
    store.claim(dead, "dead")
    with store.sessions.begin() as session:
        session.get(Job, dead).lease_expires_at = utcnow() - timedelta(seconds=1)
    assert requeue_expired(settings) == [dead]
    assert _queued_messages(settings) == [{"task": "kd.run_job", "args": [dead]}]
    assert (_job(store, live).state, _job(store, dead).state) == ("running", "queued")


def test_sweeper_resends_a_queued_job_whose_message_was_lost(settings, store):
    """A worker killed between taking a message and claiming the job leaves it queued with no message.
    The queue is FIFO, so the message taken was the oldest one sent: that job is sent again."""
    long_ago = utcnow() - timedelta(seconds=settings.resend_after_seconds + 60)
    lost = insert_job(settings, queued_at=long_ago - timedelta(seconds=10))
    waiting, young = insert_job(settings, queued_at=long_ago), insert_job(settings)
    for job_id in (waiting, young):
        tasks.enqueue_job(job_id, settings)
    assert resend_lost(settings) == [lost]
    assert resend_lost(settings) == []  # just sent: not again before resend_after_seconds
    later = utcnow() + timedelta(seconds=settings.resend_after_seconds + 1)
    assert resend_lost(settings, now=later) == []  # every queued job has its message waiting
    assert sorted(m["args"][0] for m in _queued_messages(settings)) == sorted([waiting, young, lost])
    assert resend_lost(settings, now=later) == [waiting, young, lost]  # the queue was drained: all lost now
    assert resend_lost(settings, now=later) == []  # each is sent once per period, by any sweeper
    assert len(_queued_messages(settings)) == 3
    with store.sessions() as session:
        logs = session.scalars(select(JobLog.message).where(JobLog.job_id == lost)).all()
    assert any("sent again" in m for m in logs)


def test_sweeper_leaves_alone_queued_jobs_whose_messages_wait(settings, store):
    long_ago = utcnow() - timedelta(seconds=settings.resend_after_seconds + 60)
    jobs = [insert_job(settings, queued_at=long_ago) for _ in range(2)]
    running = insert_job(settings, queued_at=long_ago)
    store.claim(running, "busy")
    for job_id in jobs:
        tasks.enqueue_job(job_id, settings)
    assert resend_lost(settings) == []
    assert sorted(m["args"][0] for m in _queued_messages(settings)) == sorted(jobs)


@pytest.mark.integration
@pytest.mark.skipif(not os.environ.get("KD_TEST_REDIS_URL"), reason="KD_TEST_REDIS_URL unset (see .ci/run)")
def test_sweeper_counts_the_messages_waiting_in_redis(tmp_path, monkeypatch):
    settings = service_settings(tmp_path, monkeypatch, broker_url=os.environ["KD_TEST_REDIS_URL"])
    producer(settings).control.purge()
    long_ago = utcnow() - timedelta(seconds=settings.resend_after_seconds + 60)
    lost = insert_job(settings, queued_at=long_ago - timedelta(seconds=10))
    waiting = insert_job(settings, queued_at=long_ago)
    tasks.enqueue_job(waiting, settings)
    assert waiting_messages(settings) == 1
    assert resend_lost(settings) == [lost]
    assert waiting_messages(settings) == 2
    assert sorted(m["args"][0] for m in _queued_messages(settings)) == sorted([lost, waiting])
    assert waiting_messages(settings) == 0


def test_execute_job_skips_jobs_it_cannot_claim(settings, store):
    job_id = insert_job(settings)
    store.claim(job_id, "someone-else")
    assert tasks.execute_job(job_id, settings) is None  # second delivery: live claim elsewhere
    assert _job(store, job_id).worker_id == "someone-else"
    assert tasks.execute_job("0" * 32, settings) is None  # deleted job


def test_execute_job_fails_a_job_past_its_attempts(settings, store):
    job_id = insert_job(settings, attempts=settings.max_attempts)
    assert tasks.execute_job(job_id, settings) == "failed"
    assert _job(store, job_id).error_code == "too_many_attempts"


def test_lease_keeper_renews_and_notices_a_takeover(settings, store):
    job_id = insert_job(settings)
    claim = store.claim(job_id, "w1")
    first_expiry = _job(store, job_id).lease_expires_at
    keeper = tasks.LeaseKeeper(store, job_id, "w1")
    keeper.start()
    try:
        wait_until(lambda: _job(store, job_id).lease_expires_at > first_expiry, 5, 0.05, "a lease renewal")
        assert not keeper.lost.is_set()
        with store.sessions.begin() as session:  # another worker took the job over
            session.get(Job, job_id).worker_id = "w2"
        assert keeper.lost.wait(3)
    finally:
        keeper.stop()
    assert claim.attempts == 1


def test_callbacks_throttle_progress_and_see_cancel(settings, store):
    job_id = insert_job(settings)
    store.claim(job_id, "w1")
    lease = tasks.LeaseKeeper(store, job_id, "w1")  # not started: only its `lost` flag is used
    callbacks = tasks.JobCallbacks(store, job_id, "w1", lease)
    callbacks.on_progress(Progress(phase="training_teacher", epoch=0, epochs=2, fraction=0.1))
    # within a second of the last write: dropped
    callbacks.on_progress(Progress(phase="training_teacher", epoch=1, epochs=2, fraction=0.2))
    job = _job(store, job_id)
    assert (job.phase, job.progress["fraction"]) == ("training_teacher", 0.1)
    # a phase change is always written
    callbacks.on_progress(Progress(phase="distilling", epoch=0, epochs=2, fraction=0.3))
    job = _job(store, job_id)
    assert (job.phase, job.progress["fraction"], job.progress["epochs"]) == ("distilling", 0.3, 2)
    with store.sessions() as session:
        logs = session.execute(select(JobLog.message).where(JobLog.job_id == job_id)).scalars().all()
    assert logs == ["phase training_teacher", "phase distilling"]

    assert not callbacks.should_cancel()
    with store.sessions.begin() as session:
        session.get(Job, job_id).cancel_requested = True
    started = time.monotonic()
    wait_until(callbacks.should_cancel, 3, 0.05, "should_cancel")
    assert time.monotonic() - started < 1.5  # cached for about a second, no longer


def test_lost_lease_and_shutdown_stop_training(settings, store):
    job_id = insert_job(settings)
    store.claim(job_id, "w1")
    lease = tasks.LeaseKeeper(store, job_id, "w1")
    callbacks = tasks.JobCallbacks(store, job_id, "w1", lease)
    assert not callbacks.should_cancel()
    lease.lost.set()
    assert callbacks.should_cancel()


def test_release_hands_a_job_back_without_counting_the_attempt(settings, store):
    job_id = insert_job(settings)
    store.claim(job_id, "w1")
    assert store.release(job_id, "w1", "worker w1 shut down")
    job = _job(store, job_id)
    assert (job.state, job.worker_id, job.attempts) == ("queued", None, 0)
    assert not store.release(job_id, "w1", "again")


def test_the_sweeper_keeps_the_shared_cache_under_its_limit(tmp_path, monkeypatch):
    settings = service_settings(tmp_path, monkeypatch, cache_max_bytes=1000)
    cache = settings.cache_dir
    old, new = cache / "corruptions" / "fog-s1-a.safetensors", cache / "data" / "b.safetensors"
    for path, hours_ago in ((old, 5), (new, 2)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 800)
        os.utime(path, (time.time() - hours_ago * 3600,) * 2)
    pruned = limit_cache(settings)
    assert pruned.removed == [old] and not old.exists() and new.exists() and pruned.kept_bytes == 800
