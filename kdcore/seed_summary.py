"""Results over training seeds: each model's summary statistics and the paired KD-vs-baseline comparison.

Input is results.json's `runs` (one entry per seed: the model blocks and that seed's kd_vs_baseline);
the statistics come from kdcore.stats. Pure Python (no torch).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence

from kdcore.stats import describe, paired

# Per-model metrics the summary describes (those a job reports; a missing one is left out).
SUMMARY_METRICS = ("clean_acc", "corruption_acc", "mce", "robustness_retention", "ece", "nll", "corrupted_ece",
                   "best_val_acc", "last_epoch_acc")
PAIRED_METRICS = ("clean_acc", "corruption_acc", "mce", "ece", "nll")
TEACHER_NOTE = "the teacher is trained (or loaded) once per job, not once per seed: n=1, no interval"
# The kd_vs_baseline fields that are one number per seed (the top level gives their mean over seeds).
SCALAR_RATIOS = ("mce_vs_baseline", "relative_mce_vs_baseline_mean", "clean_acc_delta", "corruption_acc_delta")
PER_CORRUPTION_RATIOS = ("ce_vs_baseline", "relative_mce_vs_baseline")

FORMULAS: dict[str, str] = {
    "seeds": "training seeds: every student is trained once per seed (initialisation, data order, "
    "augmentation); the teacher and the data split (dataset.split_seed) are the same for all",
    "exported_seed": "the seed whose distilled student has the highest best_val_acc (validation split, never "
    "test; ties go to the earlier seed); its students are the exported files and the top-level blocks",
    "summary": "per model and metric: mean, std, n, ci95, ci_half_width, note of the per-seed values in runs",
    "kd_vs_baseline.paired": "per metric: paired differences KD - baseline over seeds (per_seed, mean, std, "
    "ci95, p_value)",
    "kd_vs_baseline.per_corruption": "per corruption c: paired differences over seeds of acc(c) = mean over "
    "severities of acc(c, s), KD - baseline; each p_value is one test, not corrected for the number of "
    "corruptions (with 15 of them, one p below 0.05 is expected by chance: compare with 0.05 / 15)",
    "kd_vs_baseline.mean_over_seeds": "mce_vs_baseline, ce_vs_baseline, relative_mce_vs_baseline(_mean), "
    "clean_acc_delta, corruption_acc_delta and teacher_retention: the mean over the seeds where the per-seed "
    "value (runs[i].kd_vs_baseline) is defined; null where it is defined for none",
}


def exported_seed(runs: Sequence[Mapping]) -> int:
    """The seed whose student_kd has the best validation accuracy; the earlier seed on ties."""
    best = runs[0]
    for entry in runs[1:]:
        if entry["student_kd"]["best_val_acc"] > best["student_kd"]["best_val_acc"]:
            best = entry
    return best["seed"]


def _metrics(blocks: Sequence[Mapping]) -> dict[str, dict]:
    return {m: describe([b.get(m) for b in blocks]) for m in SUMMARY_METRICS
            if any(b.get(m) is not None for b in blocks)}


def summarize(teacher: Mapping, runs: Sequence[Mapping], students: Sequence[str]) -> dict[str, dict]:
    """{model: {metric: describe(per-seed values)}}; the teacher's n is 1."""
    summary = {"teacher": {m: {**stats, "note": TEACHER_NOTE} for m, stats in _metrics([teacher]).items()}}
    for name in students:
        summary[name] = _metrics([entry[name] for entry in runs])
    return summary


def _mean_defined(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.fmean(kept) if kept else None


def _severity_mean(block: Mapping, corruption: str) -> float:
    row = block["per_corruption"][corruption]
    return statistics.fmean(row.values())


def _joined_notes(per_seed: Sequence[Mapping], seeds: Sequence[int], key: str) -> dict[str, str]:
    """{c: 'seed s: note; ...'} over the seeds whose per-seed comparison has a note for c under key."""
    notes: dict[str, list[str]] = {}
    for seed, comparison in zip(seeds, per_seed, strict=True):
        for c, note in comparison.get(key, {}).items():
            notes.setdefault(c, []).append(f"seed {seed}: {note}")
    return {c: "; ".join(parts) for c, parts in notes.items()}


def compare_over_seeds(runs: Sequence[Mapping]) -> dict:
    """The top-level kd_vs_baseline: paired statistics over seeds plus the per-seed ratios' means."""
    kd = [entry["student_kd"] for entry in runs]
    base = [entry["student_baseline"] for entry in runs]
    per_seed = [entry["kd_vs_baseline"] for entry in runs]
    seeds = [entry["seed"] for entry in runs]
    out: dict = {"paired": {m: paired([b.get(m) for b in kd], [b.get(m) for b in base]) for m in PAIRED_METRICS
                            if all(b.get(m) is not None for b in kd + base)}}
    for key in SCALAR_RATIOS:
        if any(key in comparison for comparison in per_seed):
            out[key] = _mean_defined([comparison.get(key) for comparison in per_seed])
    if "per_corruption" not in kd[0]:
        return out  # no corruptions evaluated: clean metrics only
    corruptions = list(kd[0]["per_corruption"])
    out["per_corruption"] = {
        c: paired([_severity_mean(b, c) for b in kd], [_severity_mean(b, c) for b in base]) for c in corruptions
    }
    for key in PER_CORRUPTION_RATIOS:
        out[key] = {c: _mean_defined([comparison[key][c] for comparison in per_seed]) for c in corruptions}
    for key in ("relative_mce_vs_baseline_undefined", "relative_mce_vs_baseline_negative"):
        out[key] = _joined_notes(per_seed, seeds, key)
    out["relative_mce_vs_baseline_terms_per_seed"] = [c.get("relative_mce_vs_baseline_terms") for c in per_seed]
    out["teacher_retention"] = {
        name: {kind: _mean_defined([c["teacher_retention"][name][kind] for c in per_seed])
               for kind in ("clean", "corrupted")}
        for name in ("student_kd", "student_baseline")
    }
    return out
