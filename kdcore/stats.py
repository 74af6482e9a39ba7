"""Spread over training seeds: mean, sample standard deviation and the Student-t 95% interval; paired
differences (same seed) with their interval and the two-sided paired t-test p-value.

Pure Python + scipy (no torch). Intervals are never zero by construction: with fewer than two values, or
when every paired difference is identical, the interval and p-value are None and `note` says why.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from scipy import stats as scipy_stats

CONFIDENCE = 0.95
ONE_VALUE_NOTE = "n=1: one seed gives no spread; list several in JobSpec.seeds for an interval"

FORMULAS: dict[str, str] = {
    "mean": "sum_i x_i / n over the seeds that produced a value",
    "std": "sample standard deviation sqrt(sum_i (x_i - mean)^2 / (n - 1))",
    "ci95": "mean -/+ t(0.975, n - 1) * std / sqrt(n) (Student t, two-sided 95%); null when n < 2",
    "ci_half_width": "t(0.975, n - 1) * std / sqrt(n); null when n < 2",
    "paired_difference": "d_i = KD(seed i) - baseline(seed i); mean, std and ci95 of d as above",
    "p_value": "two-sided paired t-test of mean(d) = 0: t = mean(d) / (std(d) / sqrt(n)), n - 1 degrees of "
    "freedom; null when n < 2 or when every d_i is equal (std 0)",
}


def _clean(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def describe(values: Sequence[float | None]) -> dict:
    """{mean, std, n, ci95: [lo, hi] | None, ci_half_width, note} of the values that are not None."""
    xs = _clean(values)
    n = len(xs)
    if n == 0:
        return {"mean": None, "std": None, "n": 0, "ci95": None, "ci_half_width": None, "note": "no values"}
    mean = statistics.fmean(xs)
    if n == 1:
        return {"mean": mean, "std": None, "n": 1, "ci95": None, "ci_half_width": None, "note": ONE_VALUE_NOTE}
    std = statistics.stdev(xs)
    half = float(scipy_stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * std / math.sqrt(n)
    note = None if n == len(values) else f"{len(values) - n} of {len(values)} values were null and left out"
    return {"mean": mean, "std": std, "n": n, "ci95": [mean - half, mean + half], "ci_half_width": half,
            "note": note}


def paired(treatment: Sequence[float | None], control: Sequence[float | None]) -> dict:
    """Paired differences treatment[i] - control[i] (pairs with a None on either side are left out):
    describe() of the differences plus `per_seed` and the paired t-test `p_value`."""
    if len(treatment) != len(control):
        raise ValueError("paired() needs two sequences of the same length (one value per seed)")
    pairs = zip(treatment, control, strict=True)
    diffs = [None if a is None or b is None else float(a) - float(b) for a, b in pairs]
    out = {"per_seed": diffs, **describe(diffs), "p_value": None}
    kept = _clean(diffs)
    if len(kept) >= 2:
        if out["std"] <= 1e-12 * max(1.0, abs(out["mean"])):  # equal up to rounding
            out["note"] = "every seed gave the same difference: the t statistic is undefined"
            out["ci95"], out["ci_half_width"] = None, None
        else:
            t_stat = out["mean"] / (out["std"] / math.sqrt(len(kept)))
            out["p_value"] = float(2.0 * scipy_stats.t.sf(abs(t_stat), len(kept) - 1))
    return out
