"""The worker's Celery app: the service's queue configuration (kdservice.queue) plus this package's task.

`celery -A worker.celery_app worker` and `python -m worker` run `celery_app`.
"""

from __future__ import annotations

from kdservice.queue import make_celery_app
from kdservice.settings import get_settings

celery_app = make_celery_app(get_settings(), include=("worker.tasks",))
