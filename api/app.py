"""The FastAPI application: `create_app(settings)`; run with `uvicorn api.app:create_app --factory`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI, Request
from prometheus_client import CollectorRegistry
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import Database
from api.metrics import JobCollector
from api.problems import install_problem_handlers, problem_response
from api.routes import datasets, events, health, jobs, models
from api.uploads import UploadTooLarge
from kdservice.db import is_local_sqlite, make_engine, upgrade_database
from kdservice.queue import ensure_broker_folders
from kdservice.settings import Settings, get_settings
from kdservice.tmpfiles import remove_stale

UPLOAD_PATHS = ("/v1/datasets", "/v1/models")
MULTIPART_SLACK = 64 * 1024  # form boundaries and fields around the file
TAGS = [
    {"name": "jobs", "description": "Distillation jobs: submit, watch, cancel, fetch results and artifacts."},
    {"name": "datasets", "description": "Upload ImageFolder archives to train on (`source: upload`)."},
    {"name": "models", "description": "Upload teacher weights (safetensors) for `teacher.weights`."},
    {"name": "health", "description": "Liveness, readiness and Prometheus metrics (no API key needed)."},
]
DESCRIPTION = """Knowledge distillation as a service, with robustness evidence.

Every `/v1` route needs `Authorization: Bearer <API key>` (create one with `kd admin create-key NAME`).
Errors are RFC 9457 `application/problem+json` bodies whose `errors` list names the offending fields.
"""


class UploadSizeLimit:
    """Refuse upload bodies over the limit before they are parsed (413), by header or by counting."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app = app
        self.limit = limit + MULTIPART_SLACK

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in UPLOAD_PATHS:
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            error = UploadTooLarge(self.limit - MULTIPART_SLACK)
            response = problem_response(Request(scope), 413, error.detail, errors=error.errors,
                                        kind=error.kind, headers={"Connection": "close"})
            await response(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise UploadTooLarge(self.limit - MULTIPART_SLACK).as_http()
            return message

        await self.app(scope, limited_receive, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    for folder in (settings.jobs_dir, settings.datasets_dir, settings.models_dir, settings.tmp_dir):
        folder.mkdir(parents=True, exist_ok=True)
    ensure_broker_folders(settings)
    engine = make_engine(settings.database_url, settings.db_pool_size, settings.db_wait_seconds)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await anyio.to_thread.run_sync(upgrade_database, settings.database_url)
        await anyio.to_thread.run_sync(remove_stale, settings.tmp_dir, settings.tmp_max_age_seconds)
        yield
        app.state.db.shutdown()

    app = FastAPI(title="kd-service", version="0.1.0", description=DESCRIPTION, openapi_tags=TAGS,
                  lifespan=lifespan)
    app.state.settings = settings
    app.state.engine = engine
    reader = make_engine(settings.database_url, 1) if is_local_sqlite(settings.database_url) else None
    app.state.db = Database(engine, settings.db_pool_size, settings.db_wait_seconds, reader)
    app.state.sessions = app.state.db.sessions
    app.state.metrics_registry = CollectorRegistry(auto_describe=False)
    app.state.metrics_registry.register(JobCollector(app.state.sessions))
    install_problem_handlers(app)
    app.add_middleware(UploadSizeLimit, limit=settings.upload_max_bytes)
    for router in (jobs.router, events.router, datasets.router, models.router, health.router):
        app.include_router(router)
    return app
