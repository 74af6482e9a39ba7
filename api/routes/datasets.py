"""/v1/datasets: upload an ImageFolder archive (.zip / .tar.gz), list and get your data sets."""

from __future__ import annotations

import shutil
from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse
from sqlalchemy import select

from api.deps import OwnerDep, SessionDep, SettingsDep, owned_or_404
from api.problems import Problem
from api.schemas import DatasetInfo, DatasetList
from api.uploads import (
    BUDGET_IN_USE,
    MALFORMED_MULTIPART,
    NAME_PATTERN,
    archive_problem,
    display_name,
    save_upload,
    upload_reservation,
)
from kdservice.archives import ArchiveError, ArchiveLimits, store_dataset
from kdservice.budget import BudgetExceeded
from kdservice.tables import Dataset, new_id

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])
ERRORS = {r: {"model": Problem, "content": {"application/problem+json": {}}} for r in (401, 404, 413, 422)}


@router.post(
    "", status_code=201, response_model=DatasetInfo, summary="Upload an ImageFolder archive",
    description="A .zip or .tar.gz holding `train/<class>/*` and `test/<class>/*`, or only `<class>/*` "
    "folders (kdcore then holds out a fixed 20% test split). At least 2 classes; every image must decode; "
    "links, absolute paths, '..', names that are not UTF-8 and images over KD_MAX_IMAGE_PIXELS are refused, "
    "and so are archives that declare more than KD_UPLOAD_MAX_RATIO times their size. Use the returned id as "
    '`{"dataset": {"source": "upload", "dataset_id": ...}}`.',
    responses={400: MALFORMED_MULTIPART, **ERRORS, 503: BUDGET_IN_USE},
    openapi_extra={"requestBody": {"content": {"multipart/form-data": {
        "example": {"file": "(binary: a .zip of cat/*.png and dog/*.png)", "name": "pets"}}}}},
)
def upload_dataset(
    request: Request, owner: OwnerDep, session: SessionDep, settings: SettingsDep,
    file: Annotated[UploadFile, File(description="the archive (.zip or .tar.gz)")],
    name: Annotated[str | None, Form(max_length=200, pattern=NAME_PATTERN, examples=["flowers"],
                                     description="default: the file name")] = None,
) -> JSONResponse:
    work_dir = settings.tmp_dir
    archive, size, _ = save_upload(file, work_dir, settings.upload_max_bytes)
    dataset_id = new_id()
    final_dir = settings.datasets_dir / dataset_id
    try:
        summary = store_dataset(archive, work_dir, final_dir, ArchiveLimits.from_settings(settings),
                                upload_reservation(request))
    except (ArchiveError, BudgetExceeded) as exc:
        raise archive_problem(exc) from exc
    finally:
        archive.unlink(missing_ok=True)
    label = name or display_name((file.filename or "").removesuffix(".gz").removesuffix(".tar")
                                 .removesuffix(".zip"), "dataset")
    row = Dataset(id=dataset_id, owner_id=owner.id, name=label[:200], path=str(final_dir),
                  num_classes=len(summary.classes), num_images=summary.num_images,
                  size_bytes=summary.size_bytes, classes=summary.classes)
    session.add(row)
    try:
        session.commit()
    except Exception:
        shutil.rmtree(final_dir, ignore_errors=True)
        raise
    info = DatasetInfo.from_row(row)
    return JSONResponse(info.model_dump(mode="json"), status_code=201,
                        headers={"Location": f"/v1/datasets/{dataset_id}"})


@router.get("", response_model=DatasetList, summary="Your uploaded data sets", responses=ERRORS)
def list_datasets(owner: OwnerDep, session: SessionDep) -> DatasetList:
    rows = session.scalars(select(Dataset).where(Dataset.owner_id == owner.id)
                           .order_by(Dataset.created_at.desc(), Dataset.id.desc())).all()
    return DatasetList(items=[DatasetInfo.from_row(r) for r in rows])


@router.get("/{dataset_id}", response_model=DatasetInfo, summary="One uploaded data set", responses=ERRORS)
def get_dataset(dataset_id: str, owner: OwnerDep, session: SessionDep) -> DatasetInfo:
    return DatasetInfo.from_row(owned_or_404(session, Dataset, dataset_id, owner, "dataset"))
