"""Re-queue jobs whose worker died: a thread in every worker's parent process, every lease/2 s.

A job whose lease expired goes back to queued and is enqueued again; the next worker that claims it
calls kdcore.run on the same out_dir, which resumes from the last checkpoint. No celery beat needed:
each worker sweeps, and the conditional UPDATE in JobStore.requeue_expired makes concurrent sweeps safe.
"""

from __future__ import annotations

import logging
import os
import threading
from datetime import datetime

from api.config import Settings, get_settings
from worker.celery_app import enqueue_job
from worker.jobstore import JobStore

log = logging.getLogger("kd.sweeper")

# Held while a sweep touches the database. Forking waits for it (register_at_fork below), so a pool
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


class Sweeper(threading.Thread):
    def __init__(self, settings: Settings, interval_s: float | None = None):
        super().__init__(name="kd-sweeper", daemon=True)
        self.settings = settings
        self.interval_s = interval_s or max(settings.lease_seconds / 2, 0.5)
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(self.interval_s):
            try:
                requeue_expired(self.settings)
            except Exception:  # a database or broker blip: try again next round
                log.exception("sweep failed")

    def stop(self) -> None:
        self._halt.set()
