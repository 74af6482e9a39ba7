"""The compare page's chart: one model's accuracy-vs-severity line per job, in one SVG (kdcore.report)."""

from __future__ import annotations

import re

import pytest

from kdcore.report.figures import accuracy_vs_severity_overlay, severity_stats
from kdcore.report.plots import RUN_STYLES


def _results(clean: float, per_severity: dict[str, float]) -> dict:
    block = {"clean_acc": clean + 0.05, "clean_acc_same_images": clean, "per_severity": per_severity,
             "per_corruption": {"gaussian_noise": per_severity, "contrast": per_severity}}
    return {"student_kd": block, "teacher": dict(block)}


def test_one_line_per_job_in_its_own_colour_with_its_numbers_in_the_text():
    runs = [("kd-t4", _results(0.9, {"1": 0.8, "3": 0.6})), ("kd-t2", _results(0.85, {"1": 0.7, "3": 0.5})),
            ("kd-t1", _results(0.8, {"1": 0.75, "5": 0.4}))]
    svg = accuracy_vs_severity_overlay(runs)
    assert svg is not None
    assert len(re.findall(r'id="fig-compare-severity-student-kd-line-\d"', svg)) == 3
    for style in RUN_STYLES[:3]:
        assert f"stroke: {style['color']}".lower() in svg.lower()
    label = re.search(r'aria-label="([^"]*)"', svg)[1]
    assert "kd-t4 90.0% clean, 60.0% at severity 3" in label and "kd-t1 80.0% clean, 40.0% at severity 5" in label
    for tick in ("clean", "1", "3", "5"):  # every job's severities on the axis
        assert f">{tick}</text>" in svg


def test_severity_stats_start_at_the_clean_accuracy_of_the_corrupted_images():
    stats = severity_stats(_results(0.9, {"1": 0.8, "3": 0.6}), "student_kd")
    assert [s["mean"] for s in stats] == [0.9, 0.8, 0.6] and all(s["n"] == 1 for s in stats)
    assert severity_stats({"student_kd": {"clean_acc": 0.9}}, "student_kd") is None  # no corrupted cells
    assert accuracy_vs_severity_overlay([("a", {"student_kd": {"clean_acc": 0.9}})]) is None


def test_more_jobs_than_colours_is_refused():
    with pytest.raises(ValueError, match="at most"):
        accuracy_vs_severity_overlay([(str(i), _results(0.9, {"1": 0.8})) for i in range(len(RUN_STYLES) + 1)])
