"""What the pages print: the summary table of a job's results_summary, headlines, times and ETAs.

Every number is formatted by kdservice.summaries (the same text `kd results` prints), so a figure reads
the same on the page, in the terminal and in the API's results_summary.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from markupsafe import Markup

from kdservice.summaries import MODEL_KEYS, MODEL_LABELS, format_quantity, format_spread

# (results_summary field, column header, how to print it)
SPREAD_COLUMNS = (
    ("clean_acc", "clean acc", {"percent": True}),
    ("corruption_acc", "corrupted acc", {"percent": True}),
    ("mce", "mCE", {"percent": False}),
    ("robustness_retention", "retention", {"percent": True}),
    ("ece", "ECE", {"percent": True}),
)
SIZE_COLUMNS = (("params", "params", "params"), ("size_bytes", "size", "size"), ("latency_ms", "latency", "ms"))


@dataclass
class SummaryTable:
    headers: list[str]  # "metric", then the models present
    rows: list[list[str]]  # first cell: the metric's name
    deltas: list[tuple[str, str]]  # (what, "+1.10 pts ± 0.90 (n=3, p=0.04)")
    seeds: int


def summary_table(summary: dict[str, Any] | None) -> SummaryTable | None:
    """A results_summary as a table with one row per metric and one column per model (teacher, baseline,
    distilled): narrow enough for a phone or a side-by-side comparison. None when there is no summary."""
    if not summary:
        return None
    models = [key for key in MODEL_KEYS if summary.get(key)]
    rows = [[label] + [format_spread(summary[key].get(field), **options) for key in models]
            for field, label, options in SPREAD_COLUMNS]
    rows += [[label] + [format_quantity(summary[key].get(field), kind) for key in models]
             for field, label, kind in SIZE_COLUMNS]
    deltas = summary.get("kd_vs_baseline") or {}
    delta_rows = [(f"distilled − baseline, {label}", format_spread(deltas.get(field), signed=True))
                  for field, label in (("clean_acc", "clean acc"), ("corruption_acc", "corrupted acc"))
                  if deltas.get(field)]
    return SummaryTable(["metric"] + [MODEL_LABELS[key] for key in models], rows, delta_rows,
                        int(summary.get("seeds") or 1))


def headline(summary: dict[str, Any] | None) -> str:
    """One line for the jobs list: the distilled student's clean and corrupted accuracy."""
    block = (summary or {}).get("student_kd")
    if not block:
        return ""
    return (f"clean {format_spread(block.get('clean_acc'))}, "
            f"corrupted {format_spread(block.get('corruption_acc'))}")


def eta_text(seconds: float | None) -> str:
    """'about 2 min 5 s left' (the same wording as ui.js's etaText)."""
    if seconds is None or seconds < 0:
        return ""
    seconds = round(seconds)
    if seconds < 60:
        return f"about {seconds} s left"
    minutes, rest = divmod(seconds, 60)
    if minutes < 60:
        return f"about {minutes} min {rest} s left"
    hours, minutes = divmod(minutes, 60)
    return f"about {hours} h {minutes} min left"


def when(moment: datetime | None) -> Markup:
    """A <time> in UTC; the pages' script shows it in the reader's own time zone (the UTC text stays its title)."""
    if moment is None:
        return Markup("")
    return Markup('<time datetime="{}">{}</time>').format(moment.isoformat(), moment.strftime("%Y-%m-%d %H:%M:%S UTC"))


def size_text(size: int | None) -> str:
    if size is None:
        return "-"
    return f"{size} B" if size < 1024 else format_quantity(size, "size")
