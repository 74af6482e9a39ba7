"""The jobs pages: list (+ its live stream), new job, one job (+ its stream, cancel, delete, downloads)."""

from __future__ import annotations

import json
import secrets
from typing import Annotated
from urllib.parse import urlencode

import anyio
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import Response
from pydantic import ValidationError
from sqlalchemy import select

from api.deps import SessionDep, SettingsDep
from api.problems import ProblemError, validation_errors
from api.ui import service, specform, views
from api.ui.auth import PREFIX, PageOwner, PostOwner
from api.ui.render import PageRoute, page, see_other
from api.ui.streams import JobsEvents
from kdcore.job_files import REPORT
from kdcore.spec import JobSpec
from kdservice.states import JOB_STATES, TERMINAL_STATES
from kdservice.tables import JobLog

router = APIRouter(prefix=PREFIX, route_class=PageRoute, include_in_schema=False)
PAGE_SIZE = 20
LOG_LINES = 300  # the job page shows the latest lines; the stream adds newer ones
REPORT_CSP = ("sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:; font-src data:; "
              "frame-ancestors 'self'")
StateQuery = Annotated[str | None, Query(max_length=20)]


def _state_filter(state: str | None) -> list[str] | None:
    if not state:
        return None
    if state not in JOB_STATES:
        raise ProblemError(422, f"state must be one of {', '.join(JOB_STATES)}", field="state")
    return [state]


@router.get("/jobs")
def jobs_list(request: Request, owner: PageOwner, session: SessionDep, state: StateQuery = None,
              cursor: Annotated[str | None, Query(max_length=500)] = None) -> Response:
    result = service.job_page(session, owner, PAGE_SIZE, cursor, _state_filter(state))
    summaries = service.results_summaries(session, owner, [j.id for j in result.items])
    live = [j.id for j in result.items if j.state not in TERMINAL_STATES]
    base = {"state": state} if state else {}
    return page(request, "jobs.html", {
        "nav": "jobs", "jobs": result.items, "states": JOB_STATES, "state": state or "", "cursor": cursor,
        "headlines": {job_id: views.headline(s) for job_id, s in summaries.items()},
        "stream_url": f"{PREFIX}/jobs/events?{urlencode([('id', i) for i in live])}" if live else None,
        "first_url": f"{PREFIX}/jobs?{urlencode(base)}",
        "next_url": f"{PREFIX}/jobs?{urlencode({**base, 'cursor': result.next_cursor})}"
        if result.next_cursor else None,
    })


@router.get("/jobs/events")
def jobs_events(request: Request, owner: PageOwner, session: SessionDep,
                id: Annotated[list[str], Query(max_length=PAGE_SIZE)]) -> Response:  # noqa: A002
    """One stream for the unfinished jobs a list page shows (each must be the caller's: 404 otherwise)."""
    job_ids = list(dict.fromkeys(service.job(session, owner, job_id).id for job_id in id))
    session.close()  # the stream opens its own short sessions
    return JobsEvents(request, job_ids)


def _new_job_page(request: Request, example: str, form: specform.SpecForm, status: int = 200) -> Response:
    return page(request, "new_job.html", {
        "nav": "new", "examples": list(specform.examples()), "example": example, "form": form,
        "idempotency_key": secrets.token_urlsafe(16)}, status)


@router.get("/jobs/new")
def new_job_form(request: Request, owner: PageOwner,
                 example: Annotated[str | None, Query(max_length=100)] = None) -> Response:
    found = specform.examples()
    if example is not None and example not in found:
        raise ProblemError(404, f"no example named {example!r}; one of {', '.join(found)}", field="example")
    name = example or next(iter(found), "")
    spec = found.get(name) or JobSpec.model_config["json_schema_extra"]["examples"][0]  # type: ignore[index]
    return _new_job_page(request, name, specform.form_from_spec(spec))


@router.post("/jobs/new")
async def submit_job(request: Request, owner: PostOwner, session: SessionDep, settings: SettingsDep) -> Response:
    """Validate as POST /v1/jobs does (JobSpec, then the API's reference checks), submit, go to the job;
    or show the form again with each error next to its field."""
    posted = await request.form()
    spec_dict, errors = specform.spec_from_post(posted)
    status = 422
    if not errors:
        try:
            spec = JobSpec.model_validate(spec_dict)
            key = str(posted.get("idempotency_key") or "")[:200] or None  # a double submit makes one job
            job_id = await anyio.to_thread.run_sync(service.submit, session, owner, settings, spec, key)
            return see_other(f"{PREFIX}/jobs/{job_id}")
        except ValidationError as exc:
            errors = validation_errors(list(exc.errors()))
        except ProblemError as exc:
            if not exc.errors:  # not about a field (the queue is down): the error page says so
                raise
            errors, status = exc.errors, exc.status
    form = specform.place_errors(specform.form_from_post(posted), errors)
    return _new_job_page(request, str(posted.get("example") or ""), form, status)


@router.get("/jobs/{job_id}")
def job_page(request: Request, job_id: str, owner: PageOwner, session: SessionDep) -> Response:
    job = service.job(session, owner, job_id)
    artifacts = service.artifacts(session, owner, job_id).items
    logs = list(reversed(session.scalars(select(JobLog).where(JobLog.job_id == job.id)
                                         .order_by(JobLog.id.desc()).limit(LOG_LINES)).all()))
    finished = job.state in TERMINAL_STATES
    after = logs[-1].id if logs else 0
    return page(request, "job.html", {
        "nav": "", "job": job, "artifacts": artifacts, "logs": logs, "finished": finished,
        "has_report": any(a.name == REPORT for a in artifacts),
        "table": views.summary_table(job.results_summary),
        "stream_url": None if finished else f"{PREFIX}/jobs/{job.id}/events?after={after}",
        "spec_json": json.dumps(job.spec, indent=2),
    })


@router.get("/jobs/{job_id}/events")
def job_events(request: Request, job_id: str, owner: PageOwner, session: SessionDep,
               after: Annotated[int | None, Query(ge=0)] = None,
               last_event_id: Annotated[int | None, Header(ge=0)] = None) -> Response:
    """The API's event stream of one job; `after` skips the log lines the page already shows (a reconnect's
    Last-Event-ID, when later, wins)."""
    return service.events_response(request, session, owner, job_id, max(after or 0, last_event_id or 0))


@router.post("/jobs/{job_id}/cancel")
def cancel_job(job_id: str, owner: PostOwner, session: SessionDep) -> Response:
    service.cancel(session, owner, job_id)
    return see_other(f"{PREFIX}/jobs/{job_id}")


@router.post("/jobs/{job_id}/delete")
def delete_job(job_id: str, owner: PostOwner, session: SessionDep, settings: SettingsDep) -> Response:
    service.delete(session, owner, settings, job_id)
    return see_other(f"{PREFIX}/jobs")


@router.get("/jobs/{job_id}/artifacts/{name}")
def download(job_id: str, name: str, owner: PageOwner, session: SessionDep, settings: SettingsDep,
             if_none_match: Annotated[str | None, Header()] = None) -> Response:
    return service.artifact(session, owner, settings, job_id, name, if_none_match)


@router.get("/jobs/{job_id}/report")
def report(job_id: str, owner: PageOwner, session: SessionDep, settings: SettingsDep,
           if_none_match: Annotated[str | None, Header()] = None) -> Response:
    """report.html shown in the page (inline), sandboxed: no script runs, no request leaves it."""
    response = service.artifact(session, owner, settings, job_id, REPORT, if_none_match)
    response.headers["Content-Disposition"] = f'inline; filename="{REPORT}"'
    response.headers["Content-Security-Policy"] = REPORT_CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
