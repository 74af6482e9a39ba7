"""results.json -> the report's numbers: per-seed blocks, their statistics, formatting and the summary table.

Every statistic comes from kdcore.stats (`describe`, `paired`): results.json's own `summary` and
`kd_vs_baseline.paired` when present, else the same functions over the blocks at hand, so older results
(one seed, no `runs`) read as n=1. Nothing here formats HTML: the template escapes what this returns.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from kdcore.stats import describe, paired

MODELS = ("teacher", "student_baseline", "student_kd")
MINUS = "\u2212"
MISSING = "n/a"  # a metric this job did not measure (calibration or latency turned off)


@dataclass(frozen=True)
class Metric:
    """How a fraction-or-number metric is shown: value * scale, `digits` decimals, unit; differences in
    `diff_unit` (percentage points for percentages)."""

    label: str
    unit: str
    scale: float
    digits: int
    diff_unit: str


METRICS: dict[str, Metric] = {
    "clean_acc": Metric("clean acc.", "%", 100, 1, " pp"),
    "corruption_acc": Metric("corruption acc.", "%", 100, 1, " pp"),
    "mce": Metric("mCE", "%", 1, 1, " pp"),
    "robustness_retention": Metric("retention", "%", 100, 1, " pp"),
    "ece": Metric("ECE", "%", 100, 1, " pp"),
    "nll": Metric("NLL (nats)", "", 1, 3, ""),
}
CORRUPTION_METRICS = ("corruption_acc", "mce", "robustness_retention")


@dataclass(frozen=True)
class Cell:
    """One table cell: the value and up to two small lines under it (interval, p-value, n)."""

    value: str
    detail: str = ""
    detail2: str = ""


def blocks(results: Mapping, model: str) -> list[dict]:
    """One block per training seed: runs[i][model] when the job ran several seeds (students), else the
    top-level block (the teacher, or a single-seed job); [] when the job has no such model."""
    runs = [r for r in results.get("runs") or [] if isinstance(r, Mapping)]
    per_seed = [r[model] for r in runs if isinstance(r.get(model), Mapping)]
    if per_seed:
        return per_seed
    return [results[model]] if isinstance(results.get(model), Mapping) else []


def models(results: Mapping) -> list[str]:
    return [m for m in MODELS if blocks(results, m)]


def clean_reference(block: Mapping) -> float | None:
    """The clean accuracy robustness_retention divides by (FORMULAS["robustness_retention"]): on the corrupted
    cells' own images when known, else the test set's. It is severity 0 of the accuracy-vs-severity chart."""
    same = block.get("clean_acc_same_images")
    return block.get("clean_acc") if same is None else same


def corruption_grid(results: Mapping) -> tuple[list[str], list[str]]:
    """(corruption names, severities as strings in numeric order) of the evaluated cells; ([], []) without."""
    for model in ("student_kd", "teacher", "student_baseline"):
        for block in blocks(results, model):
            cells = block.get("per_corruption")
            if isinstance(cells, Mapping) and cells:
                first = next(iter(cells.values()))
                return list(cells), sorted(first, key=float)
    return [], []


def stat(results: Mapping, model: str, metric: str) -> dict | None:
    """describe() of one metric over the model's seeds (results' own summary when it has it); None when
    no seed has a value (metric not measured)."""
    given = ((results.get("summary") or {}).get(model) or {}).get(metric)
    if isinstance(given, Mapping) and given.get("mean") is not None:
        return dict(given)
    out = describe([b.get(metric) for b in blocks(results, model)])
    return out if out["n"] else None


def paired_blocks(results: Mapping) -> tuple[list[dict], list[dict]]:
    """(KD blocks, baseline blocks), one pair per seed; ([], []) without a baseline."""
    runs = [r for r in results.get("runs") or [] if isinstance(r, Mapping) and "student_kd" in r
            and "student_baseline" in r]
    if runs:
        return [r["student_kd"] for r in runs], [r["student_baseline"] for r in runs]
    if isinstance(results.get("student_baseline"), Mapping) and isinstance(results.get("student_kd"), Mapping):
        return [results["student_kd"]], [results["student_baseline"]]
    return [], []


def _pairs(results: Mapping, value) -> tuple[list, list]:
    """(KD values, baseline values), one pair per seed; value(block) -> number or None."""
    kd, base = paired_blocks(results)
    return [value(b) for b in kd], [value(b) for b in base]


def kd_minus_baseline(results: Mapping, metric: str) -> dict | None:
    """paired() KD - baseline of one metric (results' kd_vs_baseline.paired when present); None without a
    baseline or without values."""
    given = ((results.get("kd_vs_baseline") or {}).get("paired") or {}).get(metric)
    if isinstance(given, Mapping) and given.get("mean") is not None:
        return dict(given)
    kd, base = _pairs(results, lambda b: b.get(metric))
    if not kd:
        return None
    out = paired(kd, base)
    return out if out["n"] else None


def kd_minus_baseline_per_corruption(results: Mapping, corruption: str) -> dict | None:
    """paired() KD - baseline of one corruption's accuracy averaged over severities."""
    given = ((results.get("kd_vs_baseline") or {}).get("per_corruption") or {}).get(corruption)
    if isinstance(given, Mapping) and given.get("mean") is not None:
        return dict(given)

    def mean_over_severities(block: Mapping) -> float | None:
        row = (block.get("per_corruption") or {}).get(corruption) or {}
        return describe(list(row.values()))["mean"] if row else None

    kd, base = _pairs(results, mean_over_severities)
    if not kd:
        return None
    out = paired(kd, base)
    return out if out["n"] else None


# ---- formatting -----------------------------------------------------------------------------------------

def signed(x: float, digits: int) -> str:
    text = f"{x:+.{digits}f}"
    return text[1:] if float(text) == 0 else text.replace("-", MINUS)  # 0.0, never -0.0 or +0.0


def number(x: float, digits: int) -> str:
    text = f"{x:.{digits}f}"
    return text.lstrip("-") if float(text) == 0 else text.replace("-", MINUS)  # never "-0.00"


def value_text(metric: str, x: float | None) -> str:
    if x is None:
        return MISSING
    m = METRICS[metric]
    return f"{number(x * m.scale, m.digits)}{m.unit}"


def stat_cell(metric: str, s: dict | None, n_row: int) -> Cell:
    """mean, then "± half-width" of the 95% interval; "n=k" only when k differs from the row's seed count."""
    if s is None:
        return Cell(MISSING)
    m = METRICS[metric]
    parts = [] if s.get("ci_half_width") is None else [f"± {number(s['ci_half_width'] * m.scale, m.digits)}"]
    if s["n"] != n_row:
        parts.append(f"n={s['n']}")
    return Cell(value_text(metric, s["mean"]), " ".join(parts))


def interval_text(metric: str, s: Mapping, short: bool = False) -> str:
    m = METRICS[metric]
    lo, hi = (signed(v * m.scale, m.digits) for v in s["ci95"])
    return f"[{lo}, {hi}]" if short else f"95% CI [{lo}, {hi}]"


def p_text(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def diff_cell(metric: str, s: dict | None) -> Cell:
    """KD - baseline: signed mean in pp (or nats), then its 95% interval and p-value when there are."""
    if s is None:
        return Cell(MISSING)
    m = METRICS[metric]
    value = f"{signed(s['mean'] * m.scale, m.digits)}{m.diff_unit}"
    parts = [interval_text(metric, s, short=True)] if s.get("ci95") else []
    if s.get("p_value") is not None:
        parts.append(p_text(s["p_value"]))
    return Cell(value, *parts)


def count_text(x: float | None, unit: str = "") -> str:
    """77 754 -> "77.8 k"; 1.5e6 -> "1.53 M"."""
    if x is None:
        return MISSING
    for factor, prefix in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if abs(x) >= factor:
            return f"{x / factor:.3g}{prefix}{unit}"
    return f"{x:.3g} {unit}".rstrip()


def ratio_text(x: float | None) -> str:
    return MISSING if x is None else f"{x:.2g}\u00d7" if x < 10 else f"{x:.0f}\u00d7"


def seconds_text(x: float | None) -> str:
    return MISSING if x is None else f"{x:.1f} s" if x < 600 else f"{x / 60:.1f} min"


# ---- the summary table -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Table:
    headers: list[str]
    rows: list[tuple[str, str, list[Cell]]]  # (model key or "diff", row label, cells)


def _compute_key(results: Mapping) -> tuple[str, str]:
    """MACs when the results count them (newer), else forward FLOPs."""
    has_macs = any(b.get("macs") is not None for m in MODELS for b in blocks(results, m))
    return ("macs", "MACs") if has_macs else ("flops", "FLOPs")


def _vs_teacher(block: Mapping) -> Cell:
    ratios = block.get("compression_vs_teacher") or {}
    size, speed = ratios.get("size_ratio"), ratios.get("latency_speedup")
    if size is None and speed is None:
        return Cell(MISSING)
    value = f"{ratio_text(size)} smaller" if size is not None else MISSING
    return Cell(value, f"{ratio_text(speed)} faster" if speed is not None else "")


def summary_table(results: Mapping, labels: Mapping[str, str]) -> Table:
    """Rows: teacher, baseline, distilled (mean over seeds with the 95% half-width, or n=1), then KD - baseline
    with its interval and p-value. Corruption columns only when corruptions were evaluated."""
    corrupted = bool(corruption_grid(results)[0])
    quality = ["clean_acc", *(CORRUPTION_METRICS if corrupted else ()), "ece", "nll"]
    compute_key, compute_label = _compute_key(results)
    headers = ["seeds (n)", *(METRICS[k].label for k in quality), "params", "size", compute_label, "CPU latency",
               "vs teacher"]
    rows = []
    for model in models(results):
        top = results[model] if isinstance(results.get(model), Mapping) else blocks(results, model)[0]
        n_row = len(blocks(results, model))
        cells = [Cell(str(n_row))]
        cells += [stat_cell(k, stat(results, model, k), n_row) for k in quality]
        latency = top.get("latency_ms")
        cells += [Cell(count_text(top.get("params"))), Cell(count_text(top.get("size_bytes"), "B")),
                  Cell(count_text(top.get(compute_key))),
                  Cell(MISSING if latency is None else f"{latency:.2f} ms"),
                  Cell("reference") if model == "teacher" else _vs_teacher(top)]
        rows.append((model, labels[model], cells))
    if "student_baseline" in models(results):
        diffs = [kd_minus_baseline(results, k) for k in quality]
        n_pairs = max((d["n"] for d in diffs if d), default=0)
        cells = [Cell(str(n_pairs))] + [diff_cell(k, d) for k, d in zip(quality, diffs, strict=True)]
        cells += [Cell("")] * 5
        rows.append(("diff", f"KD {MINUS} baseline", cells))
    return Table(headers, rows)
