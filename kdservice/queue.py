"""The job queue: Celery configuration, the producer (enqueue_job) and the queue depth.

No app is built at import: `producer(settings)` builds one per (broker_url, artifact_dir) on first use, so
tests and the API pick up the current settings. The worker builds its consumer app with the same
`make_celery_app` (worker/celery_app.py), adding its task module; nothing here imports the worker.
"""

from __future__ import annotations

import threading
from pathlib import Path

from celery import Celery
from kombu import Queue

from kdservice.settings import Settings, get_settings

QUEUE = "kd"
TASK_NAME = "kd.run_job"
# Redis redelivers an unacknowledged task after this long. Training runs can outlast any value, so
# this is only kept generous to avoid pointless redeliveries; the job row's lease (worker/tasks.py)
# is what stops a second concurrent run. See docs/OPERATIONS.md.
REDIS_VISIBILITY_TIMEOUT_S = 12 * 3600

_apps: dict[tuple[str, str], Celery] = {}
_apps_lock = threading.Lock()


def broker_folders(settings: Settings) -> dict[str, Path]:
    """Folders of the server-less "filesystem://" broker (kombu needs all three to exist)."""
    root = settings.broker_dir
    return {"queue": root / "queue", "processed": root / "processed", "control": root / "control"}


def is_filesystem_broker(settings: Settings) -> bool:
    return settings.broker_url.startswith("filesystem://")


def ensure_broker_folders(settings: Settings) -> list[str]:
    """Create the filesystem broker's folders that are missing; returns their names (queue, ...)."""
    if not is_filesystem_broker(settings):
        return []
    created = []
    for name, folder in broker_folders(settings).items():
        if not folder.is_dir():
            folder.mkdir(parents=True, exist_ok=True)
            created.append(name)
    return created


def _transport_options(settings: Settings) -> dict:
    if is_filesystem_broker(settings):
        folders = broker_folders(settings)
        ensure_broker_folders(settings)
        # in == out: producers (API) and consumers (workers) on this machine share one folder.
        return {
            "data_folder_in": str(folders["queue"]),
            "data_folder_out": str(folders["queue"]),
            "processed_folder": str(folders["processed"]),
            "control_folder": str(folders["control"]),
        }
    if settings.broker_url.startswith(("redis://", "rediss://")):
        return {"visibility_timeout": REDIS_VISIBILITY_TIMEOUT_S}
    return {}


def make_celery_app(settings: Settings, include: tuple[str, ...] = ()) -> Celery:
    """The Celery app for settings; the worker passes its task module in `include`."""
    # An explicit host for the filesystem transport, which needs none: kombu warns at every start otherwise.
    broker = "filesystem://localhost//" if is_filesystem_broker(settings) else settings.broker_url
    app = Celery("kd", broker=broker, include=list(include))
    app.conf.update(
        broker_transport_options=_transport_options(settings),
        broker_connection_retry_on_startup=True,
        task_ignore_result=True,  # results live in the database, not in a result backend
        task_default_queue=QUEUE,
        task_queues=[Queue(QUEUE, routing_key=QUEUE)],
        task_routes={TASK_NAME: {"queue": QUEUE}},
        task_serializer="json",
        accept_content=["json"],
        # A job is acknowledged only after it finished; a dead worker's task goes back to the queue.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # A broker blip must not kill an hours-long training run: the job row's lease protects it.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_concurrency=1,
        # A fresh child per job: torch/CUDA state (and GPU memory) is released when the job ends.
        worker_max_tasks_per_child=1,
        worker_hijack_root_logger=False,
    )
    return app


def producer(settings: Settings | None = None) -> Celery:
    """The app that sends messages (and reads the queue depth) for these settings, built once."""
    settings = settings or get_settings()
    key = (settings.broker_url, str(settings.artifact_dir))
    with _apps_lock:
        if key not in _apps:
            _apps[key] = make_celery_app(settings)
        return _apps[key]


def enqueue_job(job_id: str, settings: Settings | None = None) -> None:
    """Queue one run of a job. Safe to call twice: the worker's claim decides who runs it."""
    producer(settings).send_task(TASK_NAME, args=[job_id], queue=QUEUE, routing_key=QUEUE)


def waiting_messages(settings: Settings | None = None) -> int:
    """Messages waiting in the kd queue; those a worker has taken (and not yet acknowledged) do not count."""
    with producer(settings).connection_for_write() as connection:
        return connection.default_channel.queue_declare(queue=QUEUE, durable=True, auto_delete=False).message_count


def check_broker(settings: Settings | None = None) -> None:
    """Raise if the broker cannot be reached, or the filesystem broker's folders are gone (readiness)."""
    settings = settings or get_settings()
    if is_filesystem_broker(settings):
        missing = [name for name, folder in broker_folders(settings).items() if not folder.is_dir()]
        if missing:
            raise FileNotFoundError(f"filesystem broker folder(s) {', '.join(f'broker/{m}/' for m in missing)} "
                                    "missing; a running worker recreates them within seconds")
    with producer(settings).connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, timeout=3)
