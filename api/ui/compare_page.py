"""/ui/compare: 2 to 6 succeeded jobs side by side, and their accuracy-vs-severity curves together."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from markupsafe import Markup

from api.deps import SessionDep, SettingsDep
from api.problems import ProblemError
from api.schemas import JobDetail
from api.ui import service, views
from api.ui.auth import PREFIX, PageOwner
from api.ui.render import PageRoute, page
from kdservice.summaries import MODEL_KEYS, MODEL_LABELS, format_spread

router = APIRouter(prefix=PREFIX, route_class=PageRoute, include_in_schema=False)
MIN_JOBS, MAX_JOBS = 2, 6


@dataclass
class Compared:
    job: JobDetail
    results: dict[str, Any]
    table: views.SummaryTable | None
    setup: str


def setup_text(spec: dict[str, Any], seeds: int) -> str:
    """'resnet20 -> resnet8, kd, digits, 15 epochs, 1 seed': what differs between compared jobs."""
    distill = spec.get("distill") or {}
    method = distill.get("method", "kd")
    if method in ("kd", "kd_ls", "dkd"):
        method += f" (T={distill.get('temperature', 4.0)})"
    epochs = (spec.get("train") or {}).get("epochs")
    return (f"{(spec.get('teacher') or {}).get('arch')} → {(spec.get('student') or {}).get('arch')}, {method}, "
            f"{(spec.get('dataset') or {}).get('source')}, {epochs} epochs, {seeds} seed{'s' if seeds != 1 else ''}")


def severity_rows(compared: list[Compared]) -> tuple[list[str], list[dict[str, Any]]]:
    """(column names: clean, then every severity any job evaluated; one row {job, model, cells} per job and
    model): the numbers of the chart (kdcore.report's severity_stats), as text."""
    from kdcore.report.figures import severity_stats
    from kdcore.report.view import corruption_grid

    lines = []
    for c in compared:
        _, severities = corruption_grid(c.results)
        for key in MODEL_KEYS:
            stats = severity_stats(c.results, key)
            if stats is not None:
                lines.append((c, key, dict(zip(["clean", *severities], stats, strict=True))))
    columns = ["clean", *sorted({s for _, _, line in lines for s in line if s != "clean"}, key=float)]
    rows = [{"job": c.job.name, "model": MODEL_LABELS[key], "cells": [format_spread(line.get(s)) for s in columns]}
            for c, key, line in lines]
    return columns, rows


def curves_svg(compared: list[Compared]) -> Markup | None:
    """The distilled students' accuracy-vs-severity lines of the jobs in one chart (kdcore.report's plotting,
    the same as the report's own chart); matplotlib is imported on the first compare only."""
    from kdcore.report.figures import accuracy_vs_severity_overlay

    svg = accuracy_vs_severity_overlay([(c.job.name, c.results) for c in compared])
    return Markup(svg) if svg else None  # matplotlib's SVG, its labels escaped: not user HTML


@router.get("/compare")
def compare(request: Request, owner: PageOwner, session: SessionDep, settings: SettingsDep,
            id: Annotated[list[str], Query(max_length=50)] = []) -> Response:  # noqa: A002, B006
    job_ids = list(dict.fromkeys(id))
    if not MIN_JOBS <= len(job_ids) <= MAX_JOBS:
        raise ProblemError(422, f"pick {MIN_JOBS} to {MAX_JOBS} succeeded jobs to compare (got {len(job_ids)})",
                           field="id")
    compared = []
    for job_id in job_ids:
        job = service.job(session, owner, job_id)  # 404 for another owner's job, as the API
        if job.state != "succeeded":
            raise ProblemError(422, f"job {job.name} ({job_id}) is {job.state}: only succeeded jobs have "
                               "results to compare", field="id")
        summary = job.results_summary or {}
        compared.append(Compared(job, service.results(session, owner, settings, job_id),
                                 views.summary_table(summary), setup_text(job.spec, int(summary.get("seeds") or 1))))
    severities, rows = severity_rows(compared)
    return page(request, "compare.html", {"nav": "", "jobs": compared, "severities": severities,
                                          "severity_rows": rows, "curves_svg": curves_svg(compared)})
