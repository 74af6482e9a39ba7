"""What a job submitted over HTTP may ask for: data only by upload id or built-in source, never a server path.

`kd run` (local, trusted) may name folders and files; the service may not let one caller name them:
a path would read another key's private upload, walk the server's file system (and leak folder names in
errors), or make a worker create folders anywhere (`download`). Built-in sources and the official
CIFAR-10-C/100-C arrays are read from the server's data folder (KD_DATA_DIR); the worker passes it to
kdcore.run. Every string field of the spec is classified below; tests/service/test_policy.py fails when
a new one is not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kdcore.spec import JobSpec
from kdservice.tables import ID_PATTERN


@dataclass(frozen=True)
class SpecProblem:
    field: str  # dotted path in the job spec
    message: str


# Fields that name a file or folder on the machine that runs the job: refused when set.
SERVER_PATH_FIELDS = {
    "dataset.root": "upload the data (POST /v1/datasets) and use source 'upload', or use a built-in source "
                    "without root (the service reads them from its data folder)",
    "evaluate.official_root": "leave it out: the service reads the official CIFAR-10-C/100-C arrays from its "
                              "data folder",
}
# Fields that must be the id of one of the caller's uploads (the API checks the owner).
UPLOAD_ID_FIELDS = {"dataset.dataset_id": "POST /v1/datasets", "teacher.weights": "POST /v1/models"}
# Free text that names nothing on the server.
TEXT_FIELDS = ("name",)
# Sources that read a folder on the server given in the spec.
SERVER_FOLDER_SOURCES = ("imagefolder",)


def spec_value(spec: JobSpec, field: str) -> Any:
    node: Any = spec
    for part in field.split("."):
        node = getattr(node, part, None)
    return node


def check_http_spec(spec: JobSpec) -> list[SpecProblem]:
    """The problems (field, message) that make a spec unacceptable over HTTP; empty when it is fine."""
    problems = [SpecProblem(field, f"{field} names a path on the server, which the API does not accept: {hint}")
                for field, hint in SERVER_PATH_FIELDS.items() if spec_value(spec, field) is not None]
    if spec.dataset.source in SERVER_FOLDER_SOURCES:
        problems.append(SpecProblem("dataset.source", f"source '{spec.dataset.source}' reads a folder on the "
                                    "server: upload the archive (POST /v1/datasets) and use source 'upload'"))
    if spec.dataset.download:
        problems.append(SpecProblem("dataset.download", "the API does not download data sets: built-in sources "
                                    "are read from the service's data folder; leave dataset.download out"))
    for field, route in UPLOAD_ID_FIELDS.items():
        value = spec_value(spec, field)
        if value is not None and not ID_PATTERN.fullmatch(value):
            problems.append(SpecProblem(field, f"{field} must be the id of one of your uploads ({route}), "
                                        "not a path or a name"))
    return problems
