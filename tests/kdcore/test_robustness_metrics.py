"""Robustness metrics on hand-made accuracy tables; expected values worked out by hand below."""

import json
import math

import pytest
import torch

from kdcore.robustness.metrics import (
    ECE_BINS,
    FORMULAS,
    RELATIVE_CE_MIN_DEGRADATION,
    compare_to_baseline,
    confidence_bins,
    expected_calibration_error,
    negative_log_likelihood,
    summarize_accuracies,
)

# Errors (1 - acc):   kd: gaussian_noise 0.2 + 0.4 = 0.6, fog 0.1 + 0.3 = 0.4, clean 0.05
#                     baseline: gaussian_noise 0.3 + 0.5 = 0.8, fog 0.1 + 0.2 = 0.3, clean 0.10
KD_ACC = {"gaussian_noise": {1: 0.8, 2: 0.6}, "fog": {1: 0.9, 2: 0.7}}
BASE_ACC = {"gaussian_noise": {1: 0.7, 2: 0.5}, "fog": {1: 0.9, 2: 0.8}}


def _block(acc, clean):
    block = summarize_accuracies(acc, clean)
    block["clean_acc"] = clean
    return json.loads(json.dumps(block))  # as the pipeline stores it: severity keys become strings


def test_summary_of_one_model():
    block = summarize_accuracies(KD_ACC, 0.95)
    assert block["corruption_acc"] == pytest.approx(3.0 / 4)
    assert block["mce"] == pytest.approx(25.0)
    assert block["per_severity"] == pytest.approx({"1": 0.85, "2": 0.65})
    assert block["per_corruption"]["fog"] == {"1": 0.9, "2": 0.7}
    assert block["robustness_retention"] == pytest.approx(0.75 / 0.95)
    assert summarize_accuracies(KD_ACC, 0.0)["robustness_retention"] is None
    assert summarize_accuracies(KD_ACC, None)["robustness_retention"] is None


def test_summary_needs_the_same_severities_everywhere():
    with pytest.raises(ValueError, match="same severities"):
        summarize_accuracies({"fog": {1: 0.5}, "snow": {2: 0.5}}, 0.9)


def test_compare_to_baseline_hand_computed():
    kd, base = _block(KD_ACC, 0.95), _block(BASE_ACC, 0.90)
    teacher = {"clean_acc": 0.96, "corruption_acc": 0.8}
    out = compare_to_baseline(kd, base, teacher)
    assert out["ce_vs_baseline"] == pytest.approx({"gaussian_noise": 0.6 / 0.8, "fog": 0.4 / 0.3})
    assert out["mce_vs_baseline"] == pytest.approx((0.75 + 4 / 3) / 2)
    # Hendrycks relative CE: sum_s (E(c, s) - E_clean), the clean error subtracted once per severity.
    assert out["relative_mce_vs_baseline"] == pytest.approx(
        {"gaussian_noise": (0.6 - 0.1) / (0.8 - 0.2), "fog": (0.4 - 0.1) / (0.3 - 0.2)}
    )
    assert out["relative_mce_vs_baseline_mean"] == pytest.approx((5 / 6 + 3.0) / 2)
    assert out["relative_mce_vs_baseline_terms"] == 2
    assert out["relative_mce_vs_baseline_undefined"] == {} and out["relative_mce_vs_baseline_negative"] == {}
    assert out["clean_acc_delta"] == pytest.approx(0.05)
    assert out["corruption_acc_delta"] == pytest.approx(0.75 - 0.725)
    assert out["teacher_retention"]["student_kd"] == pytest.approx(
        {"clean": 0.95 / 0.96, "corrupted": 0.75 / 0.8}
    )
    assert out["teacher_retention"]["student_baseline"] == pytest.approx(
        {"clean": 0.90 / 0.96, "corrupted": 0.725 / 0.8}
    )
    json.dumps(out, allow_nan=False)  # results.json must stay strict JSON


def test_zero_denominators_give_null():
    perfect = {"fog": {1: 1.0, 2: 1.0}, "snow": {1: 0.5, 2: 0.5}}
    # baseline snow: sum E = 1.0 = 2 * clean error 0.5, so the relative CE denominator is 0.
    kd, base = _block(perfect, 0.75), _block(perfect, 0.5)
    out = compare_to_baseline(kd, base, {"clean_acc": 0.0, "corruption_acc": 0.0})
    assert out["ce_vs_baseline"]["fog"] is None and out["ce_vs_baseline"]["snow"] == pytest.approx(1.0)
    assert out["mce_vs_baseline"] is None
    assert out["relative_mce_vs_baseline"] == {"fog": None, "snow": None}  # denominators -1.0 and 0
    assert set(out["relative_mce_vs_baseline_undefined"]) == {"fog", "snow"}
    assert out["relative_mce_vs_baseline_mean"] is None and out["relative_mce_vs_baseline_terms"] == 0
    assert out["teacher_retention"]["student_kd"] == {"clean": None, "corrupted": None}
    assert compare_to_baseline(kd, base, None)["teacher_retention"]["student_baseline"]["clean"] is None


def test_compare_refuses_different_cells():
    with pytest.raises(ValueError, match="different corruption cells"):
        compare_to_baseline(_block(KD_ACC, 0.9), _block({"fog": {1: 0.5, 2: 0.5}}, 0.9))


def _logits_for(confidences):
    """Two-class logits whose softmax puts `confidence` on class 0."""
    p = torch.tensor(confidences, dtype=torch.float64)
    return torch.stack([p.log(), (1 - p).log()], dim=1)


def test_ece_hand_computed():
    # Four at confidence 0.9 (bin (0.867, 0.933]), 3 of them right: |0.75 - 0.9| * 4/6 = 0.1.
    # Two at confidence 0.7 (bin (0.667, 0.733]), both right:      |1.0 - 0.7| * 2/6 = 0.1.
    logits = _logits_for([0.9, 0.9, 0.9, 0.9, 0.7, 0.7])
    labels = torch.tensor([0, 0, 0, 1, 0, 0])
    assert expected_calibration_error(logits, labels) == pytest.approx(0.2, abs=1e-6)
    assert expected_calibration_error(_logits_for([0.9, 0.9]), torch.tensor([0, 0])) == pytest.approx(0.1)


def test_ece_with_one_bin_is_the_gap_between_accuracy_and_mean_confidence():
    gen = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(200, 5, generator=gen), torch.randint(0, 5, (200,), generator=gen)
    probs = logits.softmax(1)
    gap = abs((probs.argmax(1) == labels).float().mean() - probs.max(1).values.mean())
    assert expected_calibration_error(logits, labels, n_bins=1) == pytest.approx(float(gap), abs=1e-6)
    assert expected_calibration_error(logits, labels) >= float(gap) - 1e-6  # binning never lowers it


def test_nll_hand_computed():
    logits = _logits_for([0.9, 0.9])
    value = negative_log_likelihood(logits, torch.tensor([0, 1]))
    assert value == pytest.approx((-math.log(0.9) - math.log(0.1)) / 2, rel=1e-5)


def test_formulas_name_every_reported_metric():
    reported = set(summarize_accuracies(KD_ACC, 0.9)) | set(compare_to_baseline(
        _block(KD_ACC, 0.9), _block(BASE_ACC, 0.9), None))
    assert reported <= set(FORMULAS)
    assert {"ece", "nll", "corrupted_ece", "corrupted_nll"} <= set(FORMULAS)


def test_relative_ce_uses_the_clean_accuracy_of_the_corrupted_images_when_known():
    """With max_images, the corrupted cells use a subset of the test images: E_clean comes from those."""
    kd, base = _block(KD_ACC, 0.95), _block(BASE_ACC, 0.90)
    kd["clean_acc_same_images"], base["clean_acc_same_images"] = 0.85, 0.80  # errors 0.15 and 0.20
    out = compare_to_baseline(kd, base)
    # fog: the baseline's corrupted errors 0.1 + 0.2 are below twice its clean error 0.2: undefined.
    assert out["relative_mce_vs_baseline"] == pytest.approx({"gaussian_noise": (0.6 - 0.3) / (0.8 - 0.4),
                                                             "fog": None})
    assert "-5.00 points per severity" in out["relative_mce_vs_baseline_undefined"]["fog"]
    assert out["relative_mce_vs_baseline_mean"] == pytest.approx(0.75)
    assert out["relative_mce_vs_baseline_terms"] == 1
    assert out["clean_acc_delta"] == pytest.approx(0.05)  # still the whole test set's clean accuracy


def test_relative_ce_needs_the_baseline_to_degrade_by_a_point_per_severity():
    # Baseline clean 0.90 (error 0.10); severities 1, 2. Under fog it loses 0.5 point per severity on
    # average (errors 0.10 and 0.11: 0.01 over two severities), under snow 2 points (0.12, 0.12).
    base = _block({"fog": {1: 0.90, 2: 0.89}, "snow": {1: 0.88, 2: 0.88}, "blur": {1: 0.7, 2: 0.5}}, 0.90)
    # KD clean 0.80 (error 0.20): snow errors 0.21 + 0.23, blur errors 0.15 + 0.17, below its clean error.
    kd = _block({"fog": {1: 0.75, 2: 0.7}, "snow": {1: 0.79, 2: 0.77}, "blur": {1: 0.85, 2: 0.83}}, 0.80)
    out = compare_to_baseline(kd, base)
    assert RELATIVE_CE_MIN_DEGRADATION == 0.01
    assert out["relative_mce_vs_baseline"]["fog"] is None
    assert "+0.50 points per severity" in out["relative_mce_vs_baseline_undefined"]["fog"]
    assert out["relative_mce_vs_baseline"]["snow"] == pytest.approx((0.44 - 0.4) / (0.24 - 0.2))
    blur = (0.32 - 0.4) / (0.8 - 0.2)
    assert out["relative_mce_vs_baseline"]["blur"] == pytest.approx(blur) and blur < 0
    assert "left out of the mean" in out["relative_mce_vs_baseline_negative"]["blur"]
    assert set(out["relative_mce_vs_baseline_negative"]) == {"blur"}
    # The mean averages snow alone and says so; the negative and the undefined term are not in it.
    assert out["relative_mce_vs_baseline_mean"] == pytest.approx(1.0)
    assert out["relative_mce_vs_baseline_terms"] == 1
    json.dumps(out, allow_nan=False)


def test_confidence_bins_hand_computed_and_ece_comes_from_them():
    # Confidences 0.9, 0.9, 0.9 (bin 13: (13/15, 14/15]), 0.7 (bin 10: (10/15, 11/15]); two right in bin 13.
    logits = _logits_for([0.9, 0.9, 0.9, 0.7])
    labels = torch.tensor([0, 0, 1, 0])
    diagram = confidence_bins(logits, labels).reliability()
    assert diagram["count"] == [0] * 10 + [1, 0, 0, 3, 0]
    assert diagram["confidence"][13] == pytest.approx(0.9) and diagram["confidence"][10] == pytest.approx(0.7)
    assert diagram["accuracy"][13] == pytest.approx(2 / 3) and diagram["accuracy"][10] == 1.0
    assert all(diagram["accuracy"][b] is None and diagram["confidence"][b] is None for b in range(10))
    expected = (3 * abs(2 / 3 - 0.9) + abs(1.0 - 0.7)) / 4
    assert expected_calibration_error(logits, labels) == pytest.approx(expected, abs=1e-6)
    assert len(diagram["count"]) == ECE_BINS


def test_pooled_bins_equal_the_bins_of_all_images():
    gen = torch.Generator().manual_seed(1)
    logits, labels = torch.randn(300, 10, generator=gen) * 3, torch.randint(0, 10, (300,), generator=gen)
    pooled = confidence_bins(logits[:100], labels[:100]) + confidence_bins(logits[100:], labels[100:])
    whole = confidence_bins(logits, labels)
    assert pooled.reliability()["count"] == whole.reliability()["count"]
    assert pooled.reliability()["accuracy"] == pytest.approx(whole.reliability()["accuracy"])
    assert pooled.ece() == pytest.approx(expected_calibration_error(logits, labels))
    assert sum(whole.reliability()["count"]) == 300
