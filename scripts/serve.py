"""`make up`: migrate, make sure the local user has an API key, run the API and worker(s) until Ctrl-C.

The same entry points as production (uvicorn api.app:create_app, python -m worker); KD_DATABASE_URL,
KD_BROKER_URL and KD_ARTIFACT_DIR switch to PostgreSQL, Redis and shared storage. Each child runs in
its own process group; Ctrl-C or SIGTERM stops them all (SIGTERM, then SIGKILL after a grace period).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere

from kdservice.db import make_engine, make_sessionmaker, upgrade_database  # noqa: E402
from kdservice.security import create_api_key, find_api_key  # noqa: E402
from kdservice.settings import Settings, get_settings  # noqa: E402

GRACE_SECONDS = 20  # a worker hands its running job back at the next cancel poll (seconds)


def ensure_local_key(settings: Settings) -> str:
    """The key in <artifact_dir>/local-api-key if the database knows it; else a new one, stored there."""
    key_file = Path(settings.artifact_dir) / "local-api-key"
    sessions = make_sessionmaker(make_engine(settings.database_url))
    if key_file.is_file():
        key = key_file.read_text().strip()
        with sessions() as session:
            if find_api_key(session, key) is not None:
                return key
    with sessions.begin() as session:
        _, key = create_api_key(session, "local")
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key_file.touch(mode=0o600)
    key_file.write_text(key + "\n")
    return key


def start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *args], cwd=REPO, start_new_session=True)


def stop_all(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_SECONDS
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_healthy(url: str, api: subprocess.Popen, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and api.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
                if response.status == 200:
                    return True
        except OSError:
            time.sleep(0.3)
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the KD service (API + workers) until Ctrl-C")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (one job each)")
    parser.add_argument("--api-only", action="store_true", help="no worker (workers run elsewhere)")
    args = parser.parse_args(argv)

    settings = get_settings()
    upgrade_database(settings.database_url)
    key = ensure_local_key(settings)
    url = f"http://{settings.host}:{settings.port}"

    stopping = False

    def on_signal(signum, _frame) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    procs = [start(["-m", "uvicorn", "api.app:create_app", "--factory", "--host", settings.host,
                    "--port", str(settings.port)])]
    for i in range(0 if args.api_only else args.workers):
        procs.append(start(["-m", "worker", "-n", f"worker{i + 1}@%h"]))
    try:
        if not wait_healthy(url, procs[0]) and not stopping:
            print("serve: the API did not come up (see its output above)", file=sys.stderr)
            return 1
        if not stopping:
            print(f"\nKD service: {url}\n  API docs: {url}/docs\n  API key:  {key}\n"
                  f"  try:      export KD_API_URL={url} KD_API_KEY={key}\n"
                  f"            kd submit examples/digits-kd.json --wait\n"
                  f"  data:     {settings.artifact_dir}   (Ctrl-C stops)\n", flush=True)
        while not stopping:
            dead = [p for p in procs if p.poll() is not None]
            if dead:
                name = " ".join(dead[0].args[1:3])
                print(f"serve: {name} exited with {dead[0].returncode}; stopping", file=sys.stderr)
                return 1
            time.sleep(0.5)
        return 0
    finally:
        print("serve: stopping...", file=sys.stderr, flush=True)
        stop_all(procs)


if __name__ == "__main__":
    sys.exit(main())
