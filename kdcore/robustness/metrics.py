"""Robustness metrics, as results.json reports them (their formulas are in FORMULAS below).

Conventions (also written into results.json through FORMULAS):
- accuracies are fractions in 0..1; errors are E = 1 - accuracy;
- mce is in percent (CIFAR convention: 100 - 100 * corruption_acc, the unnormalised mean error);
- the baseline ratios use Hendrycks & Dietterich (2019) with the no-KD student as the reference;
  relative CE subtracts the clean error once per severity: sum_s (E(c, s) - E_clean);
- a ratio whose denominator is zero is None (null in JSON); a mean over such ratios is None too,
  because silently dropping a term would change what the mean averages over.

Also home of the one ECE / NLL implementation (kdcore.evaluate imports it for clean metrics).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

ECE_BINS = 15

FORMULAS: dict[str, str] = {
    "accuracy": "fraction of images whose argmax logit is the label (0..1)",
    "per_corruption": "acc(c, s): top-1 accuracy under corruption c at severity s; JSON {c: {\"s\": acc}}",
    "per_severity": "mean over corruptions c of acc(c, s)",
    "corruption_acc": "mean over all (corruption c, severity s) cells of acc(c, s)",
    "mce": "100 * (1 - corruption_acc), in percent (CIFAR convention, unnormalised)",
    "clean_acc_same_images": (
        "top-1 on the clean versions of the n_images test images the corruption cells hold (all of them, or "
        "the class-balanced evaluate.max_images subset, seed 0), generated or official"
    ),
    "robustness_retention": "corruption_acc / clean_acc_same_images",
    "ce_vs_baseline": "CE(c) = sum_s E_kd(c, s) / sum_s E_base(c, s), with E = 1 - acc",
    "mce_vs_baseline": "mean over corruptions c of ce_vs_baseline(c)",
    "relative_mce_vs_baseline": (
        "rCE(c) = sum_s (E_kd(c, s) - E_kd_clean) / sum_s (E_base(c, s) - E_base_clean) "
        "(Hendrycks & Dietterich 2019: the clean error is subtracted once per severity); E_clean = "
        "1 - clean_acc_same_images"
    ),
    "relative_mce_vs_baseline_mean": "mean over corruptions c of relative_mce_vs_baseline(c)",
    "clean_acc_delta": "clean_acc(student_kd) - clean_acc(student_baseline)",
    "corruption_acc_delta": "corruption_acc(student_kd) - corruption_acc(student_baseline)",
    "teacher_retention": "student / teacher, for clean_acc and for corruption_acc",
    "ece": (
        f"{ECE_BINS} equal-width confidence bins (lo, hi]: "
        "sum_b |B_b| / n * |acc(B_b) - mean confidence(B_b)|, confidence = max softmax"
    ),
    "nll": "mean over images of -log softmax(logits)[label]",
    "corrupted_ece": "mean over (c, s) cells of the ece of that cell",
    "corrupted_nll": "mean over all corrupted images of -log softmax(logits)[label]",
    "null": "a ratio with a zero denominator, or a mean over such a ratio, is null",
    "flops": (
        "forward pass at batch 1 as torch.utils.flop_counter counts it: 2 FLOPs per multiply-accumulate of "
        "convolutions and matrix products (norms, activations, pooling not counted)"
    ),
    "macs": "multiply-accumulates of that forward pass = flops / 2; the figure KD papers quote as FLOPs",
}


def expected_calibration_error(logits: torch.Tensor, labels: torch.Tensor, n_bins: int = ECE_BINS) -> float:
    """ECE of softmax(logits) with n_bins equal-width bins over (0, 1] (Guo et al. 2017)."""
    probs = torch.softmax(logits.float(), dim=1)
    confidence, predicted = probs.max(dim=1)
    correct = (predicted == labels.to(predicted.device)).float()
    # Bin b holds confidences in (b/n, (b+1)/n]; softmax confidence is never 0.
    bins = (torch.ceil(confidence * n_bins).long() - 1).clamp(0, n_bins - 1)
    sum_conf = torch.bincount(bins, weights=confidence, minlength=n_bins)
    sum_correct = torch.bincount(bins, weights=correct, minlength=n_bins)
    # sum_b |B_b|/n * |acc_b - conf_b| == sum_b |sum_correct_b - sum_conf_b| / n
    return float((sum_correct - sum_conf).abs().sum() / max(len(labels), 1))


def negative_log_likelihood(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean -log p(label) under softmax(logits)."""
    return float(F.cross_entropy(logits.float(), labels.to(logits.device), reduction="mean"))


def _ratio(numerator: float, denominator: float) -> float | None:
    return None if denominator == 0 else numerator / denominator


def _mean_or_none(values: list[float | None]) -> float | None:
    if not values or any(v is None for v in values):
        return None
    return sum(values) / len(values)  # type: ignore[arg-type]


def summarize_accuracies(
    acc: Mapping[str, Mapping[int, float]], clean_acc: float | None
) -> dict[str, object]:
    """From acc[corruption][severity] (fractions) to corruption_acc, mce, per_* and retention."""
    if not acc or any(not row for row in acc.values()):
        raise ValueError("need at least one corruption with at least one severity")
    severities = sorted(next(iter(acc.values())))
    if any(sorted(row) != severities for row in acc.values()):
        raise ValueError("every corruption must have the same severities")
    cells = [row[s] for row in acc.values() for s in severities]
    corruption_acc = sum(cells) / len(cells)
    return {
        "corruption_acc": corruption_acc,
        "mce": 100.0 - 100.0 * corruption_acc,
        "per_corruption": {c: {str(s): float(row[s]) for s in severities} for c, row in acc.items()},
        "per_severity": {str(s): sum(row[s] for row in acc.values()) / len(acc) for s in severities},
        "robustness_retention": None if clean_acc is None else _ratio(corruption_acc, clean_acc),
    }


def _errors(block: Mapping) -> dict[str, dict[str, float]]:
    return {c: {s: 1.0 - a for s, a in row.items()} for c, row in block["per_corruption"].items()}


def _clean_reference(block: Mapping) -> float:
    """The clean accuracy on the corrupted cells' own images when known, else the test set's."""
    same = block.get("clean_acc_same_images")
    return block["clean_acc"] if same is None else same


def compare_to_baseline(
    kd_block: Mapping, baseline_block: Mapping, teacher_block: Mapping | None = None
) -> dict[str, object]:
    """The kd_vs_baseline object of results.json.

    Each block is one model's results: it needs clean_acc, corruption_acc and per_corruption
    (as evaluate_robustness returns them; per_corruption keys may be str or int severities).
    """
    kd_err, base_err = _errors(kd_block), _errors(baseline_block)
    if kd_err.keys() != base_err.keys() or any(kd_err[c].keys() != base_err[c].keys() for c in kd_err):
        raise ValueError("student_kd and student_baseline were evaluated on different corruption cells")
    kd_clean_err = 1.0 - _clean_reference(kd_block)
    base_clean_err = 1.0 - _clean_reference(baseline_block)
    ce: dict[str, float | None] = {}
    relative_ce: dict[str, float | None] = {}
    for c in kd_err:
        kd_sum, base_sum, n_sev = sum(kd_err[c].values()), sum(base_err[c].values()), len(kd_err[c])
        ce[c] = _ratio(kd_sum, base_sum)
        relative_ce[c] = _ratio(kd_sum - n_sev * kd_clean_err, base_sum - n_sev * base_clean_err)
    return {
        "mce_vs_baseline": _mean_or_none(list(ce.values())),
        "ce_vs_baseline": ce,
        "relative_mce_vs_baseline": relative_ce,
        "relative_mce_vs_baseline_mean": _mean_or_none(list(relative_ce.values())),
        "clean_acc_delta": kd_block["clean_acc"] - baseline_block["clean_acc"],
        "corruption_acc_delta": kd_block["corruption_acc"] - baseline_block["corruption_acc"],
        "teacher_retention": {
            "student_kd": teacher_retention(kd_block, teacher_block),
            "student_baseline": teacher_retention(baseline_block, teacher_block),
        },
    }


def teacher_retention(student_block: Mapping, teacher_block: Mapping | None) -> dict[str, float | None]:
    """student / teacher for clean_acc and corruption_acc (None without a teacher or at 0)."""
    out: dict[str, float | None] = {}
    for key, name in (("clean_acc", "clean"), ("corruption_acc", "corrupted")):
        teacher_value = None if teacher_block is None else teacher_block.get(key)
        student_value = student_block.get(key)
        out[name] = None if teacher_value is None or student_value is None else _ratio(
            student_value, teacher_value
        )
    return out
