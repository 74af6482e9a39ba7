"""`make up` (scripts/serve.py) as a user runs it, on a temp var dir and a free port: what it prints, how it
restarts a dead worker, and that stopping it leaves no process behind."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.helpers import free_port, service_env, tiny_spec, wait_until
from tests.paths import REPO

START_TIMEOUT_S = 180  # API + worker start on two cores shared with other test runs


class Serve:
    """serve.py in its own process group (as a shell runs `make up`), its output read line by line."""

    def __init__(self, var_dir: Path, **env: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = {**os.environ, **service_env(var_dir), "KD_HOST": "127.0.0.1", "KD_PORT": str(self.port), **env}
        if "KD_LOG_LEVEL" not in env:
            full_env.pop("KD_LOG_LEVEL", None)
        self.proc = subprocess.Popen([sys.executable, "scripts/serve.py"], cwd=REPO, env=full_env, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def until_key_block(self) -> list[str]:
        """Every line up to the rule that closes the block ending in `API key: ...`."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=1)
            except queue.Empty:
                assert self.proc.poll() is None, "\n".join(self.output)
                continue
            self.output.append(line)
            if len(self.output) >= 2 and self.output[-2].startswith("API key:") and set(line) == {"="}:
                return list(self.output)
        raise AssertionError("no key block:\n" + "\n".join(self.output))

    def drain(self) -> str:
        """The output printed since the last read."""
        while not self.lines.empty():
            self.output.append(self.lines.get())
        return "\n".join(self.output)

    def tree(self) -> list[psutil.Process]:
        return [psutil.Process(self.proc.pid), *psutil.Process(self.proc.pid).children(recursive=True)]

    def workers(self) -> list[psutil.Process]:
        found = []
        for child in psutil.Process(self.proc.pid).children():
            try:
                if "worker" in child.cmdline() and child.status() != psutil.STATUS_ZOMBIE:
                    found.append(child)
            except psutil.Error:  # gone, or a zombie not reaped yet
                pass
        return found

    def kill_group(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)


def _still_running(processes: list[psutil.Process]) -> list[str]:
    alive = []
    for proc in processes:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(f"{proc.pid} {' '.join(proc.cmdline()[:4])}")
        except psutil.NoSuchProcess:
            pass
    return alive


@pytest.mark.slow
def test_make_up_ends_its_output_with_url_docs_and_key_and_stops_everything(tmp_path):
    serve = Serve(tmp_path)
    try:
        lines = serve.until_key_block()
        url_line, docs_line, key_line = lines[-4:-1]
        assert url_line == f"URL:      {serve.url}"
        assert docs_line == f"API docs: {serve.url}/docs"
        key = key_line.split()[-1]
        opening = len(lines) - 1 - lines[::-1][1:].index(lines[-1]) - 1  # the rule that opens the block
        before = [line for line in lines[:opening] if line.strip()]
        assert len(before) < 15, "\n".join(before)  # no migrations, no Celery banner, no access log
        with httpx.Client(base_url=serve.url, headers={"Authorization": f"Bearer {key}"}) as client:
            assert client.get("/v1/jobs").status_code == 200
            assert client.get("/readyz").status_code == 200  # the block waits for the worker's heartbeat
        tree = serve.tree()
        assert len(tree) >= 4  # serve.py, uvicorn, the worker and its pool child
        serve.proc.send_signal(signal.SIGTERM)
        assert serve.proc.wait(60) == 0
        wait_until(lambda: not _still_running(tree), 10, what="every process of make up to end")
    finally:
        serve.kill_group()


@pytest.mark.slow
def test_a_killed_worker_is_restarted_and_a_group_kill_leaves_nothing(tmp_path):
    serve = Serve(tmp_path, KD_LEASE_SECONDS="5")
    try:
        key = serve.until_key_block()[-2].split()[-1]
        [first] = serve.workers()
        first.kill()  # SIGKILL the worker's main process only
        wait_until(lambda: [w for w in serve.workers() if w.pid != first.pid], 30, 0.2, "a new worker")
        assert serve.proc.poll() is None
        with httpx.Client(base_url=serve.url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
            job_id = client.post("/v1/jobs", json=tiny_spec("after-restart")).json()["id"]
            job = wait_until(lambda: (j := client.get(f"/v1/jobs/{job_id}").json())["state"] in (
                "succeeded", "failed", "cancelled") and j, 300, 0.5, "the job to finish")
        assert job["state"] == "succeeded", job
        assert f"worker1 (pid {first.pid}) exited with signal SIGKILL" in serve.drain()
        tree = serve.tree()
        # What a supervisor (systemd, a CI job's timeout) does: SIGTERM, then SIGKILL of the group.
        serve.proc.send_signal(signal.SIGTERM)
        time.sleep(3)
        serve.kill_group()
        wait_until(lambda: not _still_running(tree), 10, what="every process of make up to end")
    finally:
        serve.kill_group()
