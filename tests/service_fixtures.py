"""Test helpers for the API: a real uvicorn server in a thread, per test module, on a temp SQLite.

Import the fixtures you need into a test module (`from tests.service_fixtures import api_server`).
"""

from __future__ import annotations

import io
import socket
import tarfile
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from PIL import Image

from api.app import create_app
from api.config import Settings
from api.db import make_engine, make_sessionmaker
from api.security import create_api_key

# Small enough to train on nothing: the API tests never run a worker.
TINY_SPEC = {
    "name": "tiny",
    "dataset": {"source": "digits", "subset": 100, "test_subset": 50},
    "teacher": {"arch": "resnet8", "train": {"epochs": 1, "batch_size": 32}},
    "student": {"arch": "resnet8"},
    "train": {"epochs": 1, "batch_size": 32},
    "evaluate": {"corruptions": ["gaussian_noise"], "severities": [1], "latency": False},
    "export": ["safetensors"],
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    port = _free_port()
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


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
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


def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]
