"""Robustness metrics, as results.json reports them (their formulas are in FORMULAS below).

Conventions (also written into results.json through FORMULAS):
- accuracies are fractions in 0..1; errors are E = 1 - accuracy;
- mce is in percent (CIFAR convention: 100 - 100 * corruption_acc, the unnormalised mean error);
- the baseline ratios use Hendrycks & Dietterich (2019) with the no-KD student as the reference;
  relative CE subtracts the clean error once per severity: sum_s (E(c, s) - E_clean);
- a ratio whose denominator is zero is None (null in JSON); a mean over such ratios is None too,
  because silently dropping a term would change what the mean averages over. Relative CE is the
  exception that says so: terms whose denominator is too small to mean anything are null with a
  reason, and its mean reports how many terms it averages.

Also home of the one ECE / NLL implementation (kdcore.evaluate imports it for clean metrics).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F

ECE_BINS = 15
# rCE's denominator sum_s (E_base(c, s) - E_base_clean) is how much corruption c hurts the baseline. Below
# one accuracy point per severity on average it is within evaluation noise (one point is 100 of 10,000
# CIFAR test images, 2 of 200), and a ratio over it explodes or flips sign.
RELATIVE_CE_MIN_DEGRADATION = 0.01

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
        "1 - clean_acc_same_images; null when undefined (below)"
    ),
    "relative_mce_vs_baseline_undefined": (
        f"{{c: reason}}: rCE(c) is null when its denominator is below {RELATIVE_CE_MIN_DEGRADATION} * (number of "
        f"severities), i.e. corruption c hurts the baseline by less than {100 * RELATIVE_CE_MIN_DEGRADATION:g} "
        "accuracy point per severity on average: the ratio would divide by evaluation noise"
    ),
    "relative_mce_vs_baseline_negative": (
        "{c: note} for each rCE(c) below 0 (the KD student's corrupted error under c is below its clean "
        "error): kept in relative_mce_vs_baseline, left out of relative_mce_vs_baseline_mean"
    ),
    "relative_mce_vs_baseline_mean": (
        "mean of rCE(c) over the corruptions where it is defined and not negative; null when there is none"
    ),
    "relative_mce_vs_baseline_terms": "how many rCE(c) relative_mce_vs_baseline_mean averages",
    "clean_acc_delta": "clean_acc(student_kd) - clean_acc(student_baseline)",
    "corruption_acc_delta": "corruption_acc(student_kd) - corruption_acc(student_baseline)",
    "teacher_retention": "student / teacher, for clean_acc and for corruption_acc",
    "ece": (
        f"{ECE_BINS} equal-width confidence bins (lo, hi]: "
        "sum_b |B_b| / n * |acc(B_b) - mean confidence(B_b)|, confidence = max softmax"
    ),
    "reliability": (
        f"per confidence bin b of the ece's {ECE_BINS} bins: count |B_b|, confidence = mean max softmax in "
        "B_b, accuracy = fraction right in B_b (both null when B_b is empty); 'clean' on the test set, "
        "'corrupted' pooled over every corrupted image of every (c, s) cell"
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


@dataclass
class ConfidenceBins:
    """Per-bin sums over images (float64, length n_bins): how many, summed confidence, summed correctness.
    Sums add, so bins of several cells pool into the bins of all their images."""

    count: torch.Tensor
    confidence: torch.Tensor
    correct: torch.Tensor

    def __add__(self, other: ConfidenceBins) -> ConfidenceBins:
        return ConfidenceBins(self.count + other.count, self.confidence + other.confidence,
                              self.correct + other.correct)

    def ece(self) -> float:
        # sum_b |B_b|/n * |acc_b - conf_b| == sum_b |sum_correct_b - sum_conf_b| / n
        return float((self.correct - self.confidence).abs().sum() / max(float(self.count.sum()), 1.0))

    def reliability(self) -> dict[str, list]:
        """{confidence, accuracy, count} per bin; the means are None for an empty bin."""
        counts = [int(n) for n in self.count.tolist()]
        confidence, correct = self.confidence.tolist(), self.correct.tolist()
        return {
            "confidence": [c / n if n else None for c, n in zip(confidence, counts, strict=True)],
            "accuracy": [a / n if n else None for a, n in zip(correct, counts, strict=True)],
            "count": counts,
        }


def confidence_bins(logits: torch.Tensor, labels: torch.Tensor, n_bins: int = ECE_BINS) -> ConfidenceBins:
    """Max-softmax confidence of each image binned into n_bins equal-width bins over (0, 1]."""
    probs = torch.softmax(logits.float(), dim=1)
    confidence, predicted = probs.max(dim=1)
    correct = (predicted == labels.to(predicted.device)).double()
    # Bin b holds confidences in (b/n, (b+1)/n]; softmax confidence is never 0.
    bins = (torch.ceil(confidence * n_bins).long() - 1).clamp(0, n_bins - 1)
    return ConfidenceBins(
        count=torch.bincount(bins, minlength=n_bins).double().cpu(),
        confidence=torch.bincount(bins, weights=confidence.double(), minlength=n_bins).cpu(),
        correct=torch.bincount(bins, weights=correct, minlength=n_bins).cpu(),
    )


def expected_calibration_error(logits: torch.Tensor, labels: torch.Tensor, n_bins: int = ECE_BINS) -> float:
    """ECE of softmax(logits) with n_bins equal-width bins over (0, 1] (Guo et al. 2017)."""
    return confidence_bins(logits, labels, n_bins).ece()


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
    undefined: dict[str, str] = {}
    negative: dict[str, str] = {}
    for c in kd_err:
        kd_sum, base_sum, n_sev = sum(kd_err[c].values()), sum(base_err[c].values()), len(kd_err[c])
        ce[c] = _ratio(kd_sum, base_sum)
        denominator = base_sum - n_sev * base_clean_err
        if denominator < n_sev * RELATIVE_CE_MIN_DEGRADATION:
            relative_ce[c] = None
            undefined[c] = (
                f"under {c} the baseline's error is {100 * denominator / n_sev:+.2f} points per severity above its "
                f"clean error on average; rCE needs at least {100 * RELATIVE_CE_MIN_DEGRADATION:g} (below: noise)"
            )
            continue
        relative_ce[c] = (kd_sum - n_sev * kd_clean_err) / denominator
        if relative_ce[c] < 0:
            negative[c] = (
                f"rCE {relative_ce[c]:.3f} < 0: the KD student's error under {c} is below its clean error; "
                "left out of the mean"
            )
    terms = [v for c, v in relative_ce.items() if v is not None and c not in negative]
    return {
        "mce_vs_baseline": _mean_or_none(list(ce.values())),
        "ce_vs_baseline": ce,
        "relative_mce_vs_baseline": relative_ce,
        "relative_mce_vs_baseline_undefined": undefined,
        "relative_mce_vs_baseline_negative": negative,
        "relative_mce_vs_baseline_mean": sum(terms) / len(terms) if terms else None,
        "relative_mce_vs_baseline_terms": len(terms),
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
