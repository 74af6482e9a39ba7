"""The job spec rejects bad input with messages that name the field and the allowed values."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from kdcore.spec import JobSpec, load_spec

REPO = Path(__file__).resolve().parents[1]
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
    ("official without root", "evaluate.source", "official", "evaluate", "official_root"),
    ("unknown export", "export", ["pickle"], "export", "safetensors"),
    ("bad optimizer", "train.optimizer", "lbfgs", "train.optimizer", "adamw"),
    ("val_fraction 0", "dataset.val_fraction", 0, "dataset.val_fraction", "greater than 0"),
    ("no seeds", "seeds", [], "seeds", "at least 1"),
    ("eleven seeds", "seeds", list(range(11)), "seeds", "at most 10"),
    ("repeated seed", "seeds", [3, 3], "seeds", "repeat"),
    ("negative seed", "seeds", [-1], "seeds", "greater than or equal to 0"),
    ("seed beyond int64", "seeds", [2**63], "seeds", "less than or equal to 9223372036854775807"),
    ("seeds and train.seed", "train.seed", 0, "seeds", "train.seed"),
    ("train.seed beyond int64", "train.seed", 2**63, "train.seed", "less than or equal to"),
    ("evaluate.seed beyond int64", "evaluate.seed", 2**63, "evaluate.seed", "less than or equal to"),
    ("negative split_seed", "dataset.split_seed", -1, "dataset.split_seed", "greater than or equal to 0"),
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


def test_seeds_default_to_train_seed_and_a_dumped_spec_validates_again() -> None:
    single = {k: v for k, v in GOOD.items() if k != "seeds"}
    assert JobSpec.model_validate(single).effective_seeds() == [0]
    assert JobSpec.model_validate(_with("train.seed", 7) | {"seeds": None}).effective_seeds() == [7]
    spec = JobSpec.model_validate(_with("seeds", [5, 2**63 - 1, 0]))
    assert spec.effective_seeds() == [5, 2**63 - 1, 0]  # the order given
    # The API stores model_dump and the worker validates it again: with seeds, train.seed is left out.
    dumped = spec.model_dump(mode="json")
    assert "seed" not in dumped["train"] and dumped["seeds"] == [5, 2**63 - 1, 0]
    assert JobSpec.model_validate(dumped) == spec
    assert JobSpec.model_validate(single).model_dump(mode="json")["train"]["seed"] == 0


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


def test_kdcore_imports_nothing_from_the_service() -> None:
    offenders = []
    for path in (REPO / "kdcore").rglob("*.py"):
        for line in path.read_text().splitlines():
            stripped = line.strip()
            if stripped.startswith(("import ", "from ")) and stripped.split()[1].split(".")[0] in {
                "api", "worker", "kdcli"
            }:
                offenders.append(f"{path.relative_to(REPO)}: {stripped}")
    assert offenders == []
