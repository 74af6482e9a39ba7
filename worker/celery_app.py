"""The worker's Celery app: the service's queue configuration (kdservice.queue) plus this package's task.

`celery -A worker.celery_app worker` and `python -m worker` run `celery_app`.
"""

from __future__ import annotations

from kdservice.queue import is_filesystem_broker, make_celery_app
from kdservice.settings import get_settings
from worker import fsbroker

_settings = get_settings()
celery_app = make_celery_app(_settings, include=("worker.tasks",))
if is_filesystem_broker(_settings):
    celery_app.conf.broker_transport = fsbroker.Transport  # recreates vanished broker folders
