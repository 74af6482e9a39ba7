"""Task kd.run_job: claim the job row, run kdcore.run with callbacks that write back, finish the row.

torch and kdcore.pipeline are imported inside the task (and pre-imported when a pool child starts),
never in the worker's parent process: CUDA is not fork-safe and must start in the child that trains.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import signal
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import billiard.process
from celery import shared_task
from celery.signals import worker_process_init, worker_shutting_down
from celery.worker import state as worker_state
from celery.worker.request import Request
from celery.worker.state import task_ready

from kdcore.callbacks import Callbacks, Progress
from kdcore.job_files import ARTIFACT_NAMES
from kdservice.jobstore import JobStore
from kdservice.queue import TASK_NAME, enqueue_job
from kdservice.settings import Settings, get_settings
from kdservice.summaries import summarize_results

log = logging.getLogger("kd.worker")

PROGRESS_INTERVAL_S = 1.0
CANCEL_CACHE_S = 1.0
# Set by SIGTERM in a pool child: stop training at the next cancel poll and hand the job back.
shutdown_requested = threading.Event()


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def job_store(settings: Settings) -> JobStore:
    return JobStore.for_settings(settings)  # redacts server paths from the errors and logs it stores


class LeaseKeeper(threading.Thread):
    """Renews the claim every lease/3 s. `lost` turns true when the claim is gone (requeued, taken over)
    or could not be renewed for a whole lease: the run must stop, another worker may own the job now."""

    def __init__(self, store: JobStore, job_id: str, worker_id: str):
        super().__init__(name=f"lease-{job_id[:8]}", daemon=True)
        self.store, self.job_id, self.worker_id = store, job_id, worker_id
        self.lost = threading.Event()
        self._halt = threading.Event()

    def run(self) -> None:
        interval = self.store.lease_seconds / 3
        last_renewed = time.monotonic()
        while not self._halt.wait(interval):
            try:
                if not self.store.renew_lease(self.job_id, self.worker_id):
                    if self._halt.is_set():  # the job just finished: nothing was lost
                        return
                    log.warning("job %s: claim lost, stopping", self.job_id)
                    self.lost.set()
                    return
                last_renewed = time.monotonic()
            except Exception:  # database unreachable: keep trying until the lease would have run out
                log.exception("job %s: lease renewal failed", self.job_id)
                if time.monotonic() - last_renewed > self.store.lease_seconds:
                    self.lost.set()
                    return

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)


class JobCallbacks(Callbacks):
    """kdcore.run -> database: throttled progress, one metrics row per epoch, log lines, cancel flag."""

    def __init__(self, store: JobStore, job_id: str, worker_id: str, lease: LeaseKeeper):
        self.store, self.job_id, self.worker_id, self.lease = store, job_id, worker_id, lease
        self._phase: str | None = None
        self._last_write = 0.0
        self._cancel_checked = 0.0
        self._cancel = False

    def on_progress(self, progress: Progress) -> None:
        now = time.monotonic()
        phase_changed = progress.phase != self._phase
        if not phase_changed and now - self._last_write < PROGRESS_INTERVAL_S:
            return
        if phase_changed:
            self.store.add_log(self.job_id, f"phase {progress.phase}")
        self._phase, self._last_write = progress.phase, now
        self.store.set_progress(self.job_id, self.worker_id, progress.phase, {
            "seed": progress.seed, "epoch": progress.epoch, "epochs": progress.epochs,
            "step": progress.step, "steps": progress.steps,
            "fraction": round(progress.fraction, 4), "eta_seconds": progress.eta_seconds,
        })

    def on_epoch_end(self, phase: str, epoch: int, metrics: dict[str, float]) -> None:
        self.store.add_metric(self.job_id, phase, epoch, metrics)

    def on_log(self, message: str) -> None:
        self.store.add_log(self.job_id, message)

    def should_cancel(self) -> bool:
        if self.lease.lost.is_set() or shutdown_requested.is_set():
            return True
        now = time.monotonic()
        if now - self._cancel_checked >= CANCEL_CACHE_S:
            self._cancel_checked = now
            self._cancel = self.store.cancel_requested(self.job_id)
        return self._cancel


def collect_artifacts(out_dir: Path) -> list[dict[str, Any]]:
    rows = []
    for name in ARTIFACT_NAMES:
        path = out_dir / name
        if path.is_file():
            digest = hashlib.sha256()
            with path.open("rb") as f:
                for block in iter(lambda f=f: f.read(1 << 20), b""):
                    digest.update(block)
            rows.append({"name": name, "size": path.stat().st_size, "sha256": digest.hexdigest(),
                         "path": str(path)})
    return rows


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:500]


def execute_job(job_id: str, settings: Settings) -> str | None:
    """Run one delivery of a job; returns the terminal state it set, or None if it did not own the job."""
    store = job_store(settings)
    worker_id = new_worker_id()
    claim = store.claim(job_id, worker_id)
    if claim is None:
        log.info("job %s: not claimable (running elsewhere, finished, cancelled or deleted); skipped", job_id)
        return None
    log.info("job %s: claimed by %s (attempt %d)", job_id, worker_id, claim.attempts)
    if claim.attempts > settings.max_attempts:
        store.finish(job_id, worker_id, "failed", error_code="too_many_attempts",
                     error_message=f"gave up after {claim.attempts - 1} attempts (max_attempts="
                                   f"{settings.max_attempts})")
        return "failed"
    lease = LeaseKeeper(store, job_id, worker_id)
    lease.start()
    callbacks = JobCallbacks(store, job_id, worker_id, lease)
    try:
        return _run_claimed(store, claim, settings, callbacks)
    finally:
        lease.stop()


def _run_claimed(store: JobStore, claim, settings: Settings, callbacks: JobCallbacks) -> str | None:
    job_id, worker_id = claim.job_id, claim.worker_id
    from kdcore.errors import Cancelled, KDError  # light; kdcore.run imports torch lazily

    out_dir = settings.job_dir(job_id)
    store.add_log(job_id, f"attempt {claim.attempts} on worker {worker_id}")
    try:
        import kdcore
        from kdcore.spec import JobSpec

        spec = JobSpec.model_validate(claim.spec)
        results = kdcore.run(spec, out_dir, callbacks, cache_dir=settings.cache_dir,
                             uploads_dir=settings.datasets_dir, weights_dir=settings.models_dir,
                             data_dir=settings.data_dir)
    except Cancelled:
        if callbacks.lease.lost.is_set():
            log.warning("job %s: stopped after losing its claim; the new owner continues it", job_id)
            return None
        if shutdown_requested.is_set() and store.release(job_id, worker_id, f"worker {worker_id} shut down"):
            enqueue_job(job_id, settings)  # resumes from its checkpoint on the next free worker
            return None
        return "cancelled" if store.finish(job_id, worker_id, "cancelled") else None
    except KDError as exc:
        return "failed" if store.finish(job_id, worker_id, "failed", error_code=exc.code,
                                        error_message=exc.message) else None
    except Exception as exc:
        log.exception("job %s failed", job_id)  # the traceback stays in the server log: internals
        store.add_log(job_id, _one_line(exc), level="error")
        return "failed" if store.finish(job_id, worker_id, "failed", error_code="internal_error",
                                        error_message=_one_line(exc)) else None
    summary = summarize_results(results if isinstance(results, dict) else {})
    ok = store.finish(job_id, worker_id, "succeeded", results_summary=summary,
                      artifacts=collect_artifacts(out_dir))
    return "succeeded" if ok else None


class DropUnclaimable(Request):
    """A kd.run_job message in the worker's main process: one whose job cannot be claimed (cancelled,
    finished, deleted, or running under a live lease elsewhere) is acknowledged and dropped here, before
    the pool, so it costs one database read instead of a fresh pool child importing torch. Celery asks
    `revoked()` just before handing a request to the pool (the per-task Request subclass it builds
    overrides execute_using_pool, not this). Whatever makes a job claimable again sends a new message."""

    def revoked(self) -> bool:
        if super().revoked():
            return True
        job_id = self.args[0] if self.args else None
        try:
            if not isinstance(job_id, str) or job_store(get_settings()).claimable(job_id):
                return False
        except Exception:  # database blip: let the pool child's claim decide
            log.warning("job %s: claimable check failed; passing the message on", job_id, exc_info=True)
            return False
        log.info("job %s: not claimable (cancelled, finished, deleted or running elsewhere); message "
                 "dropped before the pool", job_id)
        task_ready(self)
        self.acknowledge()
        self._already_revoked = True
        return True


@shared_task(name=TASK_NAME, Request=DropUnclaimable)
def run_job(job_id: str) -> None:
    # Installed per task, in the pool child's main thread: billiard puts its own SIGTERM handler (exit at
    # once) in place after worker_process_init, which is right for an idle child, not for a training one.
    signal.signal(signal.SIGTERM, lambda *_: shutdown_requested.set())
    execute_job(job_id, get_settings())


def _preimport() -> None:
    try:
        import kdcore.pipeline  # noqa: F401
    except Exception:  # the task reports the real error when it runs
        log.debug("pre-import of kdcore.pipeline failed", exc_info=True)


@worker_process_init.connect
def _init_pool_child(**_: Any) -> None:
    """A fresh child imports torch and kdcore.pipeline while it waits for a job (seconds saved per job
    with max_tasks_per_child=1); in a thread, as Celery gives a child 4 s to report ready. Importing
    torch does not initialise CUDA."""
    log.info("pool child %d started", os.getpid())
    threading.Thread(target=_preimport, name="preimport", daemon=True).start()


@worker_shutting_down.connect
def _ask_children_to_hand_back(**_: Any) -> None:
    """Warm shutdown (SIGTERM, e.g. docker stop) would wait for an hours-long job: ask the pool child
    to stop at its next cancel poll instead (run_job's SIGTERM handler); its job goes back to the queue
    and resumes elsewhere. An idle child is left to the pool's own shutdown (signalled, it would die at
    once and the pool would start another one while shutting down). An idle worker has nothing to hand
    back: it shuts down cold, which skips the pool's slow join (seconds) so that it exits promptly."""
    if not worker_state.active_requests and not worker_state.reserved_requests:
        worker_state.should_terminate = True
        return
    for child in billiard.process.active_children():
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signal.SIGTERM)
