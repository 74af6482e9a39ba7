"""/v1/jobs: submit, list, get, cancel, delete, metrics, results and artifacts (events: routes/events.py)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.routing import Route

from api import reads
from api.deps import BEARER_SECURITY, DatabaseDep, OwnerDep, SessionDep, SettingsDep, api_key_of, owned, owned_or_404
from api.problems import Problem, ProblemError, problem_doc
from api.schemas import ArtifactInfo, ArtifactList, JobDetail, JobMetrics, JobPage, PhaseSeries
from kdcore.cards import teacher_file_differences
from kdcore.job_files import ARTIFACT_NAMES, MEDIA_TYPES, RESULTS
from kdcore.spec import JobSpec
from kdservice import jobstore
from kdservice.estimate import check_resources, data_facts
from kdservice.policy import SpecProblem, check_http_spec
from kdservice.queue import enqueue_job
from kdservice.settings import Settings
from kdservice.states import JobState
from kdservice.tables import ApiKey, Artifact, Dataset, Job, JobMetric, JobTransition, Model

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
ERRORS = {r: {"model": Problem, "content": {"application/problem+json": {}}} for r in (401, 404, 409, 422)}


def get_owned_job(session: Session, owner: ApiKey, job_id: str) -> Job:
    """The job if it exists and belongs to owner; otherwise 404 (others' jobs are not revealed)."""
    return owned_or_404(session, Job, job_id, owner, "job")


def job_detail(session: Session, job: Job) -> JobDetail:
    transitions = session.scalars(
        select(JobTransition).where(JobTransition.job_id == job.id).order_by(JobTransition.id)
    ).all()
    return JobDetail.from_job(job, list(transitions))


def _check_submission(session: Session, owner: ApiKey, spec: JobSpec, settings: Settings) -> None:
    """422 naming the fields: server paths (kdservice.policy), others' uploads, resource caps."""
    _refuse(check_http_spec(spec))
    _check_references(session, owner, spec)
    upload = owned(session, Dataset, spec.dataset.dataset_id, owner) if spec.dataset.source == "upload" else None
    if spec.teacher.weights is not None:
        _check_teacher_card(settings.models_dir / f"{spec.teacher.weights}.safetensors", spec, upload)
    facts = data_facts(spec, upload.num_images if upload else None, Path(upload.path) if upload else None)
    _refuse(check_resources(spec, facts, settings.max_job_memory_bytes, settings.max_job_train_flops))


def _refuse(problems: list[SpecProblem]) -> None:
    if problems:
        summary = "; ".join(f"{p.field}: {p.message}" for p in problems)
        raise ProblemError(422, f"invalid request: {summary}", kind="validation-error",
                           errors=[{"field": p.field, "message": p.message} for p in problems])


def _check_references(session: Session, owner: ApiKey, spec: JobSpec) -> None:
    """Ids in the spec must name the caller's own uploads (422 naming the field)."""
    if spec.dataset.source == "upload":
        if owned(session, Dataset, spec.dataset.dataset_id, owner) is None:
            raise ProblemError(422, f"dataset {spec.dataset.dataset_id} not found; upload one with "
                               "POST /v1/datasets", field="dataset.dataset_id")
    weights = spec.teacher.weights
    if weights is not None:
        model = owned(session, Model, weights, owner)
        if model is None:
            # Server paths are for `kd run`; through the API only uploaded weights can be named.
            raise ProblemError(422, f"model {weights} not found; upload teacher weights with POST /v1/models",
                               field="teacher.weights")
        if model.arch != spec.teacher.arch:
            raise ProblemError(422, f"model {weights} holds {model.arch} weights but teacher.arch is "
                               f"{spec.teacher.arch}", field="teacher.weights")


def _check_teacher_card(weights: Path, spec: JobSpec, upload: Dataset | None) -> None:
    """An uploaded teacher whose model card disagrees with the job's data (classes or their order, channels,
    image size) would be silently wrong: 422 listing each difference (a differing mean/std is fine: the
    worker feeds the teacher its own)."""
    differences = teacher_file_differences(weights, spec.dataset, classes=upload.classes if upload else None)
    if differences:
        raise ProblemError(
            422, f"teacher.weights {spec.teacher.weights} does not fit this job's data: " + "; ".join(differences),
            errors=[{"field": "teacher.weights", "message": d} for d in differences], kind="teacher-mismatch")


def _json(body: BaseModel, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """The body serialised by pydantic in the worker thread (the route's response_model documents it)."""
    return Response(body.model_dump_json(), status_code=status, headers=headers, media_type="application/json")


def _created(job: JobDetail, status: int) -> Response:
    return _json(job, status, headers={"Location": f"/v1/jobs/{job.id}"})


def _replay(session: Session, owner: ApiKey, key: str, spec_json: dict) -> Response | None:
    query = select(Job).where(Job.owner_id == owner.id, Job.idempotency_key == key)
    existing = session.scalars(query).first()
    if existing is None:
        return None
    if existing.spec != spec_json:
        raise ProblemError(409, "Idempotency-Key was already used with a different job spec",
                           field="Idempotency-Key", kind="idempotency-conflict")
    return _created(job_detail(session, existing), 200)


@router.post(
    "", status_code=201, response_model=JobDetail, summary="Submit a distillation job",
    responses={200: {"model": JobDetail, "description": "replay of an earlier request with the same "
                     "Idempotency-Key: the job it created"}, **ERRORS,
               400: problem_doc("a body that cannot be parsed at all: not UTF-8, JSON nested too deep, a number "
                                "with too many digits (`errors[].field` is `body`)"),
               413: problem_doc("a body over KD_REQUEST_MAX_BYTES"),
               503: problem_doc("the job queue is unavailable, or the service is busy (Retry-After)")},
    openapi_extra={"requestBody": {"content": {"application/json": {
        "example": JobSpec.model_config["json_schema_extra"]["examples"][0]}}}},  # type: ignore[index]
)
async def create_job(
    spec: JobSpec, owner: OwnerDep, db: DatabaseDep, settings: SettingsDep,
    idempotency_key: Annotated[str | None, Header(max_length=200, description="a repeat with the same key "
                                                  "and body returns the same job (200)")] = None,
) -> Response:
    return await db.run(lambda session: submit_spec(session, owner, spec, settings, idempotency_key))


def submit_spec(session: Session, owner: ApiKey, spec: JobSpec, settings: Settings,
            idempotency_key: str | None) -> Response:
    spec_json = spec.model_dump(mode="json")
    if idempotency_key is not None and (replay := _replay(session, owner, idempotency_key, spec_json)):
        return replay
    _check_submission(session, owner, spec, settings)
    try:
        job = jobstore.submit_job(session, owner.id, spec.name, spec_json, idempotency_key)
    except IntegrityError:
        # A concurrent request with the same Idempotency-Key won the insert: answer as its replay.
        session.rollback()
        replay = _replay(session, owner, idempotency_key, spec_json) if idempotency_key else None
        if replay is None:
            raise
        return replay
    try:
        enqueue_job(job.id, settings)
    except Exception as exc:
        log.exception("enqueue of job %s failed", job.id)
        jobstore.forget_job(session, job.id)  # not queued anywhere: a retry with the same key starts afresh
        raise ProblemError(503, f"the job queue is unavailable ({type(exc).__name__}); retry later",
                           kind="broker-unavailable") from exc
    return _created(job_detail(session, job), 201)


@router.get("", response_model=JobPage, summary="List your jobs, newest first", responses=ERRORS)
async def list_jobs(
    owner: OwnerDep, db: DatabaseDep,
    limit: Annotated[int, Query(ge=1, le=100, description="page size")] = 20,
    cursor: Annotated[str | None, Query(max_length=500, description="from the last page")] = None,
    status: Annotated[list[JobState] | None, Query(description="only these states (repeatable)")] = None,
) -> Response:
    # The owner is a dependency (its 401 comes before any 422 of the query); the page is Core (api/reads.py).
    body = await db.read(lambda connection: reads.job_page_json(connection, owner.id, limit, cursor, status))
    return Response(body, media_type="application/json")


@router.get("/{job_id}", response_model=JobDetail, summary="State, progress, transitions, results summary",
            responses=ERRORS, openapi_extra=BEARER_SECURITY)
async def get_job(job_id: str, request: Request) -> Response:
    # The route clients poll: no dependencies, and the key and the job in one database call (no validation
    # can fail here, so no 422 comes before a 401). create_app serves it through plain_get_job_route().
    key, db = api_key_of(request), request.app.state.db
    return Response(await db.read(lambda connection: reads.job_json(connection, key, job_id)),
                    media_type="application/json")


async def _get_job_plain(request: Request) -> Response:
    return await get_job(request.path_params["job_id"], request)


def plain_get_job_route() -> Route:
    """get_job as a plain Starlette route, which create_app puts ahead of the routers: FastAPI's handling
    of an APIRoute (its routing through included routers, its request and response machinery) cost more
    CPU than the route's own database work (docs/BENCHMARKS.md). The APIRoute above documents it (OpenAPI)
    and answers it where this route is not installed; both run the same function."""
    route = Route(router.prefix + "/{job_id}", _get_job_plain, methods=["GET"], include_in_schema=False)
    route.methods = {"GET"}  # Starlette adds HEAD to a GET route; the API's routes answer HEAD with 405
    return route


@router.post("/{job_id}/cancel", status_code=202, response_model=JobDetail, summary="Ask a job to stop",
             description="Idempotent. A queued job is cancelled at once; a running one goes to `cancelling` "
             "and its worker stops within seconds. 409 for a job that already succeeded or failed.",
             responses=ERRORS)
def cancel_job(job_id: str, owner: OwnerDep, session: SessionDep) -> JobDetail:
    job = get_owned_job(session, owner, job_id)
    jobstore.request_cancel(session, job)
    if job.state in ("succeeded", "failed"):
        raise ProblemError(409, f"job {job_id} already {job.state}; nothing to cancel", field="job_id",
                           kind="job-finished")
    return job_detail(session, job)


@router.delete("/{job_id}", status_code=204, summary="Delete a finished job and its artifacts",
               responses=ERRORS)
def delete_job(job_id: str, owner: OwnerDep, session: SessionDep, settings: SettingsDep) -> Response:
    job = get_owned_job(session, owner, job_id)
    if not jobstore.delete_finished(session, job):
        raise ProblemError(409, f"job {job_id} is {job.state}; only finished jobs (succeeded, failed, "
                           "cancelled) can be deleted: cancel it first", field="job_id",
                           kind="job-not-finished")
    shutil.rmtree(settings.job_dir(job.id), ignore_errors=True)
    return Response(status_code=204)


@router.get("/{job_id}/metrics", response_model=JobMetrics, summary="Per-epoch series per training phase",
            responses=ERRORS)
def job_metrics(job_id: str, owner: OwnerDep, session: SessionDep) -> JobMetrics:
    job = get_owned_job(session, owner, job_id)
    rows = session.scalars(select(JobMetric).where(JobMetric.job_id == job.id).order_by(JobMetric.id)).all()
    phases: dict[str, PhaseSeries] = {}
    for row in rows:
        series = phases.setdefault(row.phase, PhaseSeries(epoch=[], train_loss=[], val_acc=[], lr=[]))
        series.epoch.append(row.epoch)
        series.train_loss.append(row.train_loss)
        series.val_acc.append(row.val_acc)
        series.lr.append(row.lr)
        series.seed.append((row.extra or {}).get("seed"))
    return JobMetrics(job_id=job.id, phases=phases)


@router.get("/{job_id}/results", summary="Full results JSON of a succeeded job",
            responses={200: {"content": {"application/json": {}}}, **ERRORS})
def job_results(job_id: str, owner: OwnerDep, session: SessionDep, settings: SettingsDep) -> JSONResponse:
    job = get_owned_job(session, owner, job_id)
    path = settings.job_dir(job.id) / RESULTS
    if job.state != "succeeded" or not path.is_file():
        raise ProblemError(404, f"job {job_id} has no results (state {job.state}); results exist once it "
                           "succeeded", field="job_id", kind="no-results")
    # kdcore writes NaN/Infinity for a diverged run's metrics; JSON has no such numbers: null.
    return JSONResponse(json.loads(path.read_text(), parse_constant=lambda _constant: None))


@router.get("/{job_id}/artifacts", response_model=ArtifactList, summary="Files a job produced",
            responses=ERRORS)
def list_artifacts(job_id: str, owner: OwnerDep, session: SessionDep) -> ArtifactList:
    job = get_owned_job(session, owner, job_id)
    rows = session.scalars(select(Artifact).where(Artifact.job_id == job.id).order_by(Artifact.name)).all()
    return ArtifactList(items=[ArtifactInfo(name=a.name, size=a.size, sha256=a.sha256,
                                            url=f"/v1/jobs/{job.id}/artifacts/{a.name}") for a in rows])


def _etag_matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or etag in tags


@router.get("/{job_id}/artifacts/{name}", summary="Download an artifact (ETag = sha256)",
            responses={200: {"content": {"application/octet-stream": {}}}, 304: {"description": "unchanged"},
                       **ERRORS})
def download_artifact(
    job_id: str, name: str, owner: OwnerDep, session: SessionDep, settings: SettingsDep,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    job = get_owned_job(session, owner, job_id)
    if name not in ARTIFACT_NAMES:
        raise ProblemError(404, f"unknown artifact {name!r}; one of {', '.join(ARTIFACT_NAMES)}",
                           field="name", kind="not-found")
    row = session.scalars(select(Artifact).where(Artifact.job_id == job.id, Artifact.name == name)).first()
    # The path is rebuilt from the id and a known name, never taken from the database or the request.
    path = settings.job_dir(job.id) / name
    if row is None or not path.is_file():
        raise ProblemError(404, f"job {job_id} has no artifact {name} (state {job.state})", field="name",
                           kind="not-found")
    etag = f'"{row.sha256}"'
    if _etag_matches(if_none_match, etag):
        return Response(status_code=304, headers={"ETag": etag})
    return FileResponse(path, filename=name, headers={"ETag": etag},
                        media_type=MEDIA_TYPES.get(name, "application/octet-stream"))

