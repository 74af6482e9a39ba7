"""`make up`: migrate, make sure the local user has an API key, run the API and worker(s), keep them running.

The same entry points as production (`python -m api`: uvicorn serving `api.app:create_app`; `python -m worker`);
KD_DATABASE_URL, KD_BROKER_URL and KD_ARTIFACT_DIR switch to PostgreSQL, Redis and shared storage.

Supervision. A child that dies is started again: after 1 s, then 2, 4, ... up to a minute while it keeps
dying within a minute of its start. Only an API that never came up ends `make up` (e.g. its port is
taken). Every child stays in this process's group, so a signal to the group reaches them all, and
carries KD_SUPERVISOR=<token> in its environment, which its own children inherit: what a dead child
leaves behind (the training child of a SIGKILLed worker, uvicorn's worker processes) is found by it
and killed before the restart. Ctrl-C or SIGTERM stops everything: SIGTERM to each child, then
SIGKILL to whatever of the tree is left after GRACE_SECONDS.

Output. Start-up logs at KD_LOG_LEVEL (default warning: no migration lines, no Celery banner, no access
log); the last lines are the URL, the docs link and the API key, printed once the API answers and
every worker has sent its first heartbeat.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import psutil
from sqlalchemy.orm import Session, sessionmaker

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere

from kdservice import workers  # noqa: E402
from kdservice.db import make_engine, make_sessionmaker, upgrade_database  # noqa: E402
from kdservice.security import create_api_key, find_api_key  # noqa: E402
from kdservice.settings import Settings, get_settings  # noqa: E402
from kdservice.tables import utcnow  # noqa: E402

GRACE_SECONDS = 20  # a worker hands its running job back at the next cancel poll (seconds)
STABLE_SECONDS = 60  # a child that ran this long before dying restarts after 1 s again
MAX_BACKOFF_SECONDS = 60
WORKERS_READY_TIMEOUT_S = 120
MARKER = "KD_SUPERVISOR"

log = logging.getLogger("kd.serve")


def api_command(settings: Settings) -> list[str]:
    """Arguments after `python` that run the API as `make up` does (also used by tests and bench/):
    `python -m api`, uvicorn processes of `api.app:create_app` that each listen on their own socket."""
    return ["-m", "api", "--host", settings.host, "--port", str(settings.port),
            "--workers", str(settings.api_workers), "--log-level", settings.log_level]


def ensure_local_key(settings: Settings) -> str:
    """The key in <artifact_dir>/local-api-key if the database knows it; else a new one, stored there."""
    key_file = Path(settings.artifact_dir) / "local-api-key"
    engine = make_engine(settings.database_url)
    sessions = make_sessionmaker(engine)
    try:
        if key_file.is_file():
            key = key_file.read_text().strip()
            with sessions() as session:
                if find_api_key(session, key) is not None:
                    return key
        with sessions.begin() as session:
            _, key = create_api_key(session, "local")
    finally:
        engine.dispose()
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key_file.touch(mode=0o600)
    key_file.write_text(key + "\n")
    return key


def marked_processes(match: str, exact: bool) -> list[psutil.Process]:
    """Processes whose KD_SUPERVISOR equals match (one child's tree) or starts with it (all of ours)."""
    found = []
    for proc in psutil.process_iter():
        try:
            value = proc.environ().get(MARKER) if proc.pid != os.getpid() else None
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        if value and (value == match if exact else value.startswith(match)):
            found.append(proc)
    return found


def kill_all(procs: list[psutil.Process]) -> None:
    for proc in procs:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=5)


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"code {code}"


@dataclass
class Child:
    name: str
    args: list[str]
    proc: subprocess.Popen | None = None
    token: str = ""
    started: float = 0.0
    quick_deaths: int = 0
    restart_at: float | None = None

    def start(self) -> None:
        self.token = f"{os.getpid()}:{self.name}:{time.monotonic_ns()}"
        self.proc = subprocess.Popen([sys.executable, *self.args], cwd=REPO,
                                     env={**os.environ, MARKER: self.token})
        self.started = time.monotonic()
        self.restart_at = None

    def check(self) -> None:
        """Restart the child if it died: leftovers killed, exponential back-off while it keeps dying."""
        now = time.monotonic()
        if self.proc is not None and self.proc.poll() is not None:
            kill_all(marked_processes(self.token, exact=True))
            ran = now - self.started
            self.quick_deaths = self.quick_deaths + 1 if ran < STABLE_SECONDS else 1
            delay = min(MAX_BACKOFF_SECONDS, 2 ** (self.quick_deaths - 1))
            log.warning("serve: %s (pid %d) exited with %s after %.0f s; starting it again in %d s", self.name,
                        self.proc.pid, describe_exit(self.proc.returncode), ran, delay)
            self.proc, self.restart_at = None, now + delay
        elif self.proc is None and self.restart_at is not None and now >= self.restart_at:
            self.start()


def stop_all(children: list[Child]) -> None:
    """SIGTERM to every child; after GRACE_SECONDS, SIGKILL to every process left of ours."""
    for child in children:
        if child.proc is not None and child.proc.poll() is None:
            child.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + GRACE_SECONDS
    for child in children:
        if child.proc is not None:
            try:
                child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
    kill_all(marked_processes(f"{os.getpid()}:", exact=False))
    for child in children:
        if child.proc is not None:
            child.proc.wait()


def api_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def workers_ready(sessions: sessionmaker[Session], settings: Settings, count: int, since: datetime) -> bool:
    """count workers have sent a heartbeat since `since` (their row is written once Celery is ready)."""
    with sessions() as session:
        live = workers.live_workers(session, settings.worker_stale_seconds)
    return sum(w.started_at >= since for w in live) >= count


def key_block(url: str, key: str, settings: Settings, worker_count: int) -> str:
    rule = "=" * 78
    what = f"API + {worker_count} worker{'s' if worker_count != 1 else ''}" if worker_count else "API only"
    return "\n".join([
        "", rule,
        f"KD service running ({what}); data in {settings.artifact_dir}. Ctrl-C stops it.",
        f"Try:      export KD_API_URL={url} KD_API_KEY={key}",
        "          kd submit examples/digits-kd.json --wait",
        f"URL:      {url}",
        f"API docs: {url}/docs",
        f"API key:  {key}",
        rule,
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the KD service (API + workers) until Ctrl-C")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (one job each)")
    parser.add_argument("--api-only", action="store_true", help="no worker (workers run elsewhere)")
    args = parser.parse_args(argv)

    settings = get_settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.propagate = False
    upgrade_database(settings.database_url)
    key = ensure_local_key(settings)
    url = f"http://{settings.host}:{settings.port}"
    worker_count = 0 if args.api_only else args.workers

    stopping = False

    def on_signal(signum, _frame) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    since = utcnow() - timedelta(seconds=1)
    sessions = make_sessionmaker(make_engine(settings.database_url))
    api = Child("api", api_command(settings))
    children = [api] + [Child(f"worker{i + 1}", ["-m", "worker", "-n", f"worker{i + 1}@%h"])
                        for i in range(worker_count)]
    try:
        api.start()
        deadline = time.monotonic() + 60
        while not api_answers(url):
            if stopping:
                return 0
            if api.proc.poll() is not None or time.monotonic() > deadline:
                log.error("serve: the API did not come up (see its output above)")
                return 1
            time.sleep(0.2)
        for child in children[1:]:
            child.start()
        announced, ready_deadline = False, time.monotonic() + WORKERS_READY_TIMEOUT_S
        while not stopping:
            for child in children:
                child.check()
            if not announced and (workers_ready(sessions, settings, worker_count, since)
                                  or time.monotonic() > ready_deadline):
                print(key_block(url, key, settings, worker_count), flush=True)
                announced = True
            time.sleep(0.5 if announced else 0.2)
        return 0
    finally:
        log.warning("serve: stopping...")
        stop_all(children)


if __name__ == "__main__":
    sys.exit(main())
