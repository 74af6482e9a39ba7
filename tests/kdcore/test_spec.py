"""The job spec rejects bad input with messages that name the field and the allowed values."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
from pydantic import ValidationError

from kdcore.spec import DISTILL_METHODS, METHOD_DEFAULTS, DistillSpec, JobSpec, load_spec
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
    ("alpha with kd_weight", "distill.kd_weight", 9.0, "distill.alpha", "not both"),
    ("no seeds", "seeds", [], "seeds", "at least 1"),
    ("eleven seeds", "seeds", list(range(11)), "seeds", "at most 10"),
    ("repeated seed", "seeds", [3, 3], "seeds", "repeat"),
    ("negative seed", "seeds", [-1], "seeds", "greater than or equal to 0"),
    ("seed beyond int64", "seeds", [2**63], "seeds", "less than or equal to 9223372036854775807"),
    ("seeds and train.seed", "train.seed", 0, "seeds", "train.seed"),
    ("train.seed beyond int64", "train.seed", 2**63, "train.seed", "less than or equal to"),
    ("evaluate.seed beyond int64", "evaluate.seed", 2**63, "evaluate.seed", "less than or equal to"),
    ("negative split_seed", "dataset.split_seed", -1, "dataset.split_seed", "greater than or equal to 0"),
    # No type is guessed: a number in a string, a bool as 0/1 or a whole float are refused, not converted.
    ("epochs as a string", "train.epochs", "5", "train.epochs", "valid integer"),
    ("epochs as a float", "train.epochs", 5.0, "train.epochs", "valid integer"),
    ("epochs as a bool", "train.epochs", True, "train.epochs", "valid integer"),
    ("baseline as 0", "baseline", 0, "baseline", "valid boolean"),
    ("baseline as a word", "baseline", "yes", "baseline", "valid boolean"),
    ("lr as a string", "train.lr", "0.1", "train.lr", "valid number"),
]


OFFICIAL = {"source": "official", "official_root": "/data/CIFAR-10-C"}


@pytest.mark.parametrize("dataset", [{"source": "digits"}, {"source": "svhn"}, {"source": "imagefolder", "root": "/x"},
                                     {"source": "cifar10", "image_size": 64}])
def test_official_corruptions_need_cifar_data(dataset: dict) -> None:
    """CIFAR-10-C/100-C hold 32x32 CIFAR test images in the CIFAR order: any other data would be scored
    on images that are not its own."""
    with pytest.raises(ValidationError) as info:
        JobSpec.model_validate({**GOOD, "dataset": dataset, "evaluate": OFFICIAL})
    (error,) = info.value.errors()
    assert error["loc"] == ("evaluate", "source") and "evaluate.source" in error["msg"]
    for fine in ({"source": "cifar10"}, {"source": "cifar100", "image_size": 32}):
        JobSpec.model_validate({**GOOD, "dataset": fine, "evaluate": OFFICIAL})


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


def test_teacher_rule_is_in_the_json_schema() -> None:
    teacher = JobSpec.model_json_schema()["$defs"]["TeacherSpec"]
    assert sorted(tuple(branch["required"]) for branch in teacher["anyOf"]) == [("train",), ("weights",)]


def test_official_source_needs_no_root_in_the_spec() -> None:
    # The service reads the official arrays from its data folder; `kd run` names the folder (or fails early).
    spec = JobSpec.model_validate({**_with("evaluate.source", "official"), "dataset": {"source": "cifar10"}})
    assert spec.evaluate.official_root is None


def test_defaults_follow_design() -> None:
    spec = load_spec(json.dumps({"dataset": {"source": "cifar10"}, "teacher": {"arch": "resnet56", "train": {}},
                                 "student": {"arch": "resnet20"}}))
    assert (spec.train.epochs, spec.train.batch_size, spec.train.lr) == (240, 128, 0.05)
    assert spec.distill.method == "kd"
    assert spec.distill.settings(spec.train.epochs) == {"ce_weight": 0.1, "kd_weight": 0.9, "temperature": 4.0}
    assert (spec.train.nesterov, spec.train.decay_norm_and_bias) == (False, True)
    assert spec.evaluate.severities == [1, 2, 3, 4, 5]
    assert spec.export == ["safetensors", "onnx", "torchscript"]


def test_spec_module_does_not_import_torch() -> None:
    # The API validates specs on the request path, where torch must not be imported.
    code = "import sys, kdcore.spec, kdcore; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "False"


def test_every_method_has_its_defaults_and_the_schema_names_them() -> None:
    assert tuple(METHOD_DEFAULTS) == DISTILL_METHODS
    fields = DistillSpec.model_fields
    for method, defaults in METHOD_DEFAULTS.items():
        assert "ce_weight" in defaults
        for name, value in defaults.items():
            assert f"{method} {value}" in fields[name].description, (method, name)
            assert fields[name].default is None  # unset means "the method's default"


def test_unset_fields_take_the_methods_default_and_set_ones_win() -> None:
    assert DistillSpec(method="kd_ls").settings(240) == {"ce_weight": 0.1, "kd_weight": 9.0, "temperature": 2.0}
    assert DistillSpec(method="kd_ls", kd_weight=3.0).settings(240)["kd_weight"] == 3.0
    assert DistillSpec(method="kd", alpha=0.25).settings(240) == {"ce_weight": 0.75, "kd_weight": 0.25,
                                                                   "temperature": 4.0}
    assert DistillSpec(method="at").settings(240) == {"ce_weight": 1.0, "feature_weight": 1000.0, "at_p": 2.0}
    assert DistillSpec(method="fitnet", feature_weight=50.0).settings(240)["feature_weight"] == 50.0
    for epochs, warmup in ((1, 1), (15, 1), (18, 2), (30, 3), (120, 10), (240, 20), (1000, 83)):
        assert DistillSpec(method="dkd").settings(epochs)["warmup_epochs"] == warmup, epochs
    assert DistillSpec(method="dkd", warmup_epochs=0).settings(15)["warmup_epochs"] == 0
    assert DistillSpec(method="none").settings(3) == {"ce_weight": 1.0}
