"""GET /v1/jobs/{id}/events: Server-Sent Events (state, progress, log) until the job ends.

The stream polls the job row (every KD_EVENTS_POLL_SECONDS) rather than a pub/sub channel, so it
works the same with SQLite and PostgreSQL and survives API restarts. Each event's `id` is the last
log id sent: a client reconnecting with Last-Event-ID gets only newer log lines.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Header, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from api.deps import OwnerDep, SessionDep
from api.routes.jobs import ERRORS, get_owned_job
from api.schemas import LogEvent, ProgressEvent, StateEvent
from kdservice.states import TERMINAL_STATES
from kdservice.tables import Job, JobLog

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
LOG_BATCH = 500


EVENT_DATA = {"state": StateEvent, "progress": ProgressEvent, "log": LogEvent}


def event_schema() -> dict[str, Any]:
    """One event of the stream (OpenAPI's `itemSchema` of text/event-stream, as FastAPI writes it): its `event`
    name, its `id` (the last log id sent) and its `data`, a JSON document of that event's model."""
    def one(name: str, model: type[BaseModel]) -> dict[str, Any]:
        data = model.model_json_schema(ref_template="#/components/schemas/{model}")
        data.pop("$defs", None)  # JobError and Progress: components already (JobDetail has them)
        return {"type": "object", "required": ["event", "id", "data"], "properties": {
            "event": {"const": name}, "id": {"type": "string", "pattern": "^[0-9]+$"},
            "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": data}}}
    return {"oneOf": [one(name, model) for name, model in EVENT_DATA.items()]}


def _snapshot(sessions: sessionmaker[Session], job_id: str, after_log: int) -> tuple[dict | None, list[dict]]:
    with sessions() as session:
        job = session.get(Job, job_id)
        if job is None:
            return None, []
        state = {"state": job.state, "phase": job.phase, "progress": job.progress,
                 "error": {"code": job.error_code, "message": job.error_message} if job.error_code else None}
        logs = session.scalars(select(JobLog).where(JobLog.job_id == job_id, JobLog.id > after_log)
                               .order_by(JobLog.id).limit(LOG_BATCH)).all()
        return state, [{"id": r.id, "at": r.at.isoformat(), "level": r.level, "message": r.message}
                       for r in logs]


def _event(name: str, data: Any, event_id: int) -> str:
    return f"id: {event_id}\nevent: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def job_events(request: Request, job_id: str, after_log: int,
                     frame: Callable[[str, Any, int], str] = _event) -> AsyncIterator[str]:
    """The stream's text: `frame(name, data, last log id)` writes each event (the pages' jobs list tags
    every event with its job and leaves out log lines); comment lines are heartbeats."""
    settings = request.app.state.settings
    sessions = request.app.state.sessions
    last_state: tuple | None = None
    last_progress: Any = None
    last_sent = time.monotonic()
    yield "retry: 2000\n\n"
    while True:
        job, logs = await anyio.to_thread.run_sync(_snapshot, sessions, job_id, after_log)
        if job is None:  # deleted while watched
            yield frame("state", {"state": "deleted", "phase": None, "error": None}, after_log)
            return
        chunks = []
        if (job["state"], job["phase"]) != last_state:
            last_state = (job["state"], job["phase"])
            chunks.append(("state", {k: job[k] for k in ("state", "phase", "error")}))
        if job["progress"] is not None and job["progress"] != last_progress:
            last_progress = job["progress"]
            chunks.append(("progress", {k: job[k] for k in ("state", "phase", "progress")}))
        for entry in logs:
            after_log = entry["id"]
            chunks.append(("log", entry))
        for name, data in chunks:
            yield frame(name, data, after_log)
        now = time.monotonic()
        if chunks:
            last_sent = now
        elif now - last_sent >= settings.events_heartbeat_seconds:
            last_sent = now
            yield ": keep-alive\n\n"
        if job["state"] in TERMINAL_STATES and len(logs) < LOG_BATCH:
            return
        if await request.is_disconnected():
            return
        await anyio.sleep(settings.events_poll_seconds)


@router.get(
    "/{job_id}/events", summary="Live events of a job (Server-Sent Events)",
    description="`event: state` {state, phase, error}, `event: progress` {state, phase, progress}, "
    "`event: log` {id, at, level, message}; ends after a terminal state (or a state `deleted`: the job was "
    "deleted while watched). Comments are heartbeats.",
    # StreamingResponse has no media type of its own: the 200 answer is text/event-stream only.
    response_class=StreamingResponse, responses={200: {"content": {"text/event-stream": {
        "itemSchema": event_schema()}}}, **ERRORS},
)
def stream_events(
    job_id: str, request: Request, owner: OwnerDep, session: SessionDep,
    last_event_id: Annotated[int | None, Header(ge=0, le=2**63 - 1, description="resume after this log id")] = None,
) -> StreamingResponse:
    job = get_owned_job(session, owner, job_id)
    session.close()  # the stream opens its own short sessions; do not hold this one for hours
    return StreamingResponse(job_events(request, job.id, last_event_id or 0), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
