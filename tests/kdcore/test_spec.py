"""The job spec rejects bad input with messages that name the field and the allowed values."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
from pydantic import ValidationError

from kdcore.spec import JobSpec, load_spec
from tests.paths import REPO

GOOD = json.loads((REPO / "examples" / "digits-kd.json").read_text())


def _with(path: str, value) -> dict:
    spec = copy.deepcopy(GOOD)
    *parents, leaf = path.split(".")
    node = spec
    for key in parents:
        node = node[key]
    if value is _DELETE:
        del node[leaf]
    else:
        node[leaf] = value
    return spec


_DELETE = object()

BAD_SPECS = [
    # (what is wrong, path to change, new value, field the error must name, a word the message must hold)
    ("unknown dataset", "dataset.source", "imagenet21k", "dataset.source", "cifar10"),
    ("unknown student arch", "student.arch", "resnet9000", "student.arch", "resnet20"),
    ("unknown teacher arch", "teacher.arch", "vit_huge", "teacher.arch", "resnet56"),
    ("unknown method", "distill.method", "magic", "distill.method", "dkd"),
    ("temperature <= 0", "distill.temperature", 0, "distill.temperature", "greater than 0"),
    ("alpha above 1", "distill.alpha", 1.5, "distill.alpha", "less than or equal to 1"),
    ("alpha below 0", "distill.alpha", -0.1, "distill.alpha", "greater than or equal to 0"),
    ("epochs < 1", "train.epochs", 0, "train.epochs", "greater than or equal to 1"),
    ("teacher with neither weights nor recipe", "teacher.train", _DELETE, "teacher", "weights"),
    ("unknown corruption", "evaluate.corruptions", ["gaussian_noise", "rain"], "evaluate.corruptions", "snow"),
    ("severity 6", "evaluate.severities", [1, 6], "evaluate.severities", "less than or equal to 5"),
    ("repeated severity", "evaluate.severities", [2, 2], "evaluate.severities", "repeat"),
    ("unknown key", "distill.temprature", 4.0, "distill.temprature", "Extra inputs"),
    ("imagefolder without root", "dataset.source", "imagefolder", "dataset", "dataset.root"),
    ("seed above int64", "train.seed", 2**63, "train.seed", "less than or equal to"),
    ("evaluate seed above int64", "evaluate.seed", 10**30, "evaluate.seed", "less than or equal to"),
    ("infinite weight", "distill.dkd_beta", float("inf"), "distill.dkd_beta", "finite"),
    ("NaN temperature", "distill.temperature", float("nan"), "distill.temperature", "finite"),
    ("10,000 severities", "evaluate.severities", [1] * 10_000, "evaluate.severities", "at most 5"),
    ("10,000 milestones", "train.milestones", [1] * 10_000, "train.milestones", "at most 100"),
    ("too many exports", "export", ["onnx"] * 4, "export", "at most 3"),
    ("unknown export", "export", ["pickle"], "export", "safetensors"),
    ("bad optimizer", "train.optimizer", "lbfgs", "train.optimizer", "adamw"),
    ("val_fraction 0", "dataset.val_fraction", 0, "dataset.val_fraction", "greater than 0"),
]


def test_example_spec_is_valid() -> None:
    spec = JobSpec.model_validate(GOOD)
    assert spec.teacher.train is not None
    assert spec.evaluate.corruption_names()[0] == "gaussian_noise"
    assert len(spec.evaluate.corruption_names()) == 15


@pytest.mark.parametrize(("what", "path", "value", "field", "word"), BAD_SPECS, ids=[b[0] for b in BAD_SPECS])
def test_bad_spec_names_the_field(what: str, path: str, value, field: str, word: str) -> None:
    with pytest.raises(ValidationError) as info:
        JobSpec.model_validate(_with(path, value))
    errors = info.value.errors()
    locations = [".".join(str(p) for p in e["loc"]) for e in errors]
    assert any(loc.startswith(field) for loc in locations), (what, locations)
    assert word in str(info.value), (what, str(info.value))


def test_teacher_rule_is_in_the_json_schema() -> None:
    teacher = JobSpec.model_json_schema()["$defs"]["TeacherSpec"]
    assert sorted(tuple(branch["required"]) for branch in teacher["anyOf"]) == [("train",), ("weights",)]


def test_official_source_needs_no_root_in_the_spec() -> None:
    # The service reads the official arrays from its data folder; `kd run` names the folder (or fails early).
    spec = JobSpec.model_validate(_with("evaluate.source", "official"))
    assert spec.evaluate.official_root is None


def test_defaults_follow_design() -> None:
    spec = load_spec(json.dumps({"dataset": {"source": "cifar10"}, "teacher": {"arch": "resnet56", "train": {}},
                                 "student": {"arch": "resnet20"}}))
    assert (spec.train.epochs, spec.train.batch_size, spec.train.lr) == (240, 128, 0.05)
    assert (spec.distill.method, spec.distill.temperature, spec.distill.alpha) == ("kd", 4.0, 0.9)
    assert spec.evaluate.severities == [1, 2, 3, 4, 5]
    assert spec.export == ["safetensors", "onnx", "torchscript"]


def test_spec_module_does_not_import_torch() -> None:
    # The API validates specs on the request path, where torch must not be imported.
    code = "import sys, kdcore.spec, kdcore; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "False"
