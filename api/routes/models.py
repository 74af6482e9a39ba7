"""/v1/models: upload teacher weights (safetensors) checked against a registered architecture."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import JSONResponse
from sqlalchemy import select

from api.deps import OwnerDep, SessionDep, SettingsDep, owned_or_404
from api.problems import Problem, ProblemError
from api.schemas import ModelInfo, ModelList
from api.uploads import BUDGET_IN_USE, MALFORMED_MULTIPART, NAME_PATTERN, display_name, save_upload
from kdcore.spec import MODEL_ARCHS
from kdservice.tables import Model, new_id

router = APIRouter(prefix="/v1/models", tags=["models"])
ERRORS = {r: {"model": Problem, "content": {"application/problem+json": {}}} for r in (401, 404, 413, 422)}
MAX_REPORTED = 5


def read_safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes from the file's header (validated by safetensors; no torch, no pickle)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            return {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}
    except Exception as exc:  # safetensors raises its own error types for malformed headers
        raise ProblemError(422, f"not a valid safetensors file: {exc}", field="file") from exc


def expected_shapes(arch: str, num_classes: int, in_channels: int) -> dict[str, tuple[int, ...]]:
    # torch is imported only here, on this one upload route (never for job requests).
    import torch

    from kdcore.models import build_model

    with torch.device("meta"):  # shapes only: no memory, no random init
        model = build_model(arch, num_classes, in_channels=in_channels)
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def compare_shapes(found: dict[str, tuple[int, ...]], wanted: dict[str, tuple[int, ...]]) -> list[str]:
    problems = [f"missing tensor {k} {list(wanted[k])}" for k in sorted(set(wanted) - set(found))]
    problems += [f"unexpected tensor {k}" for k in sorted(set(found) - set(wanted))]
    problems += [f"tensor {k} has shape {list(found[k])}, the architecture needs {list(wanted[k])}"
                 for k in sorted(set(found) & set(wanted)) if found[k] != wanted[k]]
    return problems


@router.post(
    "", status_code=201, response_model=ModelInfo, summary="Upload teacher weights (safetensors)",
    description="The file's tensor names and shapes must equal the state_dict of `arch` built with "
    "`num_classes` and `in_channels`. Use the returned id as the job spec's `teacher.weights`.",
    responses={400: MALFORMED_MULTIPART, **ERRORS, 503: BUDGET_IN_USE},
    openapi_extra={"requestBody": {"content": {"multipart/form-data": {"example": {
        "file": "(binary: resnet56.safetensors)", "arch": "resnet56", "num_classes": 10, "in_channels": 3,
        "name": "resnet56-cifar10"}}}}},
)
def upload_model(
    owner: OwnerDep, session: SessionDep, settings: SettingsDep,
    file: Annotated[UploadFile, File(description="a .safetensors file (a state_dict)")],
    arch: Annotated[Literal[MODEL_ARCHS], Form(examples=["resnet56"])],  # type: ignore[valid-type]
    num_classes: Annotated[int, Form(ge=2, le=100_000, examples=[10])],
    in_channels: Annotated[int, Form(ge=1, le=16, examples=[3])] = 3,
    name: Annotated[str | None, Form(max_length=200, pattern=NAME_PATTERN,
                                     description="default: the file name")] = None,
) -> JSONResponse:
    path, size, sha256 = save_upload(file, settings.tmp_dir, settings.upload_max_bytes)
    model_id = new_id()
    final = settings.models_dir / f"{model_id}.safetensors"
    try:
        wanted = expected_shapes(arch, num_classes, in_channels)
        problems = compare_shapes(read_safetensors_shapes(path), wanted)
        if problems:
            more = f" (and {len(problems) - MAX_REPORTED} more)" if len(problems) > MAX_REPORTED else ""
            raise ProblemError(
                422, f"the weights do not fit {arch} (num_classes={num_classes}, in_channels={in_channels}): "
                f"{'; '.join(problems[:MAX_REPORTED])}{more}",
                errors=[{"field": "file", "message": p} for p in problems[:50]], kind="weights-mismatch")
        final.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(path), str(final))
    finally:
        path.unlink(missing_ok=True)
    row = Model(id=model_id, owner_id=owner.id, name=name or display_name(file.filename, arch), arch=arch,
                num_classes=num_classes, in_channels=in_channels, path=str(final), sha256=sha256,
                size_bytes=size)
    session.add(row)
    session.commit()
    return JSONResponse(ModelInfo.from_row(row).model_dump(mode="json"), status_code=201,
                        headers={"Location": f"/v1/models/{model_id}"})


@router.get("", response_model=ModelList, summary="Your uploaded models", responses=ERRORS)
def list_models(owner: OwnerDep, session: SessionDep) -> ModelList:
    rows = session.scalars(select(Model).where(Model.owner_id == owner.id)
                           .order_by(Model.created_at.desc(), Model.id.desc())).all()
    return ModelList(items=[ModelInfo.from_row(r) for r in rows])


@router.get("/{model_id}", response_model=ModelInfo, summary="One uploaded model", responses=ERRORS)
def get_model(model_id: str, owner: OwnerDep, session: SessionDep) -> ModelInfo:
    return ModelInfo.from_row(owned_or_404(session, Model, model_id, owner, "model"))
