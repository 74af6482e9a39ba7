"""results_summary and `kd results`: mean ± 95% half-width over seeds, "n=1" with one seed, never "± 0"."""

from __future__ import annotations

import pytest

from kdcli.client import results_table
from kdcore.stats import describe, paired
from kdservice.summaries import format_spread, summarize_results


def _block(clean: float, corrupted: float) -> dict:
    return {"clean_acc": clean, "corruption_acc": corrupted, "mce": 100 - 100 * corrupted, "params": 1000,
            "size_bytes": 4096, "latency_ms": 1.5}


def test_one_seed_says_n1_and_has_no_interval():
    results = {"teacher": _block(0.95, 0.80), "student_baseline": _block(0.90, 0.70),
               "student_kd": _block(0.92, 0.74)}
    summary = summarize_results(results)
    assert summary["seeds"] == 1
    assert summary["student_kd"]["clean_acc"] == {"mean": 0.92, "ci_half_width": None, "n": 1}
    assert summary["kd_vs_baseline"]["clean_acc"]["mean"] == pytest.approx(0.02)
    text = format_spread(summary["student_kd"]["clean_acc"])
    assert text == "92.00% (n=1)" and "±" not in text
    table = results_table(summary)
    assert "distilled" in table and "n=1" in table and "±" not in table


def test_several_seeds_show_mean_and_half_width_from_the_summary():
    kd, base = [0.91, 0.93, 0.92], [0.89, 0.90, 0.88]
    runs = [{"seed": s, "student_kd": _block(k, 0.7), "student_baseline": _block(b, 0.6)}
            for s, k, b in zip((0, 1, 2), kd, base, strict=True)]
    results = {"teacher": _block(0.95, 0.8), "student_kd": runs[1]["student_kd"],
               "student_baseline": runs[1]["student_baseline"], "runs": runs,
               "summary": {"student_kd": {"clean_acc": describe(kd)}, "student_baseline": {"clean_acc": describe(base)},
                           "teacher": {"clean_acc": describe([0.95])}},
               "kd_vs_baseline": {"paired": {"clean_acc": paired(kd, base)}}}
    summary = summarize_results(results)
    assert summary["seeds"] == 3
    spread = summary["student_kd"]["clean_acc"]
    assert spread["mean"] == pytest.approx(0.92) and spread["n"] == 3
    assert spread["ci_half_width"] == pytest.approx(describe(kd)["ci_half_width"])
    assert format_spread(spread) == f"92.00% ± {100 * spread['ci_half_width']:.2f} (n=3)"
    delta = summary["kd_vs_baseline"]["clean_acc"]
    assert delta["p_value"] == pytest.approx(paired(kd, base)["p_value"])
    assert format_spread(delta, signed=True).startswith("+3.00 pts ± ")
    # the teacher is trained once: n=1 even in a three-seed job
    assert summary["teacher"]["clean_acc"]["n"] == 1 and summary["teacher"]["clean_acc"]["ci_half_width"] is None


def test_without_baseline_there_is_no_difference_row():
    summary = summarize_results({"teacher": _block(0.95, 0.8), "student_kd": _block(0.9, 0.7)})
    assert "kd_vs_baseline" not in summary and "student_baseline" not in summary
    assert "distilled - baseline" not in results_table(summary)
