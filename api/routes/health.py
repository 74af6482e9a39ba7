"""Liveness (/healthz), readiness (/readyz: database and broker) and Prometheus /metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from api.deps import SettingsDep
from api.problems import Problem, ProblemError
from kdservice.queue import check_broker

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: database and broker reachable",
            responses={503: {"model": Problem, "content": {"application/problem+json": {}}}})
def readyz(request: Request, settings: SettingsDep) -> dict[str, object]:
    checks: dict[str, str] = {}
    errors = []
    try:
        with request.app.state.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        errors.append({"field": "database", "message": f"{type(exc).__name__}: {exc}"[:300]})
    try:
        check_broker(settings)
        checks["broker"] = "ok"
    except Exception as exc:
        errors.append({"field": "broker", "message": f"{type(exc).__name__}: {exc}"[:300]})
    if errors:
        raise ProblemError(503, "not ready: " + ", ".join(e["field"] for e in errors) + " unreachable",
                           errors=errors, kind="not-ready")
    return {"status": "ready", "checks": checks}


@router.get("/metrics", summary="Prometheus metrics: jobs by state, queue depth, job durations",
            response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics_registry), media_type=CONTENT_TYPE_LATEST)
