"""results.json -> the report's SVG charts, each with alt text written from its own numbers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from kdcore.report import plots
from kdcore.report.plots import MODEL_LABEL, ReliabilityCurve, Series
from kdcore.report.view import blocks, clean_reference, corruption_grid, models, paired_blocks, signed
from kdcore.stats import describe, paired

DODGE = 0.09  # severity units between the models' error bars, so they do not hide each other


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _seeds_note(n: int) -> str:
    return f"mean of {n} seeds, error bars: 95% interval" if n > 1 else "one seed"


def severity_stats(results: Mapping, model: str) -> list[dict] | None:
    """describe() over the model's seeds of its clean accuracy (on the corrupted cells' own images) and of
    its accuracy at each severity (mean over corruptions): the points of an accuracy-vs-severity line, in
    the order of corruption_grid's severities. None when the job has no such model or no corrupted cells."""
    _, severities = corruption_grid(results)
    per_seed = blocks(results, model)
    if not severities or not per_seed:
        return None
    stats = [describe([clean_reference(b) for b in per_seed])]
    stats += [describe([(b.get("per_severity") or {}).get(s) for b in per_seed]) for s in severities]
    return None if any(s["mean"] is None for s in stats) else stats


def _line(stats: list[dict]) -> tuple[list[float], tuple[list[float], list[float]] | None]:
    """(y in %, error bars in % or None) of severity_stats."""
    y = [100 * s["mean"] for s in stats]
    if not all(s["ci95"] is not None for s in stats):
        return y, None
    return y, ([100 * (s["mean"] - s["ci95"][0]) for s in stats], [100 * (s["ci95"][1] - s["mean"]) for s in stats])


def accuracy_vs_severity(results: Mapping) -> str | None:
    names, severities = corruption_grid(results)
    series, alt = [], []
    present = models(results)
    with_bars = any(len(blocks(results, m)) > 1 for m in present)
    for k, model in enumerate(present):
        stats = severity_stats(results, model)
        if stats is None:
            continue
        y, yerr = _line(stats)
        offset = (k - (len(present) - 1) / 2) * DODGE if with_bars else 0.0
        x = [offset] + [float(s) + offset for s in severities]
        series.append(Series(model, x, y, MODEL_LABEL[model], yerr))
        alt.append(f"{MODEL_LABEL[model]} {y[0]:.1f}% clean, {y[-1]:.1f}% at severity {severities[-1]} "
                   f"({_seeds_note(len(blocks(results, model)))})")
    if not series:
        return None
    ticks = ([0.0] + [float(s) for s in severities], ["clean"] + list(severities))
    return plots.line_chart_svg(
        series, fig_id="fig-accuracy-vs-severity", title="Accuracy vs corruption severity",
        alt=f"Line chart of top-1 accuracy, mean over {len(names)} corruptions, against severity "
            f"(clean = the same images uncorrupted): " + "; ".join(alt) + ".",
        xlabel="corruption severity", ylabel="top-1 accuracy (%)", xticks=ticks,
    )


def accuracy_vs_severity_overlay(runs: Sequence[tuple[str, Mapping]], model: str = "student_kd") -> str | None:
    """One chart with one model's accuracy-vs-severity line from each of several jobs ((label, results)
    pairs, at most len(plots.RUN_STYLES)), one colour per job; None when no job has corrupted cells."""
    if len(runs) > len(plots.RUN_STYLES):
        raise ValueError(f"at most {len(plots.RUN_STYLES)} jobs in one chart")
    series, alt, ticks = [], [], set()
    with_bars = any(len(blocks(results, model)) > 1 for _, results in runs)
    for k, (label, results) in enumerate(runs):
        stats = severity_stats(results, model)
        if stats is None:
            continue
        _, severities = corruption_grid(results)
        y, yerr = _line(stats)
        offset = (k - (len(runs) - 1) / 2) * DODGE if with_bars else 0.0
        x = [offset] + [float(s) + offset for s in severities]
        ticks.update(float(s) for s in severities)
        series.append(Series(model, x, y, label, yerr, style=plots.RUN_STYLES[k]))
        alt.append(f"{label} {y[0]:.1f}% clean, {y[-1]:.1f}% at severity {severities[-1]} "
                   f"({_seeds_note(len(blocks(results, model)))})")
    if not series:
        return None
    xticks = sorted(ticks)
    what = MODEL_LABEL[model]
    return plots.line_chart_svg(
        series, fig_id="fig-compare-severity", title=f"Accuracy vs corruption severity: {what}",
        alt=f"Line chart of the {what} student's top-1 accuracy, mean over each job's corruptions, against "
            f"severity (clean = the same images uncorrupted), one line per job: " + "; ".join(alt) + ".",
        xlabel="corruption severity", ylabel="top-1 accuracy (%)",
        xticks=([0.0, *xticks], ["clean", *(f"{t:g}" for t in xticks)]),
    )


def _cell_means(per_seed: list[dict], names: list[str], severities: list[str]) -> list[list[float | None]]:
    def cell(c: str, s: str) -> float | None:
        mean = describe([((b.get("per_corruption") or {}).get(c) or {}).get(s) for b in per_seed])["mean"]
        return None if mean is None else 100 * mean

    return [[cell(c, s) for s in severities] for c in names]


def _extremes(grid: list[list[float | None]], names: list[str], severities: list[str]) -> tuple[tuple, tuple]:
    cells = [(v, c, s) for c, row in zip(names, grid, strict=True) for s, v in zip(severities, row, strict=True)
             if v is not None]
    return min(cells), max(cells)


def heatmaps(results: Mapping) -> list[str]:
    """One accuracy heatmap per model, then KD minus baseline (when the job has a baseline)."""
    names, severities = corruption_grid(results)
    out = []
    for model in models(results):
        per_seed = blocks(results, model)
        grid = _cell_means(per_seed, names, severities)
        if all(v is None for row in grid for v in row):
            continue
        (lo, lo_c, lo_s), (hi, hi_c, hi_s) = _extremes(grid, names, severities)
        seeds = f", mean of {len(per_seed)} seeds" if len(per_seed) > 1 else ""
        out.append(plots.heatmap_svg(
            grid, names, severities, fig_id=f"fig-heatmap-{model.replace('_', '-')}",
            title=f"{MODEL_LABEL[model]}: accuracy (%)",
            alt=f"Heatmap of the {MODEL_LABEL[model]} model's top-1 accuracy in percent for each corruption (rows) "
                f"and severity (columns){seeds}; lowest {lo:.0f}% ({lo_c}, severity {lo_s}), highest {hi:.0f}% "
                f"({hi_c}, severity {hi_s}).",
            xlabel="severity", ylabel="corruption", colorbar_label="top-1 accuracy (%)",
        ))
    if "student_baseline" in models(results):
        kd_runs, base_runs = paired_blocks(results)
        grid = [[_diff_cell(kd_runs, base_runs, c, s) for s in severities] for c in names]
        if any(v is not None for row in grid for v in row):
            (lo, lo_c, lo_s), (hi, hi_c, hi_s) = _extremes(grid, names, severities)
            better = sum(v > 0 for row in grid for v in row if v is not None)
            worse = sum(v < 0 for row in grid for v in row if v is not None)
            seeds = f"mean over {len(kd_runs)} seeds of the per-seed difference" if len(kd_runs) > 1 else "one seed"
            out.append(plots.heatmap_svg(
                grid, names, severities, fig_id="fig-heatmap-kd-minus-baseline",
                title="KD minus baseline: accuracy (pp)", diverging=True, cell_text=lambda v: signed(v, 1),
                alt=f"Diverging heatmap of distilled minus baseline top-1 accuracy in percentage points per "
                    f"corruption and severity ({seeds}); blue cells favour distillation, red the baseline. "
                    f"{better} cells favour distillation and {worse} the baseline; from {lo:+.1f} pp ({lo_c}, "
                    f"severity {lo_s}) to {hi:+.1f} pp ({hi_c}, severity {hi_s}).",
                xlabel="severity", ylabel="corruption", colorbar_label="KD \u2212 baseline (pp)",
            ))
    return out


def _diff_cell(kd_runs: list[dict], base_runs: list[dict], c: str, s: str) -> float | None:
    def cell(b: Mapping) -> float | None:
        return ((b.get("per_corruption") or {}).get(c) or {}).get(s)

    mean = paired([cell(b) for b in kd_runs], [cell(b) for b in base_runs])["mean"]
    return None if mean is None else 100 * mean


TRAINING = (  # history key, chart title, y label, scale, log y
    ("train_loss", "Training loss by epoch", "training loss (log scale)", 1.0, True),
    ("val_acc", "Validation accuracy by epoch", "validation accuracy (%)", 100.0, False),
    ("lr", "Learning rate by epoch", "learning rate", 1.0, False),
)


def training_curves(results: Mapping) -> list[str]:
    """One chart per history key: a line per model and seed (the teacher: its own phase)."""
    out = []
    for key, title, ylabel, scale, log_y in TRAINING:
        series, alt = [], []
        for model in models(results):
            histories = [b.get("history") or [] for b in blocks(results, model)]
            for i, history in enumerate(histories):
                points = [(row["epoch"], scale * row[key]) for row in history if row.get(key) is not None]
                if points:
                    x, y = zip(*points, strict=True)
                    series.append(Series(model, x, y, MODEL_LABEL[model] if i == 0 else None))
            finals = [h[-1][key] * scale for h in histories if h and h[-1].get(key) is not None]
            if finals:
                runs = f" over {len(finals)} seeds" if len(finals) > 1 else ""
                last = sum(finals) / len(finals)
                alt.append(f"{MODEL_LABEL[model]} {len(histories[0])} epochs, last value {last:.3g}{runs}")
        if series:
            out.append(plots.line_chart_svg(
                series, fig_id=f"fig-training-{key.replace('_', '-')}", title=title, xlabel="epoch", ylabel=ylabel,
                log_y=log_y, alt=f"{title}, one line per model and seed: " + "; ".join(alt) + ".",
            ))
    return out


def reliability(results: Mapping) -> list[str]:
    """Clean and corrupted reliability diagrams of the (exported seed's) models; [] without calibration."""
    out = []
    for condition, title, ece_key in (("clean", "Reliability on clean test images", "ece"),
                                      ("corrupted", "Reliability on corrupted test images", "corrupted_ece")):
        curves, alt = [], []
        for model in models(results):
            block = results.get(model) if isinstance(results.get(model), Mapping) else blocks(results, model)[0]
            bins = ((block.get("reliability") or {}).get(condition)) or None
            if not bins:
                continue
            ece = block.get(ece_key)
            label = MODEL_LABEL[model] + (f", ECE {_pct(ece)}" if ece is not None else "")
            curves.append(ReliabilityCurve(model, bins["confidence"], bins["accuracy"], bins["count"], label))
            alt.append(f"{MODEL_LABEL[model]} ECE {_pct(ece)}")
        if curves:
            out.append(plots.reliability_svg(
                curves, fig_id=f"fig-reliability-{condition}", title=title,
                alt=f"{title}: accuracy against mean confidence per confidence bin, one line per model; points "
                    f"below the diagonal are over-confident. " + "; ".join(alt) + ".",
            ))
    return out
