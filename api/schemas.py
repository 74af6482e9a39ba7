"""Response bodies of the API (request bodies: kdcore.spec.JobSpec and multipart forms)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from kdservice.states import JobState
from kdservice.tables import Dataset, Job, JobTransition, Model


class Progress(BaseModel):
    phase: str | None = None
    seed: int | None = Field(None, description="the training seed of a student phase (jobs list several)")
    epoch: int | None = None
    epochs: int | None = None
    step: int | None = None
    steps: int | None = None
    fraction: float | None = None
    eta_seconds: float | None = None


class JobError(BaseModel):
    code: str
    message: str | None = None


class Transition(BaseModel):
    state: str
    phase: str | None = None
    at: datetime
    detail: str | None = None


class JobSummary(BaseModel):
    id: str
    name: str
    state: JobState
    phase: str | None = None
    progress: Progress | None = None
    cancel_requested: bool
    attempts: int
    error: JobError | None = None
    created_at: datetime
    queued_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime

    @classmethod
    def from_row(cls, job: Job, **extra: Any) -> JobSummary:
        error = JobError(code=job.error_code, message=job.error_message) if job.error_code else None
        return cls(
            id=job.id, name=job.name, state=job.state, phase=job.phase,
            progress=Progress.model_validate(job.progress) if job.progress else None,
            cancel_requested=job.cancel_requested, attempts=job.attempts, error=error,
            created_at=job.created_at, queued_at=job.queued_at, started_at=job.started_at,
            finished_at=job.finished_at, updated_at=job.updated_at, **extra,
        )


class JobDetail(JobSummary):
    spec: dict[str, Any]
    transitions: list[Transition]
    results_summary: dict[str, Any] | None = Field(
        None, description="per model (teacher, student_baseline, student_kd): clean_acc, corruption_acc, mce, "
        "robustness_retention and ece as {mean, ci_half_width, n} over the job's seeds (ci_half_width null when "
        "n=1), and params, macs, flops, size_bytes, latency_ms; kd_vs_baseline: the paired clean_acc and "
        "corruption_acc differences with p_value; seeds: how many. The full results are at /v1/jobs/{id}/results"
    )
    links: dict[str, str]

    @classmethod
    def from_job(cls, job: Job, transitions: list[JobTransition]) -> JobDetail:
        base = f"/v1/jobs/{job.id}"
        links = {"self": base, "events": f"{base}/events", "metrics": f"{base}/metrics",
                 "results": f"{base}/results", "artifacts": f"{base}/artifacts"}
        return cls.from_row(  # type: ignore[return-value]
            job, spec=job.spec, results_summary=job.results_summary, links=links,
            transitions=[Transition(state=t.state, phase=t.phase, at=t.at, detail=t.detail)
                         for t in transitions],
        )


class StateEvent(BaseModel):
    """The data of `event: state`: the job's state or phase changed (`deleted`: the job was deleted while
    watched; the stream ends)."""

    state: str
    phase: str | None
    error: JobError | None


class ProgressEvent(BaseModel):
    """The data of `event: progress`."""

    state: str
    phase: str | None
    progress: Progress


class LogEvent(BaseModel):
    """The data of `event: log`: one line of the job's log."""

    id: int
    at: datetime
    level: str
    message: str


class JobPage(BaseModel):
    items: list[JobSummary]
    next_cursor: str | None = Field(None, description="pass as ?cursor= for the next (older) page")


class PhaseSeries(BaseModel):
    epoch: list[int]
    train_loss: list[float | None]
    val_acc: list[float | None]
    lr: list[float | None]
    seed: list[int | None] = Field(
        default_factory=list, description="the training seed of each entry (the students train once per seed; "
        "null for the teacher)")


class JobMetrics(BaseModel):
    job_id: str
    phases: dict[str, PhaseSeries] = Field(description="per phase (training_teacher, distilling, ...)")


class ArtifactInfo(BaseModel):
    name: str
    size: int
    sha256: str
    url: str


class ArtifactList(BaseModel):
    items: list[ArtifactInfo]


class DatasetInfo(BaseModel):
    id: str
    name: str
    num_classes: int
    num_images: int
    size_bytes: int
    classes: list[str]
    created_at: datetime
    spec_hint: dict[str, Any] = Field(description="use as the job spec's dataset")

    @classmethod
    def from_row(cls, row: Dataset) -> DatasetInfo:
        return cls(id=row.id, name=row.name, num_classes=row.num_classes, num_images=row.num_images,
                   size_bytes=row.size_bytes, classes=list(row.classes), created_at=row.created_at,
                   spec_hint={"source": "upload", "dataset_id": row.id})


class DatasetList(BaseModel):
    items: list[DatasetInfo]


class ModelInfo(BaseModel):
    id: str
    name: str
    arch: str
    num_classes: int
    in_channels: int
    sha256: str
    size_bytes: int
    created_at: datetime

    @classmethod
    def from_row(cls, row: Model) -> ModelInfo:
        return cls(id=row.id, name=row.name, arch=row.arch, num_classes=row.num_classes,
                   in_channels=row.in_channels, sha256=row.sha256, size_bytes=row.size_bytes,
                   created_at=row.created_at)


class ModelList(BaseModel):
    items: list[ModelInfo]
