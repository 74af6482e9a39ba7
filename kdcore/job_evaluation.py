"""Evaluate every model of a job and assemble results.json's model blocks, runs and statistics.

The teacher is evaluated once per job, or not at all when an earlier job evaluated the same teacher
weights on the same data with the same settings (kdcore.teacher_cache); every seed's students are
evaluated on weights reloaded from their files, exactly what the user downloads. All models that need
it see each corrupted cell in one pass, so each cell is generated (or read) once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from kdcore import seed_summary, stats
from kdcore.callbacks import Callbacks
from kdcore.data import ImageData
from kdcore.evaluate import cpu_latency_ms, model_report
from kdcore.export import load_model
from kdcore.given_teacher import with_card_normalization
from kdcore.job_files import phase_key, weights_path
from kdcore.robustness import FORMULAS, compare_to_baseline, evaluate_robustness
from kdcore.spec import JobSpec
from kdcore.teacher_cache import (
    evaluation_key,
    load_teacher_evaluation,
    store_teacher_evaluation,
    weights_digest,
)

# Block fields measured afresh on every job (so not stored with the teacher's cached evaluation).
FRESH_FIELDS = ("latency_ms", "size_bytes")


def _training_fields(summary: dict) -> dict:
    return {
        "best_epoch": summary.get("best_epoch"), "best_val_acc": summary.get("best_val_acc"),
        "last_epoch_val_acc": summary.get("last_val_acc"), "last_epoch_acc": summary.get("last_epoch_acc"),
        "resumed_from_epoch": summary.get("resumed_from_epoch"), "history": summary.get("history", []),
    }


def _merge_robustness(block: dict, robust: dict) -> None:
    corrupted = robust.pop("corrupted_reliability", None)
    block.update(robust)
    if block.get("reliability") is not None:
        block["reliability"]["corrupted"] = corrupted


def evaluate_job(
    spec: JobSpec,
    data: ImageData,
    out_dir: Path,
    seeds: Sequence[int],
    students: Sequence[str],
    *,
    phases: dict,
    device: torch.device,
    cache_dir: Path,
    data_dir: Path | None = None,
    callbacks: Callbacks,
    report: Callable[..., None],
    timings: dict[str, float],
) -> dict:
    """results.json without exports, timings, environment and spec: teacher, runs, summary, kd_vs_baseline,
    formulas, corruption_source, dataset, seeds. report(fraction, **fields) is evaluation progress."""
    t0 = time.perf_counter()
    report(0.0)
    ev = spec.evaluate

    def clean_block(model: nn.Module, file: Path) -> dict:
        return model_report(model, data.test_x, data.test_y, mean=data.mean, std=data.std, device=device,
                            weights_file=file, latency=ev.latency, calibration=ev.calibration)

    def reload(file: Path) -> tuple[nn.Module, str]:
        """Exactly what the user downloads, fed with the normalisation its card asks for."""
        model, card = load_model(file)
        return with_card_normalization(model, card, data.mean, data.std)

    teacher_file = weights_path(out_dir, "teacher")
    teacher, teacher_normalization = reload(teacher_file)
    key = evaluation_key(weights_digest(teacher), spec.teacher.arch, data.fingerprint, ev)
    blocks: dict[str, dict] = {}
    to_corrupt: dict[str, nn.Module] = {}
    cached = load_teacher_evaluation(cache_dir, key)
    if cached is not None:
        input_shape = tuple(data.test_x.shape[1:])
        blocks["teacher"] = {**cached, "size_bytes": teacher_file.stat().st_size,
                             "latency_ms": cpu_latency_ms(teacher, input_shape) if ev.latency else None}
        callbacks.on_log(f"evaluating: teacher evaluation loaded from the cache (same weights, data and "
                         f"evaluation settings; key {key}); latency measured afresh")
    else:
        blocks["teacher"] = clean_block(teacher, teacher_file)
        to_corrupt["teacher"] = teacher
    for seed in seeds:
        for name in students:
            file = weights_path(out_dir, name, seed)
            model, normalization = reload(file)
            blocks[phase_key(name, seed)] = {**clean_block(model, file), "normalization": normalization}
            to_corrupt[phase_key(name, seed)] = model

    names = ev.corruption_names()
    if names:
        total_cells = len(names) * len(ev.severities)
        robust = evaluate_robustness(
            to_corrupt, data.test_x, data.test_y, mean=data.mean, std=data.std, spec=ev, device=device,
            cache_dir=cache_dir, fingerprint=data.fingerprint, data_dir=data_dir,
            clean_acc={n: blocks[n]["clean_acc"] for n in to_corrupt}, test_index=data.test_index,
            should_cancel=callbacks.should_cancel,
            on_cell=lambda done, total=total_cells: report(done / total, step=done, steps=total),
        )
        for name, block in robust.items():
            _merge_robustness(blocks[name], block)
    if cached is None:
        store_teacher_evaluation(cache_dir, key, {k: v for k, v in blocks["teacher"].items()
                                                  if k not in FRESH_FIELDS})

    teacher_block = blocks["teacher"]
    teacher_block.update({"arch": spec.teacher.arch, **_training_fields(phases.get("teacher", {})),
                          "reused_from_cache": phases.get("teacher", {}).get("reused_from_cache"),
                          "evaluation_reused_from_cache": key if cached is not None else None,
                          "normalization": teacher_normalization})
    runs = []
    for seed in seeds:
        entry: dict = {"seed": seed}
        for name in students:
            block = blocks[phase_key(name, seed)]
            block.update({"arch": spec.student.arch, "seed": seed,
                          **_training_fields(phases.get(phase_key(name, seed), {})),
                          "compression_vs_teacher": _compression(teacher_block, block)})
            entry[name] = block
        if "student_baseline" in entry:
            entry["kd_vs_baseline"] = (
                compare_to_baseline(entry["student_kd"], entry["student_baseline"], teacher_block) if names
                else {"clean_acc_delta": entry["student_kd"]["clean_acc"] - entry["student_baseline"]["clean_acc"]}
            )
        runs.append(entry)

    results: dict = {"teacher": teacher_block, "runs": runs, "seeds": list(seeds),
                     "summary": seed_summary.summarize(teacher_block, runs, students)}
    if "student_baseline" in students:
        results["kd_vs_baseline"] = seed_summary.compare_over_seeds(runs)
    results["formulas"] = {**FORMULAS, **stats.FORMULAS, **seed_summary.FORMULAS}
    results["corruption_source"] = (
        runs[0]["student_kd"].get("source") if names else "none (evaluate.corruptions was 'none')"
    )
    results["dataset"] = {"source": spec.dataset.source, "classes": list(data.classes),
                          "n_train": len(data.train_y), "n_val": len(data.val_y), "n_test": len(data.test_y),
                          "split_seed": spec.dataset.split_seed, "fingerprint": data.fingerprint}
    timings["evaluating"] = time.perf_counter() - t0
    return results


def _compression(teacher: dict, student: dict) -> dict:
    def ratio(key: str) -> float | None:
        return teacher[key] / student[key] if teacher.get(key) and student.get(key) else None

    return {"params_ratio": ratio("params"), "size_ratio": ratio("size_bytes"), "flops_ratio": ratio("flops"),
            "latency_speedup": ratio("latency_ms")}
