"""Uploaded files on the HTTP side: stream to tmp/ under a size limit, and answer archive problems.

The archive checks and extraction are kdservice.archives (not HTTP-specific); the request's share of
the upload disk budget (kdservice.budget) comes from api.middleware.RequestGate.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

from fastapi import Request, UploadFile

from api.problems import ProblemError
from kdservice.archives import ArchiveError
from kdservice.budget import BudgetExceeded, Reservation

CHUNK = 1 << 20
# The multipart answers of the upload routes, for their OpenAPI description.
MALFORMED_MULTIPART = {"description": "malformed multipart body (no boundary, garbage)",
                       "content": {"application/problem+json": {}}}
BUDGET_IN_USE = {"description": "the upload disk budget is in use by other uploads: retry later (Retry-After)",
                 "content": {"application/problem+json": {}}}


# A name shows up in listings and logs: no control characters (PostgreSQL text cannot even hold NUL).
NAME_PATTERN = r"^[^\x00-\x1f\x7f]*$"
NAME_LENGTH = 200


def display_name(filename: str | None, default: str) -> str:
    """A stored name from an uploaded file's name (its part header is client text): printable, bounded."""
    name = "".join(c for c in (filename or "") if c.isprintable()).strip()[:NAME_LENGTH]
    return name or default


class UploadTooLarge(ProblemError):
    def __init__(self, limit: int):
        super().__init__(413, f"upload larger than the limit of {limit} bytes (KD_UPLOAD_MAX_BYTES)",
                         field="file", kind="payload-too-large")


def upload_reservation(request: Request) -> Reservation | None:
    """This request's share of the upload disk budget (set by the request gate)."""
    return request.scope.get("state", {}).get("upload_reservation")


def budget_answer(exc: BudgetExceeded) -> tuple[int, str, dict[str, str] | None]:
    """(status, problem kind, headers): 413 if this upload can never fit, else 503 (others hold it: retry)."""
    if exc.never_fits:
        return 413, "payload-too-large", None
    return 503, "disk-budget-exhausted", {"Retry-After": "30"}


def archive_problem(exc: ArchiveError | BudgetExceeded) -> ProblemError:
    if isinstance(exc, BudgetExceeded):
        status, kind, headers = budget_answer(exc)
        return ProblemError(status, str(exc), field="file", kind=kind, headers=headers)
    return ProblemError(422, str(exc), field="file", kind="bad-archive")


def save_upload(upload: UploadFile, folder: Path, limit: int) -> tuple[Path, int, str]:
    """Copy an upload to a new file in folder in chunks; (path, size, sha256). 413 over limit."""
    folder.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    handle = tempfile.NamedTemporaryFile(dir=folder, prefix="upload-", delete=False)
    path = Path(handle.name)
    try:
        with handle:
            while chunk := upload.file.read(CHUNK):
                size += len(chunk)
                if size > limit:
                    raise UploadTooLarge(limit)
                digest.update(chunk)
                handle.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path, size, digest.hexdigest()
