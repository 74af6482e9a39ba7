"""`python -m worker`: apply migrations, run one Celery worker (queue kd) and, once it is ready, its sweeper.

Extra arguments go to `celery worker` (e.g. `python -m worker -n gpu1@%h`). One job at a time per
worker process (prefork pool, concurrency 1, a fresh child per job); start one worker per GPU and
pin it with CUDA_VISIBLE_DEVICES. KD_LOG_LEVEL (default warning) sets the log level; Celery's start-up
banner and its warning about running as root are shown at info and debug only.
"""

from __future__ import annotations

import logging
import sys
import warnings
from typing import Any

from celery.exceptions import SecurityWarning
from celery.signals import worker_ready, worker_shutdown

from kdservice.db import upgrade_database
from kdservice.queue import QUEUE
from kdservice.settings import get_settings
from worker.celery_app import celery_app
from worker.sweeper import Sweeper

_sweepers: list[Sweeper] = []


@worker_ready.connect
def _start_sweeper(sender: Any = None, **_: Any) -> None:
    """The heartbeat starts when the consumer is ready: a worker row means "takes jobs now"."""
    sweeper = Sweeper(get_settings(), worker_id=sender.hostname)
    sweeper.start()
    _sweepers.append(sweeper)


@worker_shutdown.connect
def _stop_sweeper(**_: Any) -> None:
    while _sweepers:
        _sweepers.pop().stop()


def celery_args(level: str, argv: list[str]) -> list[str]:
    quiet = [] if level in ("debug", "info") else ["--quiet"]  # --quiet: no banner
    return [*quiet, "worker", "-Q", QUEUE, "-c", "1", "--pool", "prefork", "-l", level.upper(), *argv]


def main(argv: list[str] | None = None) -> int:
    settings = get_settings()
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings.log_level not in ("debug", "info"):
        # Seven lines at every start as root (containers, CI); shown at info and debug.
        warnings.filterwarnings("ignore", category=SecurityWarning)
    upgrade_database(settings.database_url)
    try:
        celery_app.worker_main(celery_args(settings.log_level, argv or []))
    finally:
        _stop_sweeper()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
