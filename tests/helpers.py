"""Helpers and fixtures shared by the service tests: settings on a temp folder, job rows, a real uvicorn
server in a thread (`api_server`, per module), real `uvicorn` + `python -m worker` processes (`Service`),
and small archives of images. Import what a test module needs: `from tests.helpers import api_server`.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import re
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI
from PIL import Image

from api.app import create_app
from kdservice.db import make_engine, make_sessionmaker, sessions, upgrade_database
from kdservice.security import create_api_key
from kdservice.settings import Settings
from kdservice.states import TERMINAL_STATES
from tests.paths import REPO

# Seconds of training, not minutes: a subset of digits (8x8 images), resnet8 everywhere, one corruption cell.
TINY_SPEC: dict[str, Any] = {
    "name": "tiny",
    "dataset": {"source": "digits", "subset": 320, "test_subset": 100},
    "teacher": {"arch": "resnet8", "train": {"epochs": 1, "batch_size": 64, "lr": 0.1}},
    "student": {"arch": "resnet8"},
    "distill": {"method": "kd"},
    "train": {"epochs": 2, "batch_size": 64, "lr": 0.1},
    "baseline": False,
    "evaluate": {"corruptions": ["gaussian_noise"], "severities": [1], "max_images": 50, "latency": False},
    "export": ["safetensors"],
}


def tiny_spec(name: str = "tiny", epochs: int = 2, teacher_epochs: int = 1, baseline: bool = False,
              subset: int = 320) -> dict[str, Any]:
    spec = {**TINY_SPEC, "name": name, "baseline": baseline}
    spec["dataset"] = {**TINY_SPEC["dataset"], "subset": subset}
    teacher_recipe = {**TINY_SPEC["teacher"]["train"], "epochs": teacher_epochs}
    spec["teacher"] = {**TINY_SPEC["teacher"], "train": teacher_recipe}
    spec["train"] = {**TINY_SPEC["train"], "epochs": epochs}
    return spec


def service_env(var_dir: Path, **overrides: Any) -> dict[str, str]:
    """KD_ environment of a service on var_dir: SQLite + the filesystem broker unless overridden."""
    env = {
        "KD_ARTIFACT_DIR": str(var_dir),
        "KD_DATABASE_URL": f"sqlite:///{var_dir}/kd.db",
        "KD_BROKER_URL": "filesystem://",
    }
    env.update({f"KD_{k.upper()}": str(v) for k, v in overrides.items()})
    return env


def service_settings(tmp_path: Path, monkeypatch, **overrides: Any):
    """Point Settings at tmp_path (env + cache clear), migrate the database, return the Settings."""
    from kdservice.settings import get_settings

    for key, value in service_env(tmp_path, **overrides).items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    settings = get_settings()
    upgrade_database(settings.database_url)
    return settings


def insert_job(settings, spec: dict[str, Any] | None = None, **fields: Any) -> str:
    """A queued job row (with its owner's api key row), as the API would create it."""
    from kdservice.tables import ApiKey, Job, JobTransition, utcnow

    now = utcnow()
    job_id = uuid.uuid4().hex
    with sessions(settings.database_url).begin() as session:
        key = ApiKey(name="test", key_hash=hashlib.sha256(job_id.encode()).hexdigest(), prefix=job_id[:8],
                     created_at=now)
        session.add(key)
        session.flush()
        row = dict(id=job_id, owner_id=key.id, name=(spec or TINY_SPEC)["name"], spec=spec or TINY_SPEC,
                   state="queued", cancel_requested=False, attempts=0, created_at=now, queued_at=now,
                   updated_at=now)
        row.update(fields)
        session.add(Job(**row))
        session.flush()
        session.add(JobTransition(job_id=job_id, state="queued", at=now))
    return job_id


def finish_with_files(store: Any, job_id: str, worker: str, out: Path, files: dict[str, bytes],
                      results_summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The end of a worker's run, played with its real JobStore: write `files` into `out`, then finish the
    claimed job_id as succeeded with them as its artifacts. Returns the artifact rows."""
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, data in files.items():
        (out / name).write_bytes(data)
        rows.append({"name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                     "path": str(out / name)})
    assert store.finish(job_id, worker, "succeeded", results_summary=results_summary, artifacts=rows)
    return rows


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_process(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """A child in its own process group (so a test can SIGKILL it with its pool children)."""
    log = log_path.open("ab")
    return subprocess.Popen(args, cwd=REPO, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def start_worker(env: dict[str, str], log_path: Path, name: str = "w1") -> subprocess.Popen:
    return start_process([sys.executable, "-m", "worker", "-n", f"{name}@%h"], env, log_path)


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.3, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


# --- a running service: uvicorn + `python -m worker` processes on a temp var dir

class Service:
    def __init__(self, var_dir: Path, env: dict[str, str]):
        self.var_dir, self.env = var_dir, env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []
        self.key = ""
        self.http: httpx.Client | None = None

    def start_api(self) -> None:
        settings = Settings(**{k[3:].lower(): v for k, v in self.env.items() if k.startswith("KD_")})
        upgrade_database(settings.database_url)
        with make_sessionmaker(make_engine(settings.database_url)).begin() as session:
            _, self.key = create_api_key(session, "e2e")
        from scripts.serve import api_command  # the command `make up` runs

        settings = settings.model_copy(update={"host": "127.0.0.1", "port": self.port})
        self.api = start_process([sys.executable, *api_command(settings)], self.env, self.var_dir / "api.log")
        auth = {"Authorization": f"Bearer {self.key}"}
        self.http = httpx.Client(base_url=self.url, headers=auth, timeout=30)

        def healthy() -> bool:
            assert self.api.poll() is None, self.logs("api.log")
            try:
                return self.http.get("/healthz").status_code == 200
            except httpx.TransportError:
                return False

        wait_until(healthy, 60, what="the API to answer /healthz")

    def start_worker(self, name: str, **env: str) -> subprocess.Popen:
        proc = start_worker({**self.env, **env}, self.var_dir / f"worker-{name}.log", name)
        self.workers.append(proc)
        return proc

    def logs(self, name: str, tail: int | None = 4000) -> str:
        path = self.var_dir / name
        text = path.read_text(errors="replace") if path.exists() else ""
        return text[-tail:] if tail else text

    def submit(self, spec: dict[str, Any]) -> str:
        response = self.http.post("/v1/jobs", json=spec)
        assert response.status_code == 201, response.text
        return response.json()["id"]

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.http.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def wait_terminal(self, job_id: str, timeout: float) -> dict[str, Any]:
        def done() -> dict | None:
            job = self.job(job_id)
            return job if job["state"] in TERMINAL_STATES else None

        try:
            return wait_until(done, timeout, 0.5, f"job {job_id} to finish")
        except AssertionError:
            worker_logs = "\n".join(self.logs(p.name) for p in self.var_dir.glob("worker-*.log"))
            raise AssertionError(f"job {job_id} did not finish: {self.job(job_id)}\n{worker_logs}") from None

    def stop(self) -> None:
        for proc in self.workers:
            stop_process(proc)
        if self.api is not None:
            stop_process(self.api)
        if self.http is not None:
            self.http.close()


def running_states(job: dict[str, Any]) -> list[str]:
    return [t["state"] for t in job["transitions"]]


# --- the API in a thread (no worker): one server per test module

@dataclass
class ApiServer:
    base_url: str
    settings: Settings

    def new_key(self, name: str = "tester") -> str:
        """A new API key (owner) straight in the database, as `kd admin create-key` makes it."""
        engine = make_engine(self.settings.database_url)
        try:
            with make_sessionmaker(engine).begin() as session:
                return create_api_key(session, name)[1]
        finally:
            engine.dispose()

    def client(self, key: str | None = None, **kwargs) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=30.0, **kwargs)


def serve(settings: Settings, app: FastAPI | None = None) -> Iterator[ApiServer]:
    """Run create_app(settings) under uvicorn in a thread (lifespan: migrations) until the generator ends."""
    port = free_port()
    config = uvicorn.Config(app or create_app(settings), host="127.0.0.1", port=port, log_level="warning",
                            lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the API server did not start")
        time.sleep(0.02)
    try:
        yield ApiServer(f"http://127.0.0.1:{port}", settings)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def module_settings(tmp_path_factory: pytest.TempPathFactory, **overrides) -> Settings:
    root = tmp_path_factory.mktemp("kdservice")
    values = {"database_url": f"sqlite:///{root / 'kd.db'}", "broker_url": "filesystem://",
              "events_poll_seconds": 0.05, **overrides}
    return Settings(artifact_dir=root, **values)


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    yield from serve(module_settings(tmp_path_factory))


def png_bytes(colour: tuple[int, int, int], size: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def image_folder_files(classes: dict[str, int], prefix: str = "") -> dict[str, bytes]:
    """{archive path: PNG bytes}: `count` small images per class, each class its own colour."""
    files = {}
    for c, (name, count) in enumerate(classes.items()):
        for i in range(count):
            files[f"{prefix}{name}/{i}.png"] = png_bytes(((60 * c) % 256, (17 * i) % 256, 200))
    return files


def zip_bytes(files: dict[str, bytes], compress: bool = False) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def targz_bytes(files: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            archive.addfile(info)
    return buffer.getvalue()


def assert_problem(response: httpx.Response, status: int, field: str | None = None) -> dict:
    """The response is an RFC 9457 problem with this status (and names this field)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status and body["title"] and body["detail"] and body["type"]
    if field is not None:
        assert field in [e["field"] for e in body["errors"]], body
    return body



# --- what a client may never see: server paths

_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/>])/(?!v1/)[\w.-]+(?:/[\w.-]*)+")


def assert_no_server_path(text: str, settings: Settings) -> None:
    """text names neither the service's folders nor any absolute path (API routes such as /v1/jobs aside)."""
    for folder in (settings.artifact_dir, settings.data_dir):
        assert str(folder) not in text, f"{folder} leaked: {text}"
    assert not _ABSOLUTE_PATH.findall(text), f"absolute path leaked: {text}"


# --- raw HTTP/1.1, for what httpx will not send (a body that never finishes)

def send_head(base_url: str, method: str, path: str, headers: dict[str, str], body: bytes = b"",
              timeout: float = 10) -> socket.socket:
    """Open a connection and send a request head plus the first body bytes; the caller reads or closes."""
    host, port = base_url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=timeout)
    head = [f"{method} {path} HTTP/1.1", f"Host: {host}", *(f"{k}: {v}" for k, v in headers.items())]
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
    return sock


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """(status, headers lower-cased, body) of the answer on sock (Content-Length bodies)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers.get("content-length", 0)):
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def write_tiny_cifar10(root: Path, per_batch: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """The CIFAR-10 python format: pickled dicts of uint8 rows (R plane, G plane, B plane)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows, labels = [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        y = [int(v) for v in rng.integers(0, 10, per_batch)]
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": y}, f)
        rows.append(data)
        labels.append(y)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f)
    return np.concatenate(rows), np.concatenate(labels)
