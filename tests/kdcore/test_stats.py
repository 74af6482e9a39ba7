"""kdcore.stats against textbook values and scipy's own paired t-test."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from kdcore.stats import describe, paired

T_975_DF4 = 2.7764451051977987  # Student t quantile, 0.975, 4 degrees of freedom (printed tables: 2.776)


def test_describe_matches_the_textbook_interval():
    out = describe([1.0, 2.0, 3.0, 4.0, 5.0])
    assert out["n"] == 5 and out["mean"] == pytest.approx(3.0)
    assert out["std"] == pytest.approx(math.sqrt(2.5))
    half = T_975_DF4 * math.sqrt(2.5) / math.sqrt(5)
    assert out["ci_half_width"] == pytest.approx(half)
    assert out["ci95"] == pytest.approx([3.0 - half, 3.0 + half])
    assert out["note"] is None


def test_one_value_has_no_interval_and_says_why():
    out = describe([0.7])
    assert out["mean"] == 0.7 and out["n"] == 1
    assert out["std"] is None and out["ci95"] is None and out["ci_half_width"] is None
    assert "n=1" in out["note"]


def test_null_values_are_left_out_and_counted():
    out = describe([0.5, None, 0.7])
    assert out["n"] == 2 and out["mean"] == pytest.approx(0.6)
    assert "1 of 3" in out["note"]
    assert describe([None])["n"] == 0


def test_paired_equals_scipy_ttest_rel():
    rng = np.random.default_rng(3)
    base = rng.uniform(0.6, 0.8, size=6)
    kd = base + rng.normal(0.01, 0.01, size=6)
    out = paired(list(kd), list(base))
    reference = scipy_stats.ttest_rel(kd, base)
    assert out["p_value"] == pytest.approx(reference.pvalue)
    assert out["mean"] == pytest.approx(float(np.mean(kd - base)))
    assert out["per_seed"] == pytest.approx(list(kd - base))
    lo, hi = out["ci95"]
    assert lo < out["mean"] < hi


def test_paired_with_one_seed_or_constant_differences_has_no_p_value():
    one = paired([0.8], [0.7])
    assert one["p_value"] is None and one["ci95"] is None and one["mean"] == pytest.approx(0.1)
    same = paired([0.8, 0.9], [0.7, 0.8])
    assert same["p_value"] is None and same["ci95"] is None and "same difference" in same["note"]
    with pytest.raises(ValueError):
        paired([0.1], [0.1, 0.2])
