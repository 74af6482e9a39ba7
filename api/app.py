"""The FastAPI application: `create_app(settings)`; run with `python -m api` (api/__main__.py) or
`uvicorn api.app:create_app --factory`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from api.deps import Database
from api.metrics import JobCollector, UploadBudgetCollector
from api.middleware import RequestGate
from api.offline_docs import install_offline_docs
from api.problems import document_problems, install_problem_handlers
from api.routes import datasets, events, health, jobs, models
from api.ui import UI_UPLOAD_CHECKS, install_ui, refused_upload
from kdservice.archives import limit_pil_pixels
from kdservice.budget import DiskBudget
from kdservice.db import is_local_sqlite, make_engine, upgrade_database
from kdservice.queue import ensure_broker_folders
from kdservice.settings import Settings, get_settings
from kdservice.tmpfiles import remove_stale

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
                  lifespan=lifespan, docs_url=None, redoc_url=None)  # install_offline_docs serves them
    install_offline_docs(app)
    base_openapi = app.openapi
    app.openapi = lambda: document_problems(base_openapi())  # type: ignore[method-assign]
    app.state.settings = settings
    app.state.engine = engine
    sqlite = is_local_sqlite(settings.database_url)
    reader = make_engine(settings.database_url, 1) if sqlite else None
    # SQLite takes one writer at a time: with more slots a process's submits queue in SQLite's busy handler,
    # whose sleeping backoff made the tail (POST at 50 clients: p99 822 -> 151 ms with one slot, BENCHMARKS).
    slots = 1 if sqlite else settings.db_pool_size
    app.state.db = Database(engine, slots, settings.db_wait_seconds, reader)
    app.state.sessions = app.state.db.sessions
    app.state.metrics_registry = CollectorRegistry(auto_describe=False)
    app.state.metrics_registry.register(JobCollector(app.state.sessions))
    upload_budget = DiskBudget(settings.upload_disk_budget_bytes)
    app.state.metrics_registry.register(UploadBudgetCollector(upload_budget))
    install_problem_handlers(app)
    limit_pil_pixels(settings.max_image_pixels)
    app.router.routes.append(jobs.plain_get_job_route())  # ahead of the routers: it is matched first
    routers = (jobs.router, events.router, datasets.router, models.router, health.router)
    for router in routers:
        app.include_router(router)
    ui_routes = install_ui(app)  # the pages under /ui
    routes = [*app.routes, *(route for router in routers for route in router.routes), *ui_routes]
    app.add_middleware(RequestGate, settings=settings, sessions=app.state.sessions,
                       budget=upload_budget, routes=routes, upload_checks=UI_UPLOAD_CHECKS,
                       upload_refusal=refused_upload)
    return app
