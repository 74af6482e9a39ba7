"""`python -m worker`: apply migrations, start the lease sweeper, run one Celery worker (queue kd).

Extra arguments go to `celery worker` (e.g. `python -m worker -n gpu1@%h`). One job at a time per
worker process (prefork pool, concurrency 1, a fresh child per job); start one worker per GPU and
pin it with CUDA_VISIBLE_DEVICES.
"""

from __future__ import annotations

import logging
import sys

from kdservice.db import upgrade_database
from kdservice.queue import QUEUE
from kdservice.settings import get_settings
from worker.celery_app import celery_app
from worker.sweeper import Sweeper


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    upgrade_database(settings.database_url)
    sweeper = Sweeper(settings)
    sweeper.start()
    args = ["worker", "-Q", QUEUE, "-c", "1", "--pool", "prefork", "-l", "info", *(argv or [])]
    try:
        celery_app.worker_main(args)
    finally:
        sweeper.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
