"""The report's charts: matplotlib figures written as small, deterministic, accessible inline SVG.

No pyplot (no global figure state, no backend to select): each chart is a `Figure` saved to SVG text.
Text stays text (`svg.fonttype: none`, DejaVu Sans then the generic sans-serif), so nothing is fetched
and no glyph outlines bloat the file; ids are salted per figure, so ten SVGs can share one HTML page;
the Date metadata is dropped, so the same numbers give the same bytes.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from html import escape

import matplotlib
import numpy as np
from matplotlib.colors import LinearSegmentedColormap, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

# One colour, marker and line style per model, everywhere (Okabe-Ito colours: safe for colour-blind readers;
# markers and dashes keep the lines apart in gray-scale too).
MODEL_STYLE: dict[str, dict[str, str]] = {
    "teacher": {"color": "#555555", "marker": "s", "linestyle": "--"},
    "student_baseline": {"color": "#D55E00", "marker": "^", "linestyle": "-"},
    "student_kd": {"color": "#0072B2", "marker": "o", "linestyle": "-"},
}
# Overlays of several jobs (the service's compare page): one colour and marker per job, in this order
# (the Okabe-Ito colours again, with a marker each, so six lines stay apart in gray-scale too).
RUN_STYLES: tuple[dict[str, str], ...] = (
    {"color": "#0072B2", "marker": "o"}, {"color": "#D55E00", "marker": "^"}, {"color": "#009E73", "marker": "s"},
    {"color": "#CC79A7", "marker": "D"}, {"color": "#E69F00", "marker": "v"}, {"color": "#555555", "marker": "P"},
)
MODEL_LABEL: dict[str, str] = {
    "teacher": "teacher",
    "student_baseline": "baseline (no KD)",
    "student_kd": "distilled (KD)",
}

# KD minus baseline: red = KD worse, white = no difference, blue = KD better.
DIFF_CMAP = LinearSegmentedColormap.from_list("kd_minus_baseline", ["#b2182b", "#f4a582", "#ffffff", "#92c5de",
                                                                   "#2166ac"])
ACC_CMAP = "viridis"

_RC = {
    "svg.fonttype": "none",
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans"],
    "font.size": 8,
    "axes.titlesize": 9,
    "axes.labelsize": 8,
    "legend.fontsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "text.parse_math": False,  # a "$" in a label is a dollar sign, not TeX
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e3e3e3",
    "grid.linewidth": 0.6,
    "lines.linewidth": 1.4,
    "lines.markersize": 4,
}
_FIG_ID = re.compile(r"[a-z][a-z0-9_-]*")  # an HTML id and a CSS selector without escaping
_GEOMETRY_ATTR = re.compile(r' (d|x|y|transform)="([^"]*)"')
_NUMBER = re.compile(r"-?\d+\.\d+")
_FONT_STYLE = "; font-family: 'DejaVu Sans', sans-serif"  # set once per figure in its <style> instead


@dataclass(frozen=True)
class Series:
    """One line of a chart. yerr: (below, above) distances from y, or None for no error bars.
    label None leaves the line out of the legend (the second and later seeds of a model). style, when
    given, overrides parts of the model's style (a RUN_STYLES entry: one colour per job in an overlay)."""

    model: str
    x: Sequence[float]
    y: Sequence[float]
    label: str | None = None
    yerr: tuple[Sequence[float], Sequence[float]] | None = None
    style: Mapping[str, str] | None = None


@dataclass(frozen=True)
class ReliabilityCurve:
    """Per confidence bin: mean confidence and accuracy (None for an empty bin), and the image count."""

    model: str
    confidence: Sequence[float | None]
    accuracy: Sequence[float | None]
    count: Sequence[int]
    label: str


def _short(match: re.Match) -> str:
    text = f"{float(match.group()):.1f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _finish(svg: str, fig_id: str, title: str, alt: str) -> str:
    """matplotlib's SVG file -> an inline <svg> element: no prolog, DOCTYPE, metadata or namespace URLs,
    coordinates to 0.1 pt, the viewBox only (CSS sizes it), then role, aria-label, <title> and <desc>."""
    if not _FIG_ID.fullmatch(fig_id):
        raise ValueError(f"fig_id must be a plain lower-case identifier, got {fig_id!r}")
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"\s*<metadata>.*?</metadata>", "", svg, flags=re.S)
    svg = re.sub(r"\s*<!--.*?-->", "", svg, flags=re.S)
    svg = svg.replace("xlink:href", "href")  # SVG 2: plain href
    # matplotlib numbers its groups (figure_1, axes_1, ...) alike in every figure: ids must be unique in a page.
    svg = re.sub(r'<g id="(?!' + re.escape(fig_id) + r'-)[^"]*"', "<g", svg)
    svg = re.sub(r' transform="rotate\(-0 [^"]*"', "", svg.replace(_FONT_STYLE, ""))  # unrotated text
    svg = re.sub(r"<style[^>]*>[^<]*</style>", f"<style>#{fig_id} *{{stroke-linejoin:round;stroke-linecap:butt}}"
                 f"#{fig_id} text{{font-family:'DejaVu Sans',sans-serif}}</style>", svg, count=1)
    svg = re.sub(r'\n\s*', "\n", svg)
    svg = svg.replace("<g/>\n", "")
    while "<g>\n</g>\n" in svg:  # groups left empty once their ids are gone
        svg = svg.replace("<g>\n</g>\n", "")
    svg = _GEOMETRY_ATTR.sub(lambda m: f' {m.group(1)}="{_NUMBER.sub(_short, m.group(2).replace(chr(10), ""))}"',
                             svg)
    head_end = svg.index(">")
    head = re.sub(r' (xmlns(:xlink)?|width|height|version)="[^"]*"', "", svg[:head_end])
    label = escape(alt, quote=True)
    head = head.replace("<svg", f'<svg id="{escape(fig_id)}" role="img" aria-label="{label}"', 1)
    return f"{head}><title>{escape(title)}</title><desc>{escape(alt)}</desc>{svg[head_end + 1:]}"


def _to_svg(fig: Figure, fig_id: str, title: str, alt: str) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None})
    return _finish(buffer.getvalue(), fig_id, title, alt)


def _rc(fig_id: str) -> dict:
    return {**_RC, "svg.hashsalt": f"kd-report-{fig_id}"}  # deterministic ids, and unique ones per figure


def line_chart_svg(
    series: Sequence[Series],
    *,
    fig_id: str,
    title: str,
    alt: str,
    xlabel: str,
    ylabel: str,
    xticks: tuple[Sequence[float], Sequence[str]] | None = None,
    log_y: bool = False,
    y_limits: tuple[float, float] | None = None,
) -> str:
    """Lines (with error bars where a series has yerr) in the models' colours (or the series' own style);
    the legend under the axes."""
    with matplotlib.rc_context(_rc(fig_id)):
        fig = Figure(figsize=(3.9, 2.8), layout="constrained")
        ax = fig.add_subplot()
        per_model: dict[str, int] = {}
        for s in series:
            style = {**MODEL_STYLE[s.model], **(s.style or {})}
            k = per_model[s.model] = per_model.get(s.model, -1) + 1
            gid = f"{fig_id}-{s.model.replace('_', '-')}"  # ids say which model a line is (tests count them)
            if s.yerr is None:
                ax.plot(s.x, s.y, label=s.label, **style)[0].set_gid(f"{gid}-line-{k}")
                continue
            bars = ax.errorbar(s.x, s.y, yerr=np.asarray(s.yerr, dtype=float), label=s.label, capsize=2.5,
                               elinewidth=1, **style)
            bars.lines[0].set_gid(f"{gid}-line-{k}")
            bars.lines[2][0].set_gid(f"{gid}-errorbars-{k}")
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if xticks is not None:
            ax.set_xticks(list(xticks[0]), list(xticks[1]))
        else:
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(nbins=6, integer=True))
        if log_y:
            ax.set_yscale("log")
            # Plain numbers: with text.parse_math off, the default 10^k labels would print their TeX source.
            ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        else:
            ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(nbins=5))
        if y_limits is not None:
            ax.set_ylim(*y_limits)
        if any(s.label for s in series):
            fig.legend(loc="outside lower center", ncol=3, frameon=False)
        return _to_svg(fig, fig_id, title, alt)


def _cell_text_color(rgba: Sequence[float]) -> str:
    luminance = 0.2126 * rgba[0] + 0.7152 * rgba[1] + 0.0722 * rgba[2]
    return "#000000" if luminance > 0.45 else "#ffffff"


def heatmap_svg(
    values: Sequence[Sequence[float | None]],
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    *,
    fig_id: str,
    title: str,
    alt: str,
    xlabel: str,
    ylabel: str,
    colorbar_label: str,
    diverging: bool = False,
    limits: tuple[float, float] = (0.0, 100.0),
    cell_text: Callable[[float], str] = "{:.0f}".format,
) -> str:
    """One coloured cell per value, cell_text(value) written in it. diverging: DIFF_CMAP on symmetric limits
    (zero is white); otherwise ACC_CMAP on `limits` (the same for every model, so colours compare).
    A None cell is left blank."""
    grid = np.array([[np.nan if v is None else float(v) for v in row] for row in values], dtype=float)
    if diverging:
        finite = np.abs(grid[np.isfinite(grid)])
        bound = max(1.0, float(np.ceil(finite.max()))) if finite.size else 1.0
        norm, cmap = Normalize(-bound, bound), DIFF_CMAP
    else:
        norm, cmap = Normalize(*limits), matplotlib.colormaps[ACC_CMAP]
    with matplotlib.rc_context(_rc(fig_id)):
        fig = Figure(figsize=(3.7, 1.2 + 0.22 * len(row_labels)), layout="constrained")
        ax = fig.add_subplot()
        mesh = ax.pcolormesh(np.ma.masked_invalid(grid), cmap=cmap, norm=norm, edgecolors="white", linewidth=0.6,
                             clip_on=False)  # the cells fill the axes: no clip-path on each of them
        ax.invert_yaxis()
        ax.grid(False)
        ax.set_xticks(np.arange(len(col_labels)) + 0.5, list(col_labels))
        ax.set_yticks(np.arange(len(row_labels)) + 0.5, list(row_labels))
        ax.tick_params(length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
        for (r, c), value in np.ndenumerate(grid):
            if np.isfinite(value):
                # in_layout=False: a cell's text never moves the axes, and the layout skips measuring 100 texts
                ax.text(c + 0.5, r + 0.5, cell_text(value), ha="center", va="center", fontsize=7.5,
                        color=_cell_text_color(cmap(norm(value))), in_layout=False)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        shrink = min(1.0, 4.0 / max(len(row_labels), 1) + 0.35)  # beside a tall map, a bar of readable height
        bar = fig.colorbar(mesh, ax=ax, shrink=shrink, aspect=25)
        bar.set_label(colorbar_label)
        if diverging:  # the symmetric limits themselves, so the reader sees zero is the middle
            bar.set_ticks([-bound, -bound / 2, 0, bound / 2, bound])
        else:
            bar.ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(nbins=5))
        bar.outline.set_visible(False)
        return _to_svg(fig, fig_id, title, alt)


def reliability_svg(curves: Sequence[ReliabilityCurve], *, fig_id: str, title: str, alt: str) -> str:
    """Accuracy against mean confidence per bin, in percent, beside the diagonal of perfect calibration.
    A marker's size grows with its bin's share of the images (a bin of two images is noisy)."""
    with matplotlib.rc_context(_rc(fig_id)):
        fig = Figure(figsize=(3.6, 3.8), layout="constrained")
        ax = fig.add_subplot()
        handles = ax.plot([0, 100], [0, 100], color="#999999", linestyle=":", linewidth=1, label="perfectly calibrated")
        for curve in curves:
            kept = [(c, a, n) for c, a, n in zip(curve.confidence, curve.accuracy, curve.count, strict=True)
                    if c is not None and a is not None and n]
            if not kept:
                continue
            conf, acc, count = (np.array(v, dtype=float) for v in zip(*kept, strict=True))
            style = MODEL_STYLE[curve.model]
            ax.plot(conf * 100, acc * 100, color=style["color"], linestyle=style["linestyle"], linewidth=1)
            sizes = 6 + 60 * count / count.sum()
            ax.scatter(conf * 100, acc * 100, s=sizes, color=style["color"], marker=style["marker"], zorder=3,
                       clip_on=False)
            handles.append(Line2D([], [], label=curve.label, **style))
        ax.set_xlim(0, 100)
        ax.set_ylim(0, 100)
        ax.set_aspect("equal")
        ax.set_xticks([0, 25, 50, 75, 100])
        ax.set_yticks([0, 25, 50, 75, 100])
        ax.set_title(title)
        ax.set_xlabel("mean confidence in bin (%)")
        ax.set_ylabel("accuracy in bin (%)")
        fig.legend(handles=handles, loc="outside lower center", ncol=2, frameon=False)
        return _to_svg(fig, fig_id, title, alt)
