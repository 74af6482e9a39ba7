"""A job's headline numbers, stored on the job row as results_summary and printed by `kd results`.

Pure Python (no torch, no database): the worker stores it, the API serves it, the `kd` client and the
pages print it. Accuracy-type figures carry their spread over the job's seeds: {mean, ci_half_width, n}
(ci_half_width is null with one seed, and the text form then says "n=1", never "± 0").
"""

from __future__ import annotations

from typing import Any

# Keys of results.json's model blocks, in the order tables read them.
MODEL_KEYS = ("teacher", "student_baseline", "student_kd")
MODEL_LABELS = {"teacher": "teacher", "student_baseline": "baseline", "student_kd": "distilled"}
# Figures that vary with the training seed: reported as mean and 95% interval half-width.
SPREAD_FIELDS = ("clean_acc", "corruption_acc", "mce", "robustness_retention", "ece")
# Figures of the architecture (or the exported model): one value.
SIZE_FIELDS = ("params", "macs", "flops", "size_bytes", "latency_ms")
PAIRED_FIELDS = ("clean_acc", "corruption_acc")


def _spread(stats: Any, fallback: Any) -> dict[str, Any] | None:
    """{mean, ci_half_width, n} from a kdcore.stats dict, or from a lone value of an older results.json."""
    if isinstance(stats, dict) and stats.get("mean") is not None:
        return {"mean": stats["mean"], "ci_half_width": stats.get("ci_half_width"), "n": stats.get("n", 1)}
    if isinstance(fallback, int | float):
        return {"mean": float(fallback), "ci_half_width": None, "n": 1}
    return None


def summarize_results(results: dict) -> dict[str, Any]:
    """{teacher|student_baseline|student_kd: {field: spread or value}, kd_vs_baseline: {field: spread + p_value},
    seeds: n} for the models present."""
    summary_stats = results.get("summary") if isinstance(results.get("summary"), dict) else {}
    out: dict[str, Any] = {}
    for name in MODEL_KEYS:
        block = results.get(name)
        if not isinstance(block, dict):
            continue
        stats = summary_stats.get(name) or {}
        row: dict[str, Any] = {f: _spread(stats.get(f), block.get(f)) for f in SPREAD_FIELDS}
        row.update({f: block.get(f) for f in SIZE_FIELDS})
        out[name] = row
    paired = (results.get("kd_vs_baseline") or {}).get("paired") or {}
    if "student_baseline" in out:
        deltas = {}
        for field in PAIRED_FIELDS:
            stats = paired.get(field)
            base, kd = (results.get("student_baseline") or {}).get(field), (results.get("student_kd") or {}).get(field)
            lone = kd - base if isinstance(kd, int | float) and isinstance(base, int | float) else None
            spread = _spread(stats, lone)
            if spread is not None:
                spread["p_value"] = stats.get("p_value") if isinstance(stats, dict) else None
            deltas[field] = spread
        out["kd_vs_baseline"] = deltas
    runs = results.get("runs")
    out["seeds"] = len(runs) if isinstance(runs, list) and runs else 1
    return out


def format_spread(spread: dict[str, Any] | None, percent: bool = True, signed: bool = False) -> str:
    """'91.20% ± 1.30 (n=3)', '91.20% (n=1)', '-' ; with signed, '+1.10 pts ± 0.90 (n=3, p=0.04)'."""
    if not spread or spread.get("mean") is None:
        return "-"
    scale, unit = (100.0, "%") if percent else (1.0, "")
    sign = "+" if signed else ""
    text = f"{spread['mean'] * scale:{sign}.2f}{' pts' if signed and percent else unit}"
    extra = f"n={spread.get('n', 1)}"
    if spread.get("p_value") is not None:
        extra += f", p={spread['p_value']:.3g}"
    if spread.get("ci_half_width") is not None:
        return f"{text} ± {spread['ci_half_width'] * scale:.2f} ({extra})"
    return f"{text} ({extra})"


def format_quantity(value: Any, kind: str) -> str:
    """A size-type figure as tables print it: kind "acc" (0..1 -> %), "params", "size" (bytes) or "ms"."""
    if value is None:
        return "-"
    if kind == "acc":
        return f"{100 * value:.2f}%" if value <= 1.0 else f"{value:.2f}%"
    if kind == "params":
        return f"{value / 1e6:.3f} M"
    if kind == "size":
        return f"{value / 1024:.1f} KiB" if value < 1024**2 else f"{value / 1024**2:.2f} MiB"
    return f"{value:.2f} ms"
