"""The report's opening sentences: how much smaller is the student, and did distillation keep or improve
robustness? Computed from the numbers; an effect is called an improvement or a loss only when its 95%
interval excludes zero, and a single seed is said to give no interval."""

from __future__ import annotations

from collections.abc import Mapping

from kdcore.report.view import (
    METRICS,
    count_text,
    interval_text,
    kd_minus_baseline,
    models,
    p_text,
    ratio_text,
    signed,
    stat,
    value_text,
)


def _times(ratio: float, fewer: str, more: str, same: str) -> str:
    """3.5 -> "3.5× fewer"; 0.5 -> "2× more"; about 1 -> same."""
    if abs(ratio - 1) < 0.005:
        return same
    return f"{ratio_text(ratio)} {fewer}" if ratio > 1 else f"{ratio_text(1 / ratio)} {more}"


def _size_sentence(results: Mapping) -> str | None:
    teacher, student = results.get("teacher") or {}, results.get("student_kd") or {}
    ratios = student.get("compression_vs_teacher") or {}
    parts = []
    if ratios.get("params_ratio"):
        parts.append(f"{_times(ratios['params_ratio'], 'fewer', 'more', 'as many')} parameters "
                     f"({count_text(student.get('params'))} vs {count_text(teacher.get('params'))})")
    if ratios.get("size_ratio"):
        parts.append(f"a weights file {_times(ratios['size_ratio'], 'smaller', 'larger', 'of the same size')} "
                     f"({count_text(student.get('size_bytes'), 'B')} vs {count_text(teacher.get('size_bytes'), 'B')})")
    if ratios.get("latency_speedup"):
        parts.append(f"a CPU latency {_times(ratios['latency_speedup'], 'lower', 'higher', 'about equal')} "
                     f"({student['latency_ms']:.2f} ms vs {teacher['latency_ms']:.2f} ms)")
    if not parts:
        return None
    joined = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return (f"Compared with its {teacher.get('arch', '')} teacher, the distilled {student.get('arch', 'student')} "
            f"has {joined}.").replace("  ", " ")


def _effect_sentence(results: Mapping, metric: str, what: str) -> str | None:
    """KD vs the same student trained without distillation on one metric, worded by its interval."""
    diff = kd_minus_baseline(results, metric)
    kd, base = stat(results, "student_kd", metric), stat(results, "student_baseline", metric)
    if diff is None or kd is None or base is None:
        return None
    m = METRICS[metric]
    delta = f"{signed(diff['mean'] * m.scale, m.digits)}{m.diff_unit}"
    levels = f"{value_text(metric, kd['mean'])} vs {value_text(metric, base['mean'])} without distillation"
    if diff.get("ci95") is None:
        if diff["n"] < 2:
            return (f"On one seed, distillation changed {what} by {delta} ({levels}); one seed gives no interval, "
                    f"so this may be seed noise (list several seeds for a 95% interval).")
        return (f"Distillation changed {what} by {delta} on every one of {diff['n']} seeds ({levels}); with no "
                f"spread there is no interval.")
    lo, hi = diff["ci95"]
    evidence = f"{interval_text(metric, diff)}, {diff['n']} seeds"
    if diff.get("p_value") is not None:
        evidence += f", {p_text(diff['p_value'])}"
    higher_is_better = metric not in ("mce", "ece", "nll")
    if lo > 0 or hi < 0:
        better = (lo > 0) == higher_is_better
        verb = "improved" if better else "worsened"
        return f"Distillation {verb} {what}: {levels}, {delta} ({evidence})."
    return (f"Distillation did not measurably change {what}: {levels}, {delta}, and the 95% interval includes 0 "
            f"({evidence}).")


def _teacher_sentence(results: Mapping, corrupted: bool) -> str | None:
    metric = "corruption_acc" if corrupted else "clean_acc"
    kd, teacher = stat(results, "student_kd", metric), stat(results, "teacher", metric)
    if kd is None or teacher is None or not teacher["mean"]:
        return None
    what = "corruption accuracy" if corrupted else "clean accuracy"
    return (f"The distilled student keeps {100 * kd['mean'] / teacher['mean']:.0f}% of the teacher's {what} "
            f"({value_text(metric, kd['mean'])} vs {value_text(metric, teacher['mean'])}).")


def headline(results: Mapping, corrupted: bool) -> list[str]:
    """Plain-text sentences (the template escapes them)."""
    sentences = [_size_sentence(results)]
    has_baseline = "student_baseline" in models(results)
    if corrupted and has_baseline:
        sentences.append(_effect_sentence(results, "corruption_acc", "robustness (corruption accuracy)"))
    elif has_baseline:
        sentences.append(_effect_sentence(results, "clean_acc", "clean accuracy"))
    sentences.append(_teacher_sentence(results, corrupted))
    if not corrupted:
        sentences.append("Robustness was not measured: this job evaluated no corruptions.")
    if not has_baseline:
        sentences.append("No baseline student was trained, so the effect of distillation itself is not measured.")
    return [s for s in sentences if s]
