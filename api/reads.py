"""The hottest reads of the job routes in SQLAlchemy Core: one job with the caller's key, a page of jobs.

On GET /v1/jobs/{id} and GET /v1/jobs the ORM (identity map, instance state, lazy attributes) and the
response models' validation cost several times what the queries themselves do (docs/BENCHMARKS.md).
Here each read is one or two cached Core statements on a plain Connection, and the rows become the
response body through pydantic-core's serializer, the one the JobDetail and JobPage models serialise
with: the same fields in the same order give the same bytes (tests/api/test_reads.py compares them with
the models' own output). The ORM models stay the schema (kdservice/tables.py) and the write path.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic_core import to_json
from sqlalchemy import Connection, and_, bindparam, or_, select

from api.deps import not_found, unauthorized
from api.problems import ProblemError
from api.schemas import Progress
from kdservice.db import PreparedSelect
from kdservice.security import UNKNOWN_KEY, hash_key, refusal
from kdservice.tables import ID_PATTERN, ApiKey, Job, JobTransition

_keys, _jobs, _transitions = ApiKey.__table__, Job.__table__, JobTransition.__table__
# JobSummary's fields, in its order, as columns (error is built from error_code and error_message).
_SUMMARY = [_jobs.c[name] for name in (
    "id", "name", "state", "phase", "progress", "cancel_requested", "attempts", "error_code", "error_message",
    "created_at", "queued_at", "started_at", "finished_at", "updated_at")]
# The caller's key and the job, if it is theirs, in one statement: no key row is a 401, no job columns a 404.
_KEY_AND_JOB = (
    select(*_SUMMARY, _jobs.c.spec, _jobs.c.results_summary, _keys.c.revoked_at, _keys.c.expires_at)
    .select_from(_keys.outerjoin(_jobs, and_(_jobs.c.id == bindparam("job_id"), _jobs.c.owner_id == _keys.c.id)))
    .where(_keys.c.key_hash == bindparam("key_hash"))
)
_TRANSITIONS = (select(_transitions.c.state, _transitions.c.phase, _transitions.c.at, _transitions.c.detail)
                .where(_transitions.c.job_id == bindparam("job_id")).order_by(_transitions.c.id))
# GET /v1/jobs/{id} runs these two on the DB-API cursor: Core's own work per call cost more than the queries.
_KEY_AND_JOB_PREPARED, _TRANSITIONS_PREPARED = PreparedSelect(_KEY_AND_JOB), PreparedSelect(_TRANSITIONS)
_PAGE = select(*_SUMMARY).where(_jobs.c.owner_id == bindparam("owner_id"))


def _json(body: dict[str, Any]) -> bytes:
    # The models' own settings: a NaN or infinity (a diverged run's number in an old row) is null.
    return to_json(body, inf_nan_mode="null")


def summary(row: Sequence[Any]) -> dict[str, Any]:
    """A JobSummary as a dict, its fields in the model's order, from a row that starts with _SUMMARY."""
    # Unpacked by position: a Row's attribute lookups cost more than the rest of this on a page of 100.
    (job_id, name, state, phase, progress, cancel_requested, attempts, error_code, error_message,
     created_at, queued_at, started_at, finished_at, updated_at) = row[:len(_SUMMARY)]
    return {
        "id": job_id, "name": name, "state": state, "phase": phase,
        # Validated as JobSummary.from_row does: unknown keys dropped, numbers coerced (an int fraction: 1.0).
        "progress": Progress.model_validate(progress).model_dump() if progress else None,
        "cancel_requested": cancel_requested, "attempts": attempts,
        "error": {"code": error_code, "message": error_message} if error_code else None,
        "created_at": created_at, "queued_at": queued_at, "started_at": started_at,
        "finished_at": finished_at, "updated_at": updated_at,
    }


def job_json(connection: Connection, key: str, job_id: str) -> bytes:
    """The body of GET /v1/jobs/{job_id} (JobDetail) for the caller's key. 401 problem for a key that does
    not work, looked up afresh (a revocation counts at once); 404 for a job that is not the caller's."""
    # Ids are 32 hex characters: anything else (a NUL, megabytes) is no job, and the key is still checked.
    wanted = job_id if ID_PATTERN.fullmatch(job_id) else None
    rows = _KEY_AND_JOB_PREPARED.rows(connection, {"key_hash": hash_key(key), "job_id": wanted})
    if not rows:
        raise unauthorized(UNKNOWN_KEY)
    *job, spec, results_summary, revoked_at, expires_at = rows[0]
    if (reason := refusal(revoked_at, expires_at)) is not None:
        raise unauthorized(reason)
    if job[0] is None:
        raise not_found("job", job_id)
    transitions = _TRANSITIONS_PREPARED.rows(connection, {"job_id": job[0]})
    base = f"/v1/jobs/{job[0]}"
    return _json({
        **summary(job), "spec": spec,
        "transitions": [{"state": state, "phase": phase, "at": at, "detail": detail}
                        for state, phase, at, detail in transitions],
        "results_summary": results_summary,
        "links": {"self": base, "events": f"{base}/events", "metrics": f"{base}/metrics",
                  "results": f"{base}/results", "artifacts": f"{base}/artifacts"},
    })


def encode_cursor(created_at: datetime, job_id: str) -> str:
    raw = json.dumps([created_at.isoformat(), job_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, job_id = json.loads(raw)
        # In UTC, as stored: a date near year 1 or 9999 in another zone overflows here, not in the query.
        when = datetime.fromisoformat(created)
        if when.tzinfo is None or not ID_PATTERN.fullmatch(job_id):
            raise ValueError("bad cursor contents")
        return when.astimezone(UTC), job_id
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError, OverflowError) as exc:
        raise ProblemError(422, "cursor is not one this API returned (use next_cursor as is)",
                           field="cursor") from exc


def job_page(connection: Connection, owner_id: str, limit: int, cursor: str | None,
             states: list[str] | None) -> dict[str, Any]:
    """A JobPage as a dict: the owner's jobs newest first, `limit` of them after the cursor, in `states`."""
    query = _PAGE
    if states:
        query = query.where(_jobs.c.state.in_(states))
    if cursor:
        created, job_id = decode_cursor(cursor)
        query = query.where(or_(_jobs.c.created_at < created,
                                and_(_jobs.c.created_at == created, _jobs.c.id < job_id)))
    query = query.order_by(_jobs.c.created_at.desc(), _jobs.c.id.desc()).limit(limit + 1)
    rows = connection.execute(query, {"owner_id": owner_id}).all()
    page = rows[:limit]
    next_cursor = encode_cursor(page[-1].created_at, page[-1].id) if len(rows) > limit else None
    return {"items": [summary(row) for row in page], "next_cursor": next_cursor}


def job_page_json(connection: Connection, owner_id: str, limit: int, cursor: str | None,
                  states: list[str] | None) -> bytes:
    """The body of GET /v1/jobs (JobPage)."""
    return _json(job_page(connection, owner_id, limit, cursor, states))
