"""The API's own logic, called by the pages: the /v1 route functions with the page's owner and session.

One seam: the pages never repeat an owner check, a state rule or an upload check of the API; they call
these, which raise the same ProblemError (404 for another owner's job, 409 for a delete while running,
422 naming the field...) that the /v1 routes answer. A change in a route function's signature is fixed
here and nowhere else.
"""

from __future__ import annotations

import inspect
import json
import typing
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import params
from fastapi.responses import Response, StreamingResponse
from pydantic import ValidationError, create_model
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.datastructures import UploadFile
from starlette.requests import Request

from api import reads
from api.problems import ProblemError, validation_errors
from api.routes import datasets, events, jobs, models
from api.schemas import ArtifactList, DatasetInfo, DatasetList, JobDetail, JobPage, ModelInfo, ModelList
from kdcore.spec import JobSpec
from kdservice.settings import Settings
from kdservice.states import JobState
from kdservice.tables import ApiKey, Job


def job_page(session: Session, owner: ApiKey, limit: int, cursor: str | None,
             states: list[JobState] | None) -> JobPage:
    return JobPage.model_validate(reads.job_page(session.connection(), owner.id, limit, cursor, states))


def results_summaries(session: Session, owner: ApiKey, job_ids: list[str]) -> dict[str, dict | None]:
    """{job id: results_summary} of the owner's jobs among job_ids (the list shows their headlines)."""
    if not job_ids:
        return {}
    rows = session.execute(select(Job.id, Job.results_summary)
                           .where(Job.owner_id == owner.id, Job.id.in_(job_ids))).all()
    return dict(rows)  # type: ignore[arg-type]


def job(session: Session, owner: ApiKey, job_id: str) -> JobDetail:
    return jobs.job_detail(session, jobs.get_owned_job(session, owner, job_id))


def submit(session: Session, owner: ApiKey, settings: Settings, spec: JobSpec, idempotency_key: str | None) -> str:
    """Submit as POST /v1/jobs does (reference checks, queue, Idempotency-Key replay); the new job's id."""
    response = jobs.submit_spec(session, owner, spec, settings, idempotency_key)
    return json.loads(bytes(response.body))["id"]


def cancel(session: Session, owner: ApiKey, job_id: str) -> None:
    jobs.cancel_job(job_id, owner, session)


def delete(session: Session, owner: ApiKey, settings: Settings, job_id: str) -> None:
    jobs.delete_job(job_id, owner, session, settings)


def artifacts(session: Session, owner: ApiKey, job_id: str) -> ArtifactList:
    return jobs.list_artifacts(job_id, owner, session)


def artifact(session: Session, owner: ApiKey, settings: Settings, job_id: str, name: str,
             if_none_match: str | None) -> Response:
    return jobs.download_artifact(job_id, name, owner, session, settings, if_none_match=if_none_match)


def results(session: Session, owner: ApiKey, settings: Settings, job_id: str) -> dict[str, Any]:
    response = jobs.job_results(job_id, owner, session, settings)
    return json.loads(bytes(response.body))


def events_response(request: Request, session: Session, owner: ApiKey, job_id: str,
                    last_event_id: int | None) -> StreamingResponse:
    return events.stream_events(job_id, request, owner, session, last_event_id=last_event_id)


def dataset_list(session: Session, owner: ApiKey) -> DatasetList:
    return datasets.list_datasets(owner, session)


def model_list(session: Session, owner: ApiKey) -> ModelList:
    return models.list_models(owner, session)


def upload_dataset(request: Request, session: Session, owner: ApiKey, settings: Settings,
                   form: Mapping[str, Any]) -> DatasetInfo:
    fields = form_fields(datasets.upload_dataset, form)
    response = datasets.upload_dataset(request, owner, session, settings, file=uploaded_file(form), **fields)
    return DatasetInfo.model_validate_json(bytes(response.body))


def upload_model(request: Request, session: Session, owner: ApiKey, settings: Settings,
                 form: Mapping[str, Any]) -> ModelInfo:
    fields = form_fields(models.upload_model, form)
    response = models.upload_model(owner, session, settings, file=uploaded_file(form), **fields)
    return ModelInfo.model_validate_json(bytes(response.body))


def uploaded_file(form: Mapping[str, Any]) -> UploadFile:
    upload = form.get("file")
    if not isinstance(upload, UploadFile) or not upload.filename:
        raise ProblemError(422, "invalid request: file: choose a file to upload",
                           errors=[{"field": "file", "message": "choose a file to upload"}],
                           kind="validation-error")
    return upload


def form_fields(route: Callable[..., Any], form: Mapping[str, Any]) -> dict[str, Any]:
    """The route's `Form(...)` parameters read from a submitted form and validated by the route's own
    annotations (type, ge/le, max_length, Literal choices), so the page accepts exactly what the API
    accepts; 422 with one error per field otherwise. Empty inputs count as not given, as in FastAPI."""
    hints = typing.get_type_hints(route, include_extras=True)
    fields: dict[str, Any] = {}
    for name, parameter in inspect.signature(route).parameters.items():
        metadata = typing.get_args(hints[name])[1:] if typing.get_origin(hints[name]) is typing.Annotated else ()
        if any(isinstance(m, params.Form) and not isinstance(m, params.File) for m in metadata):
            required = parameter.default is inspect.Parameter.empty
            fields[name] = (hints[name], ... if required else parameter.default)
    values = {name: form[name] for name in fields if isinstance(form.get(name), str) and form[name].strip()}
    try:
        return dict(create_model(f"{route.__name__}_form", **fields).model_validate(values))
    except ValidationError as exc:
        errors = validation_errors(list(exc.errors()))
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        raise ProblemError(422, f"invalid request: {summary}", errors=errors, kind="validation-error") from exc
