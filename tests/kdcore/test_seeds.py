"""Several training seeds in one job: resume inside a seed, the exported seed, and the statistics in
results.json recomputed here with numpy/scipy from the per-seed runs (never with kdcore.stats)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from scipy import stats as scipy_stats

from kdcore.callbacks import Callbacks, Progress
from kdcore.errors import Cancelled
from kdcore.models import build_model
from kdcore.pipeline import run
from kdcore.seed_summary import exported_seed
from kdcore.spec import EvaluateSpec, JobSpec
from kdcore.stats import FORMULAS as STATS_FORMULAS
from kdcore.teacher_cache import (
    evaluation_key,
    load_teacher_evaluation,
    store_teacher_evaluation,
    weights_digest,
)
from tests.paths import REPO

EXAMPLE = json.loads((REPO / "examples" / "digits-kd.json").read_text())

TWO_SEEDS = {
    "name": "two-seeds",
    "dataset": {"source": "digits"},
    "teacher": {"arch": "resnet8", "train": {"epochs": 2, "batch_size": 128, "lr": 0.1}},
    "student": {"arch": "resnet8"},
    "train": {"epochs": 3, "batch_size": 128, "lr": 0.1},
    "seeds": [1, 2],
    "baseline": False,
    "evaluate": {"corruptions": "none", "latency": False},
    "export": ["safetensors"],
}


class Recorder(Callbacks):
    """Keeps logs, epoch metrics and progress; cancels once `stop_in_seed` reaches its 2nd epoch."""

    def __init__(self, stop_in_seed: int | None = None):
        self.stop_in_seed, self.stop = stop_in_seed, False
        self.logs: list[str] = []
        self.epochs: list[tuple[str, int, dict]] = []
        self.progress: list[Progress] = []

    def on_progress(self, progress: Progress) -> None:
        self.progress.append(progress)
        if progress.seed is not None and progress.seed == self.stop_in_seed and progress.epoch == 2:
            self.stop = True

    def on_epoch_end(self, phase: str, epoch: int, metrics: dict[str, float]) -> None:
        self.epochs.append((phase, epoch, metrics))

    def on_log(self, message: str) -> None:
        self.logs.append(message)

    def should_cancel(self) -> bool:
        return self.stop


@pytest.mark.slow
def test_a_resumed_job_continues_inside_its_seed_and_never_retrains_a_finished_one(
    tmp_path: Path, cache_dir: Path
) -> None:
    spec = JobSpec.model_validate(TWO_SEEDS)
    out = tmp_path / "job"
    stopper = Recorder(stop_in_seed=2)
    with pytest.raises(Cancelled):
        run(spec, out, stopper, cache_dir=cache_dir, device="cpu")
    assert {m["seed"] for phase, _, m in stopper.epochs if phase == "distilling"} == {1, 2}
    phases = json.loads((out / "phases.json").read_text())
    assert "seed-1/student_kd" in phases and "seed-2/student_kd" not in phases
    assert (out / "checkpoints" / "seed-2-distilling.pt").exists()
    seed1_file = out / "seeds" / "1" / "student.safetensors"
    seed1_mtime = seed1_file.stat().st_mtime_ns

    again = Recorder()
    results = run(spec, out, again, cache_dir=cache_dir, device="cpu")
    assert any("seed 1: distilling: already done" in m for m in again.logs)
    assert any(m.startswith("seed 2: distilling: resumed from checkpoint after epoch 1") for m in again.logs)
    assert {m["seed"] for _, _, m in again.epochs} == {2}  # no epoch of seed 1 ran again
    assert seed1_file.stat().st_mtime_ns == seed1_mtime
    assert [r["seed"] for r in results["runs"]] == [1, 2]
    assert results["runs"][0]["student_kd"]["resumed_from_epoch"] == 0
    assert results["runs"][1]["student_kd"]["resumed_from_epoch"] == 1
    # Progress covers both seeds: seed 2's progress lies after seed 1's, and the job ends at 1.
    fractions = {p.seed: p.fraction for p in stopper.progress if p.phase == "distilling"}
    assert fractions[1] < min(p.fraction for p in stopper.progress if p.seed == 2)

    # Seed 2 resumed equals seed 2 trained straight through in a job of its own; that job differs only in its
    # training seeds, so it shares the data split and loads the teacher and its evaluation from the cache.
    alone = Recorder()
    single = run(JobSpec.model_validate({**TWO_SEEDS, "seeds": [2]}), tmp_path / "alone", alone,
                 cache_dir=cache_dir, device="cpu")
    assert any("reused the teacher" in m for m in alone.logs)
    assert single["teacher"]["evaluation_reused_from_cache"] and single["teacher"]["clean_acc"] == \
        results["teacher"]["clean_acc"]
    assert single["dataset"]["fingerprint"] == results["dataset"]["fingerprint"]
    alone_weights = load_file(str(tmp_path / "alone" / "seeds" / "2" / "student.safetensors"))
    resumed_weights = load_file(str(out / "seeds" / "2" / "student.safetensors"))
    assert all(torch.equal(alone_weights[k], resumed_weights[k]) for k in resumed_weights)
    assert single["runs"][0]["student_kd"]["history"] == results["runs"][1]["student_kd"]["history"]

    # The deliverable is the seed with the best validation accuracy (the earlier one on ties).
    vals = [r["student_kd"]["best_val_acc"] for r in results["runs"]]
    best = results["runs"][int(np.argmax(vals))]["seed"]  # argmax takes the first maximum
    assert results["exported_seed"] == best
    exported = (out / "student.safetensors").read_bytes()
    assert exported == (out / "seeds" / str(best) / "student.safetensors").read_bytes()
    assert results["student_kd"] == results["runs"][[1, 2].index(best)]["student_kd"]


def test_exported_seed_breaks_ties_towards_the_earlier_seed() -> None:
    runs = [{"seed": s, "student_kd": {"best_val_acc": v}} for s, v in ((7, 0.8), (3, 0.9), (5, 0.9))]
    assert exported_seed(runs) == 3


def _example_copy(seeds: list[int]) -> dict:
    """The shipped example, made affordable: fewer epochs and corruptions, fewer corrupted images."""
    spec = copy.deepcopy(EXAMPLE)
    spec["seeds"] = seeds
    spec["dataset"].update({"subset": 600, "test_subset": 200})
    spec["teacher"]["train"]["epochs"] = 3
    spec["train"]["epochs"] = 2
    spec["evaluate"].update({"corruptions": ["gaussian_noise", "fog", "contrast"], "severities": [1, 3, 5],
                             "max_images": 80, "latency": False})
    spec["export"] = ["safetensors"]
    return spec


def _interval(values: list[float]) -> tuple[float, float, list[float]]:
    a = np.asarray(values, dtype=np.float64)
    mean, std = a.mean(), a.std(ddof=1)
    half = scipy_stats.t.ppf(0.975, len(a) - 1) * std / np.sqrt(len(a))
    return mean, std, [mean - half, mean + half]


def _severity_mean(block: dict, corruption: str) -> float:
    return float(np.mean(list(block["per_corruption"][corruption].values())))


@pytest.mark.slow
def test_digits_example_with_three_seeds_through_the_cli(tmp_path: Path, cache_dir: Path) -> None:
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(_example_copy([0, 1, 2])))
    out = tmp_path / "three"
    cmd = [sys.executable, "-m", "kdcli.main", "run", str(spec_file), "--out", str(out), "--cache-dir",
           str(cache_dir), "--device", "cpu"]
    printed = subprocess.run(cmd, check=True, cwd=REPO, timeout=600, capture_output=True, text=True).stdout
    assert "exported seed" in printed and "kd - baseline clean_acc" in printed
    results = json.loads((out / "results.json").read_text())
    runs = results["runs"]
    assert results["seeds"] == [0, 1, 2] and [r["seed"] for r in runs] == [0, 1, 2]

    for name in ("student_baseline", "student_kd"):
        for metric, stats in results["summary"][name].items():
            values = [r[name][metric] for r in runs]
            mean, std, ci = _interval(values)
            assert stats["n"] == 3 and stats["mean"] == pytest.approx(mean, rel=1e-9, abs=1e-12), (name, metric)
            assert stats["std"] == pytest.approx(std, rel=1e-9, abs=1e-12)
            if std > 0:
                assert stats["ci95"] == pytest.approx(ci, rel=1e-9, abs=1e-12)
        assert {"clean_acc", "corruption_acc", "mce", "robustness_retention", "ece", "nll", "corrupted_ece",
                "best_val_acc", "last_epoch_acc"} <= set(results["summary"][name])
    teacher_stats = results["summary"]["teacher"]["clean_acc"]
    assert teacher_stats["n"] == 1 and teacher_stats["ci95"] is None and "once per job" in teacher_stats["note"]
    assert teacher_stats["mean"] == results["teacher"]["clean_acc"]

    paired = results["kd_vs_baseline"]["paired"]
    assert set(paired) == {"clean_acc", "corruption_acc", "mce", "ece", "nll"}
    for metric, diff in paired.items():
        kd = np.array([r["student_kd"][metric] for r in runs])
        base = np.array([r["student_baseline"][metric] for r in runs])
        assert diff["per_seed"] == pytest.approx(list(kd - base))
        mean, _, ci = _interval(list(kd - base))
        assert diff["mean"] == pytest.approx(mean, abs=1e-12)
        if np.std(kd - base) > 0:
            assert diff["ci95"] == pytest.approx(ci, abs=1e-12)
            assert diff["p_value"] == pytest.approx(scipy_stats.ttest_rel(kd, base).pvalue, rel=1e-6)
    per_corruption = results["kd_vs_baseline"]["per_corruption"]
    assert set(per_corruption) == {"gaussian_noise", "fog", "contrast"}
    for c, diff in per_corruption.items():
        kd = np.array([_severity_mean(r["student_kd"], c) for r in runs])
        base = np.array([_severity_mean(r["student_baseline"], c) for r in runs])
        assert diff["per_seed"] == pytest.approx(list(kd - base)) and diff["mean"] == pytest.approx(np.mean(kd - base))
    mce_ratios = [r["kd_vs_baseline"]["mce_vs_baseline"] for r in runs]
    assert results["kd_vs_baseline"]["mce_vs_baseline"] == pytest.approx(np.mean(mce_ratios))

    # Reliability diagrams: every clean test image in one bin, every corrupted image of the 9 cells pooled.
    for block in (results["teacher"], runs[0]["student_kd"]):
        reliability = block["reliability"]
        assert reliability["bins"] == 15 and len(reliability["clean"]["count"]) == 15
        assert sum(reliability["clean"]["count"]) == block["n_test"]
        assert sum(reliability["corrupted"]["count"]) == 9 * block["n_images"]
    assert set(STATS_FORMULAS) <= set(results["formulas"])
    best = exported_seed(runs)
    assert results["exported_seed"] == best
    exported = (out / "baseline.safetensors").read_bytes()
    assert exported == (out / "seeds" / str(best) / "baseline.safetensors").read_bytes()

    # One seed: the same job's numbers, every interval null with a note; teacher and its evaluation reused.
    one = run(JobSpec.model_validate(_example_copy([0])), tmp_path / "one", cache_dir=cache_dir, device="cpu")
    assert len(one["runs"]) == 1
    for name in ("student_baseline", "student_kd"):
        for stats in one["summary"][name].values():
            assert stats["n"] == 1 and stats["ci95"] is None and stats["ci_half_width"] is None and stats["note"]
    for diff in one["kd_vs_baseline"]["paired"].values():
        assert diff["ci95"] is None and diff["p_value"] is None and diff["note"]
    assert one["teacher"]["evaluation_reused_from_cache"] and results["teacher"]["evaluation_reused_from_cache"] is None
    for key in ("clean_acc", "corruption_acc", "per_corruption", "reliability", "ece"):
        assert one["teacher"][key] == results["teacher"][key]
    assert one["runs"][0]["student_kd"]["clean_acc"] == runs[0]["student_kd"]["clean_acc"]  # seed 0 again


def test_teacher_evaluation_key_follows_exactly_what_changes_the_numbers(tmp_path: Path) -> None:
    torch.manual_seed(0)
    teacher = build_model("resnet8", 10, 1, 8)
    digest = weights_digest(teacher)
    base = EvaluateSpec(corruptions=["fog"], severities=[1, 2], max_images=50)
    key = evaluation_key(digest, "resnet8", "fp", base)
    same = (base.model_copy(update={"latency": False}), base.model_copy(update={"batch_size": 7}),
            EvaluateSpec(corruptions=["fog"], severities=[2, 1], max_images=50))
    assert all(evaluation_key(digest, "resnet8", "fp", spec) == key for spec in same)
    changed = [base.model_copy(update=u) for u in ({"severities": [1]}, {"corruptions": ["snow"]}, {"seed": 1},
                                                   {"max_images": 60}, {"calibration": False})]
    keys = {evaluation_key(digest, "resnet8", "fp", spec) for spec in changed}
    keys |= {evaluation_key(digest, "resnet8", "other-data", base), evaluation_key(digest, "resnet14", "fp", base)}
    with torch.no_grad():
        next(teacher.parameters()).add_(1e-6)
    assert weights_digest(teacher) != digest
    keys.add(evaluation_key(weights_digest(teacher), "resnet8", "fp", base))
    assert key not in keys and len(keys) == len(changed) + 3

    assert load_teacher_evaluation(tmp_path, key) is None
    store_teacher_evaluation(tmp_path, key, {"clean_acc": 0.5})
    assert load_teacher_evaluation(tmp_path, key) == {"clean_acc": 0.5}
    next((tmp_path / "teacher_evaluations").glob("*.json")).write_text("{not json")
    assert load_teacher_evaluation(tmp_path, key) is None  # damaged: evaluated again, never trusted
