"""report.html: one self-contained page per job (inline CSS and SVG; no script, font or network request)."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Mapping
from pathlib import Path

import jinja2
from markupsafe import Markup

from kdcore.atomic import write_text_atomic
from kdcore.job_files import REPORT as REPORT_FILE
from kdcore.report import figures
from kdcore.report.headline import headline
from kdcore.report.plots import MODEL_LABEL, MODEL_STYLE
from kdcore.report.view import (
    blocks,
    corruption_grid,
    kd_minus_baseline_per_corruption,
    models,
    number,
    p_text,
    seconds_text,
    signed,
    summary_table,
)

NO_RATIO = "\u2014"  # a ratio with a zero denominator (null in results.json)

# Autoescape everything: job names, class names and spec values come from users.
_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("kdcore.report", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _per_corruption_rows(results: Mapping, names: list[str]) -> list[dict]:
    """KD - baseline per corruption: accuracy difference (mean over severities) with its interval, and the
    Hendrycks-Dietterich error ratios of the exported seed."""
    kvb = results.get("kd_vs_baseline") or {}
    ce, rce = kvb.get("ce_vs_baseline") or {}, kvb.get("relative_mce_vs_baseline") or {}
    rows = []
    for name in names:
        diff = kd_minus_baseline_per_corruption(results, name)
        if diff is None:
            continue
        interval = "" if diff.get("ci95") is None else "[" + ", ".join(signed(100 * v, 1) for v in diff["ci95"]) + "]"
        rows.append({
            "name": name,
            "delta": f"{signed(100 * diff['mean'], 1)} pp",
            "interval": interval,
            "p": "" if diff.get("p_value") is None else p_text(diff["p_value"]),
            "ce": NO_RATIO if ce.get(name) is None else number(ce[name], 2),
            "rce": NO_RATIO if rce.get(name) is None else number(rce[name], 2),
        })
    return rows


def _mean_ratios(results: Mapping) -> list[tuple[str, str]]:
    kvb = results.get("kd_vs_baseline") or {}
    out = []
    for key, label in (("mce_vs_baseline", "mCE relative to the baseline (mean CE ratio)"),
                       ("relative_mce_vs_baseline_mean", "relative mCE (clean error subtracted)")):
        if kvb.get(key) is not None:
            out.append((label, number(kvb[key], 3)))
    return out


def _flat(mapping: Mapping | None) -> list[tuple[str, str]]:
    """Key/value rows for the details tables; nested values as compact JSON."""
    rows = []
    for key, value in (mapping or {}).items():
        rows.append((str(key), value if isinstance(value, str) else json.dumps(value)))
    return rows


def _subtitle(results: Mapping, spec: Mapping) -> list[str]:
    teacher, kd = results.get("teacher") or {}, results.get("student_kd") or {}
    dataset = results.get("dataset") or {}
    parts = [f"{teacher.get('arch', 'teacher')} \u2192 {kd.get('arch', 'student')}"]
    method = (spec.get("distill") or {}).get("method")
    if method:
        parts.append(f"method {method}")
    if dataset.get("source"):
        parts.append(f"data {dataset['source']} ({dataset.get('n_test', '?')} test images)")
    n_seeds = max((len(blocks(results, m)) for m in models(results)), default=1)
    parts.append(f"{n_seeds} seed{'s' if n_seeds != 1 else ''}")
    if results.get("corruption_source") and corruption_grid(results)[0]:
        parts.append(f"corruptions: {results['corruption_source']}")
    return parts


def render_report(results: dict, *, grid_png: bytes | None = None, grid_alt: str | None = None) -> str:
    """The whole report.html as a string. grid_png: the corruption strip (corruption_strip_png) or None;
    grid_alt: its alt text (default: generic, naming the evaluated corruptions)."""
    spec = results.get("spec") or {}
    names, severities = corruption_grid(results)
    present = models(results)
    per_corruption = _per_corruption_rows(results, names) if "student_baseline" in present else []
    bins = [((results.get(m) or {}).get("reliability") or {}).get("bins") for m in present]
    severity_svg = figures.accuracy_vs_severity(results) if names else None
    strip = None
    if grid_png:
        if grid_png[:8] != b"\x89PNG\r\n\x1a\n":
            raise ValueError("grid_png must be PNG bytes (corruption_strip_png)")
        width, height = struct.unpack(">II", grid_png[16:24])  # the IHDR chunk: the page reserves the space
        strip = {
            "width": width,
            "height": height,
            "src": "data:image/png;base64," + base64.b64encode(grid_png).decode("ascii"),
            "alt": grid_alt or ("Example test images, clean and under each evaluated corruption: " + ", ".join(names)
                                if names else "Example test images under corruptions"),
        }
    context = {
        "name": str(spec.get("name") or "job"),
        "subtitle": _subtitle(results, spec),
        "headline": headline(results, corrupted=bool(names)),
        "legend": [(MODEL_LABEL[m], MODEL_STYLE[m]["color"]) for m in present],
        "table": summary_table(results, MODEL_LABEL),
        "arch": {m: str(results[m]["arch"]) for m in present if (results.get(m) or {}).get("arch")},
        "corrupted": bool(names),
        "has_baseline": "student_baseline" in present,
        "n_corruptions": len(names),
        "severities": severities,
        "severity_svg": Markup(severity_svg) if severity_svg else None,
        "heatmaps": [Markup(svg) for svg in figures.heatmaps(results)] if names else [],
        "per_corruption": per_corruption,
        "per_corruption_intervals": any(row["interval"] for row in per_corruption),
        "mean_ratios": _mean_ratios(results) if names else [],
        "reliability": [Markup(svg) for svg in figures.reliability(results)],
        "ece_bins": next((b for b in bins if b), None),
        "training": [Markup(svg) for svg in figures.training_curves(results)],
        "several_seeds": any(len(blocks(results, m)) > 1 for m in present),
        "exported_seed": results.get("exported_seed"),
        "strip": strip,
        "spec_json": json.dumps(spec, indent=2, sort_keys=False),
        "dataset": _flat({k: v for k, v in (results.get("dataset") or {}).items() if k != "classes"}),
        "classes": [str(c) for c in (results.get("dataset") or {}).get("classes") or []],
        "environment": _flat(results.get("environment")),
        "timings": [(k, seconds_text(v)) for k, v in (results.get("timings") or {}).items()
                    if isinstance(v, int | float)],
        "exports": _flat(results.get("exports")),
        "formulas": _flat(results.get("formulas")),
    }
    return _ENV.get_template("report.html.j2").render(**context)


def write_report(results: dict, out_dir: Path, grid_png: bytes | None = None, grid_alt: str | None = None) -> Path:
    """Render and write out_dir/report.html atomically (a temporary file in out_dir, then renamed)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    html = render_report(results, grid_png=grid_png, grid_alt=grid_alt)
    target = out_dir / REPORT_FILE
    write_text_atomic(target, html)
    return target
