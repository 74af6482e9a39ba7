"""kdcore.run end to end on real data (scikit-learn's digits): determinism, resume, artifacts."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from kdcore.callbacks import Callbacks
from kdcore.data import load_dataset
from kdcore.errors import Cancelled, KDError, WeightsError
from kdcore.evaluate import accuracy, predict_logits
from kdcore.export import load_model
from kdcore.models import build_model
from kdcore.pipeline import run
from kdcore.spec import JobSpec
from tests.paths import REPO

TINY = {
    "name": "tiny",
    "dataset": {"source": "digits"},
    "teacher": {"arch": "resnet8", "train": {"epochs": 2, "batch_size": 128, "lr": 0.1}},
    "student": {"arch": "resnet8"},
    "distill": {"method": "kd"},
    "train": {"epochs": 3, "batch_size": 128, "lr": 0.1},
    "baseline": False,
    "evaluate": {"corruptions": "none", "latency": False},
    "export": ["safetensors"],
}


class StopAfterEpoch(Callbacks):
    """Asks for a cancel once the given phase has finished `epoch` epochs (like a killed worker)."""

    def __init__(self, phase: str, epoch: int):
        self.phase, self.epoch, self.stop = phase, epoch, False
        self.logs: list[str] = []

    def on_epoch_end(self, phase: str, epoch: int, metrics: dict[str, float]) -> None:
        self.stop = self.stop or (phase == self.phase and epoch == self.epoch)

    def on_log(self, message: str) -> None:
        self.logs.append(message)

    def should_cancel(self) -> bool:
        return self.stop


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


@pytest.mark.slow
def test_same_seed_gives_identical_runs(tmp_path: Path, cache_dir: Path) -> None:
    spec = JobSpec.model_validate({**TINY, "teacher": {**TINY["teacher"], "reuse": False}})  # both train it
    first = run(spec, tmp_path / "a", cache_dir=cache_dir, device="cpu")
    second = run(spec, tmp_path / "b", cache_dir=cache_dir, device="cpu")
    for name in ("teacher", "student_kd"):
        assert first[name]["clean_acc"] == second[name]["clean_acc"]
        assert first[name]["history"] == second[name]["history"]
    a, b = _weights(tmp_path / "a" / "student.safetensors"), _weights(tmp_path / "b" / "student.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_after_stop_matches_straight_run(tmp_path: Path, cache_dir: Path) -> None:
    spec = JobSpec.model_validate(TINY)
    straight = run(spec, tmp_path / "straight", cache_dir=cache_dir, device="cpu")
    stopper = StopAfterEpoch("distilling", 1)
    with pytest.raises(Cancelled):
        run(spec, tmp_path / "resumed", stopper, cache_dir=cache_dir, device="cpu")
    assert (tmp_path / "resumed" / "checkpoints" / "seed-0-distilling.pt").exists()
    logs = StopAfterEpoch("never", 0)
    resumed = run(spec, tmp_path / "resumed", logs, cache_dir=cache_dir, device="cpu")
    assert any("resumed from checkpoint after epoch 1" in m for m in logs.logs)
    assert any("training_teacher: already done" in m for m in logs.logs)
    assert resumed["student_kd"]["resumed_from_epoch"] == 1
    a = _weights(tmp_path / "straight" / "student.safetensors")
    b = _weights(tmp_path / "resumed" / "student.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert straight["student_kd"]["history"] == resumed["student_kd"]["history"]
    assert not list((tmp_path / "resumed" / "checkpoints").glob("*.pt"))  # cleaned up on success


def test_teacher_weights_that_do_not_fit_are_refused(tmp_path: Path, cache_dir: Path) -> None:
    spec = JobSpec.model_validate(TINY)
    run(spec, tmp_path / "first", cache_dir=cache_dir, device="cpu")
    wrong = {**TINY, "teacher": {"arch": "resnet20", "weights": str(tmp_path / "first" / "teacher.safetensors")}}
    with pytest.raises(WeightsError) as info:
        run(JobSpec.model_validate(wrong), tmp_path / "second", cache_dir=cache_dir, device="cpu")
    assert info.value.code == "weights_mismatch"
    reuse = {**TINY, "teacher": {"arch": "resnet8", "weights": str(tmp_path / "first" / "teacher.safetensors")}}
    results = run(JobSpec.model_validate(reuse), tmp_path / "third", cache_dir=cache_dir, device="cpu")
    assert results["teacher"]["best_epoch"] is None  # given, not trained
    first = json.loads((tmp_path / "first" / "results.json").read_text())
    assert results["teacher"]["clean_acc"] == first["teacher"]["clean_acc"]


@pytest.mark.slow
def test_digits_example_through_the_cli(tmp_path: Path, cache_dir: Path) -> None:
    """The engine's acceptance run: `kd run examples/digits-kd.json --out D`."""
    out = tmp_path / "digits"
    cmd = [sys.executable, "-m", "kdcli.main", "run", str(REPO / "examples" / "digits-kd.json"),
           "--out", str(out), "--cache-dir", str(cache_dir), "--device", "cpu"]
    subprocess.run(cmd, check=True, cwd=REPO, timeout=600)
    results = json.loads((out / "results.json").read_text())
    for name in ("teacher", "student_kd", "student_baseline"):
        block = results[name]
        for key in ("clean_acc", "ece", "nll", "params", "size_bytes", "flops", "macs", "latency_ms", "best_epoch",
                    "last_epoch_acc", "corruption_acc", "mce", "per_corruption", "per_severity",
                    "robustness_retention"):
            assert block[key] is not None, (name, key)
        assert len(block["per_corruption"]) == 15
    assert results["teacher"]["clean_acc"] >= 0.95
    assert results["student_kd"]["clean_acc"] >= 0.90
    assert results["student_kd"]["params"] <= results["teacher"]["params"] / 3
    assert {"mce_vs_baseline", "ce_vs_baseline", "relative_mce_vs_baseline"} <= set(results["kd_vs_baseline"])
    assert results["formulas"] and results["environment"]["torch"] == torch.__version__
    assert results["seeds"] == [0] and results["exported_seed"] == 0 and len(results["runs"]) == 1
    assert results["summary"]["student_kd"]["clean_acc"]["ci95"] is None  # one seed: no interval
    for artifact in ("student.safetensors", "student.onnx", "student.ts", "teacher.safetensors"):
        assert (out / artifact).stat().st_size > 0

    # The downloaded weights, loaded into the registered arch, reproduce the reported accuracy exactly.
    spec = JobSpec.model_validate(results["spec"])
    data = load_dataset(spec.dataset, cache_dir=cache_dir)
    model = build_model(spec.student.arch, data.num_classes, data.in_channels, data.image_size)
    model.load_state_dict(load_file(str(out / "student.safetensors")))
    logits = predict_logits(model, data.test_x, mean=data.mean, std=data.std, device=torch.device("cpu"))
    assert accuracy(logits, data.test_y) == results["student_kd"]["clean_acc"]
    # and the TorchScript file gives the same predictions
    scripted = torch.jit.load(str(out / "student.ts"))
    reloaded, card = load_model(out / "student.safetensors")
    x = torch.randn(4, card.in_channels, card.image_size, card.image_size)
    assert torch.allclose(scripted(x), reloaded(x), atol=1e-5)


@pytest.mark.skipif(not any(shutil.which(c) for c in ("g++", "c++", "clang++")), reason="no C++ compiler")
@pytest.mark.slow
def test_compiled_training_keeps_plain_weights_and_learns_like_eager(tmp_path: Path, cache_dir: Path) -> None:
    """train.compile (inductor, ~40 s of compiling here): checkpoints and exported weights keep the plain
    model's keys, load into an uncompiled model that reproduces the reported accuracy, and the run
    learns about as well as the same eager run."""
    compiled_spec = {**TINY, "train": {**TINY["train"], "compile": True}}
    compiled = run(JobSpec.model_validate(compiled_spec), tmp_path / "compiled", cache_dir=cache_dir, device="cpu")
    eager = run(JobSpec.model_validate(TINY), tmp_path / "eager", cache_dir=cache_dir, device="cpu")
    weights = _weights(tmp_path / "compiled" / "student.safetensors")
    spec = JobSpec.model_validate(compiled_spec)
    data = load_dataset(spec.dataset, cache_dir=cache_dir)
    model = build_model(spec.student.arch, data.num_classes, data.in_channels, data.image_size)
    assert set(weights) == set(model.state_dict())  # no "_orig_mod." prefixes
    model.load_state_dict(weights)
    logits = predict_logits(model, data.test_x, mean=data.mean, std=data.std, device=torch.device("cpu"))
    assert accuracy(logits, data.test_y) == pytest.approx(compiled["student_kd"]["clean_acc"], abs=0.005)
    assert compiled["student_kd"]["clean_acc"] > 2 / data.num_classes  # it learned
    assert compiled["student_kd"]["clean_acc"] == pytest.approx(eager["student_kd"]["clean_acc"], abs=0.05)


def test_compile_without_a_compiler_fails_with_a_clear_error(tmp_path: Path, cache_dir: Path, monkeypatch) -> None:
    monkeypatch.setattr("kdcore.train.shutil.which", lambda name: None)
    monkeypatch.delenv("CXX", raising=False)
    spec = JobSpec.model_validate({**TINY, "train": {**TINY["train"], "compile": True}})
    with pytest.raises(KDError, match="train.compile needs a C\\+\\+ compiler") as raised:
        run(spec, tmp_path / "out", cache_dir=cache_dir, device="cpu")
    assert raised.value.code == "compile_unavailable"


class LogLines(Callbacks):
    def __init__(self) -> None:
        self.logs: list[str] = []

    def on_log(self, message: str) -> None:
        self.logs.append(message)


@pytest.mark.slow
def test_a_later_job_reuses_the_teacher_trained_on_the_same_data_and_recipe(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = run(JobSpec.model_validate(TINY), tmp_path / "kd", cache_dir=cache, device="cpu")
    other_method = {**TINY, "distill": {"method": "dkd"}}
    logs = LogLines()
    second = run(JobSpec.model_validate(other_method), tmp_path / "dkd", logs, cache_dir=cache, device="cpu")
    assert any("reused the teacher" in m for m in logs.logs)
    assert "training_teacher" not in second["timings"]
    assert second["teacher"]["reused_from_cache"] and first["teacher"]["reused_from_cache"] is None
    a, b = _weights(tmp_path / "kd" / "teacher.safetensors"), _weights(tmp_path / "dkd" / "teacher.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert second["teacher"]["clean_acc"] == first["teacher"]["clean_acc"]
    assert second["teacher"]["history"] == first["teacher"]["history"]
    # Another recipe, reuse switched off, or another data split trains a teacher of its own.
    variants = ({"teacher": {**TINY["teacher"], "train": {**TINY["teacher"]["train"], "lr": 0.05}}},
                {"teacher": {**TINY["teacher"], "reuse": False}},
                {"dataset": {**TINY["dataset"], "split_seed": 1}})
    for i, variant in enumerate(variants):
        logs = LogLines()
        third = run(JobSpec.model_validate({**TINY, **variant}), tmp_path / f"variant{i}", logs,
                    cache_dir=cache, device="cpu")
        assert not any("reused the teacher" in m for m in logs.logs) and "training_teacher" in third["timings"]
    # A damaged cache entry is not trusted: the teacher is trained again and the entry rewritten.
    for entry in (cache / "teachers").glob("*.safetensors"):
        entry.write_bytes(b"not safetensors")
    logs = LogLines()
    fourth = run(JobSpec.model_validate(TINY), tmp_path / "again", logs, cache_dir=cache, device="cpu")
    assert not any("reused the teacher" in m for m in logs.logs) and "training_teacher" in fourth["timings"]


@pytest.mark.parametrize(("method", "recipe"), [
    *[(m, {}) for m in ("kd", "dkd", "kd_ls", "fitnet", "at")],
    ("kd", {"augment": "augmix", "augmix_jsd": True}),
])
def test_every_method_trains_two_epochs_through_run(tmp_path: Path, cache_dir: Path, method: str,
                                                    recipe: dict) -> None:
    """A 2-epoch smoke run of each method on digits with the method's own defaults."""
    spec = {**TINY, "dataset": {"source": "digits", "subset": 300, "test_subset": 100},
            "teacher": {"arch": "resnet20", "train": {"epochs": 1, "batch_size": 64, "lr": 0.1}},
            "distill": {"method": method}, "train": {"epochs": 2, "batch_size": 64, "lr": 0.1, **recipe}}
    logs = LogLines()
    results = run(JobSpec.model_validate(spec), tmp_path / method, logs, cache_dir=cache_dir, device="cpu")
    history = results["student_kd"]["history"]
    assert len(history) == 2 and all(torch.isfinite(torch.tensor(e["train_loss"])) for e in history)
    assert any(f"distilling: {method}: ce_weight=" in m for m in logs.logs)
    assert results["student_kd"]["macs"] * 2 == results["student_kd"]["flops"]
    if recipe.get("augmix_jsd"):
        assert "loss_jsd" in history[0]
