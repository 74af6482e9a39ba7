"""Re-queue jobs whose worker died, resend lost messages, send the worker's heartbeat and remove old
temporary files: a thread in every worker's parent process.

Every lease/2 s: a job whose lease expired goes back to queued and is enqueued again; the next worker
that claims it calls kdcore.run on the same out_dir, which resumes from the last checkpoint. A queued
job whose message is gone (the filesystem broker loses one taken by a worker killed before its claim;
Redis gives it back only after the visibility timeout) is sent again. No celery beat needed: each
worker sweeps, and conditional UPDATEs in JobStore make concurrent sweeps safe. Each round also renews
the worker's `workers` row (kdservice.workers: what /readyz looks at), removes leftovers under tmp/
older than KD_TMP_MAX_AGE_SECONDS (kdservice.tmpfiles) and keeps the shared cache under
KD_CACHE_MAX_BYTES (kdcore.cache_limit).
"""

from __future__ import annotations

import logging
import os
import threading
from datetime import datetime, timedelta

from kdcore.cache_limit import Pruned, prune_cache
from kdservice import workers
from kdservice.db import sessions
from kdservice.jobstore import JobStore
from kdservice.queue import enqueue_job, waiting_messages
from kdservice.settings import Settings, get_settings
from kdservice.tables import utcnow
from kdservice.tmpfiles import remove_stale

log = logging.getLogger("kd.sweeper")

# Held while a sweep touches the database or the broker. Forking waits for it (register_at_fork below), so a pool
# child is never forked while this thread is inside SQLite or a connection pool.
_sweep_lock = threading.Lock()


def _reset_lock_in_child() -> None:
    global _sweep_lock
    _sweep_lock = threading.Lock()


os.register_at_fork(before=lambda: _sweep_lock.acquire(), after_in_parent=lambda: _sweep_lock.release(),
                    after_in_child=_reset_lock_in_child)


def requeue_expired(settings: Settings | None = None, now: datetime | None = None) -> list[str]:
    """One sweep: re-queue (and enqueue) every job whose lease expired. Returns the re-queued ids."""
    settings = settings or get_settings()
    with _sweep_lock:
        store = JobStore(settings.database_url, settings.lease_seconds, settings.max_attempts)
        job_ids = store.requeue_expired(now)
    for job_id in job_ids:
        log.warning("job %s: lease expired, re-queued", job_id)
        enqueue_job(job_id, settings)
    return job_ids


def resend_lost(settings: Settings | None = None, now: datetime | None = None) -> list[str]:
    """One sweep: send again queued jobs whose message was lost. Returns their ids.

    The broker cannot say which job a lost message belonged to, only how many wait. When fewer wait
    than jobs are queued, the jobs last sent more than resend_after_seconds ago are sent again, oldest
    first, one per missing message. A wrong guess costs a duplicate delivery, which the claim skips.
    """
    settings = settings or get_settings()
    now = now or utcnow()
    cutoff = now - timedelta(seconds=settings.resend_after_seconds)
    with _sweep_lock:
        store = JobStore(settings.database_url, settings.lease_seconds, settings.max_attempts)
        queued, stale = store.queued_unsent_since(cutoff)
        missing = queued - waiting_messages(settings) if stale else 0
        resent = [job_id for job_id in stale[:max(missing, 0)] if store.mark_resent(job_id, cutoff, now)]
    for job_id in resent:
        log.warning("job %s: queued with no message since before %s, sent again", job_id, cutoff)
        enqueue_job(job_id, settings)
    return resent


def limit_cache(settings: Settings) -> Pruned:
    """One sweep: the shared cache back under KD_CACHE_MAX_BYTES, least recently used entries first."""
    pruned = prune_cache(settings.cache_dir, settings.cache_max_bytes)
    if pruned.removed:
        log.info("cache: removed %d files (%d bytes) used longest ago; %d bytes kept", len(pruned.removed),
                 pruned.freed_bytes, pruned.kept_bytes)
    return pruned


def heartbeat(settings: Settings, worker_id: str) -> None:
    with _sweep_lock:
        workers.beat(sessions(settings.database_url), worker_id)


class Sweeper(threading.Thread):
    """Every interval (lease/2, and at most a third of KD_WORKER_STALE_SECONDS so that a live worker never
    looks stale): heartbeat, sweep, temp cleanup. The first heartbeat is sent at once."""

    def __init__(self, settings: Settings, worker_id: str, interval_s: float | None = None):
        super().__init__(name="kd-sweeper", daemon=True)
        self.settings, self.worker_id = settings, worker_id
        self.interval_s = interval_s or max(min(settings.lease_seconds / 2, settings.worker_stale_seconds / 3), 0.5)
        self._halt = threading.Event()

    def run(self) -> None:
        while True:
            try:
                heartbeat(self.settings, self.worker_id)
                requeue_expired(self.settings)
                resend_lost(self.settings)
                remove_stale(self.settings.tmp_dir, self.settings.tmp_max_age_seconds)
                limit_cache(self.settings)
            except Exception:  # a database or broker blip: try again next round
                log.exception("sweep failed")
            if self._halt.wait(self.interval_s):
                return

    def stop(self) -> None:
        """Stop sweeping and remove this worker's heartbeat row (a stopped worker is not a live one)."""
        self._halt.set()
        self.join(timeout=10)
        try:
            with _sweep_lock:
                workers.forget(sessions(self.settings.database_url), self.worker_id)
        except Exception:
            log.warning("could not remove the heartbeat row of %s", self.worker_id, exc_info=True)
