"""Liveness (/healthz), readiness (/readyz: database, broker, a live worker) and Prometheus /metrics."""

from __future__ import annotations

from datetime import timedelta

import anyio
from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.orm import Session

from api.deps import DatabaseDep, SettingsDep
from api.problems import Problem, ProblemError
from kdservice import workers
from kdservice.queue import check_broker
from kdservice.settings import Settings
from kdservice.tables import utcnow

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:  # async: answers from the event loop even when every thread is busy
    return {"status": "ok"}


def _check_database_and_workers(session: Session, settings: Settings) -> str | None:
    """Raises if the database is unreachable; returns what is wrong with the workers, or None."""
    session.execute(text("SELECT 1"))
    seen = workers.last_seen(session)
    if seen is None:
        return "no worker has started (start one: python -m worker)"
    age = utcnow() - seen
    if age > timedelta(seconds=settings.worker_stale_seconds):
        return (f"no worker seen for {age.total_seconds():.0f} s (KD_WORKER_STALE_SECONDS="
                f"{settings.worker_stale_seconds:g})")
    return None


@router.get("/readyz", summary="Readiness: database and broker reachable, a worker seen recently",
            description="503 problem naming each failed check in `errors[].field`: `database`, `broker` "
            "(unreachable, or the filesystem broker's folders are gone) or `workers` (no worker heartbeat "
            "within KD_WORKER_STALE_SECONDS).",
            responses={503: {"model": Problem, "content": {"application/problem+json": {}}}})
async def readyz(request: Request, settings: SettingsDep, db: DatabaseDep) -> dict[str, object]:
    checks: dict[str, str] = {}
    errors = []
    try:
        worker_problem = await db.run(lambda session: _check_database_and_workers(session, settings))
        checks["database"] = "ok"
        if worker_problem:
            errors.append({"field": "workers", "message": worker_problem})
        else:
            checks["workers"] = "ok"
    except ProblemError:
        raise
    except Exception as exc:
        errors.append({"field": "database", "message": f"{type(exc).__name__}: {exc}"[:300]})
    try:
        await anyio.to_thread.run_sync(check_broker, settings)
        checks["broker"] = "ok"
    except Exception as exc:
        errors.append({"field": "broker", "message": f"{type(exc).__name__}: {exc}"[:300]})
    if errors:
        raise ProblemError(503, "not ready: " + ", ".join(e["field"] for e in errors), errors=errors,
                           kind="not-ready")
    return {"status": "ready", "checks": checks}


@router.get("/metrics", summary="Prometheus metrics: jobs by state, queue depth, job durations",
            response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics_registry), media_type=CONTENT_TYPE_LATEST)
