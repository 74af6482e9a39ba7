"""report.html from real digits runs: what each kind of job shows, what it leaves out, and that it is
self-contained, small, accessible and escapes what users wrote."""

from __future__ import annotations

import copy
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kdcore.data import load_dataset
from kdcore.pipeline import run
from kdcore.report import corruption_strip_png, render_report, write_report
from kdcore.report.strip import MARGIN_PX, RIGHT_PX, STRIP_PANEL_PX, TOP_PX
from kdcore.robustness import corrupt
from kdcore.robustness.grid import GAP_PX
from kdcore.spec import JobSpec

CORRUPTIONS = ["gaussian_noise", "fog", "contrast"]
TINY = {
    "name": "report-tiny",
    "dataset": {"source": "digits", "subset": 500, "test_subset": 120},
    "teacher": {"arch": "resnet20", "train": {"epochs": 2, "batch_size": 64, "lr": 0.1}},
    "student": {"arch": "resnet8"},
    "distill": {"method": "kd"},
    "train": {"epochs": 2, "batch_size": 64, "lr": 0.1, "seed": 0},
    "baseline": True,
    "evaluate": {"corruptions": CORRUPTIONS, "severities": [1, 3]},
    "export": ["safetensors"],
}
SEEDS = (0, 1, 2)
MODELS = ("teacher", "student_baseline", "student_kd")
MAX_BYTES = 300_000


# ---- real runs ----------------------------------------------------------------------------------------------

def _run(tmp: Path, cache_dir: Path, name: str, **changes) -> tuple[dict, JobSpec, Path]:
    spec = JobSpec.model_validate({**TINY, **changes})
    out = tmp / name
    return run(spec, out, cache_dir=cache_dir, device="cpu"), spec, out


@pytest.fixture(scope="module")
def jobs(tmp_path_factory, cache_dir) -> dict[str, dict]:
    """Real digits jobs, seconds each: one seed, three seeds (teacher shared through the cache), one without
    corruptions, one without a baseline and with calibration off. The pipeline writes each one's report."""
    tmp = tmp_path_factory.mktemp("report-jobs")
    single, spec, single_out = _run(tmp, cache_dir, "single")
    multi, _, _ = _run(tmp, cache_dir, "multi", seeds=list(SEEDS),
                       train={k: v for k, v in TINY["train"].items() if k != "seed"})
    clean_only, _, _ = _run(tmp, cache_dir, "clean-only", evaluate={"corruptions": "none"})
    no_baseline, _, _ = _run(tmp, cache_dir, "no-baseline", baseline=False,
                             evaluate={**TINY["evaluate"], "calibration": False})
    data = load_dataset(spec.dataset, cache_dir=cache_dir)
    return {
        "single": single,
        "single_out": single_out,
        "multi": multi,
        "clean_only": clean_only,
        "no_baseline": no_baseline,
        "strip": corruption_strip_png(data.test_x[:3], CORRUPTIONS, severity=3, seed=0),
        "strip_images": data.test_x[:3],
    }


def test_the_pipeline_writes_the_report_beside_results(jobs):
    html = (jobs["single_out"] / "report.html").read_text()
    assert "<svg" in html and "report-tiny" in html
    assert len(html.encode()) < MAX_BYTES


@pytest.fixture(scope="module")
def report(jobs):
    """report(kind) -> the HTML of that job, rendered once per module (a render takes a second or two)."""
    cache: dict[str, str] = {}

    def get(kind: str) -> str:
        if kind not in cache:
            strip = None if kind == "clean_only" else jobs["strip"]  # no corruptions: the pipeline makes no strip
            cache[kind] = render_report(jobs[kind], grid_png=strip)
        return cache[kind]

    return get


# ---- a small DOM from the standard library's parser ------------------------------------------------------

VOID = {"meta", "img", "br", "hr", "input", "link", "source", "wbr", "col", "area", "base", "embed", "param", "track"}


class Node:
    def __init__(self, tag: str, attrs: dict[str, str | None], parent: Node | None):
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.children: list[Node | str] = []

    def iter(self):
        yield self
        for child in self.children:
            if isinstance(child, Node):
                yield from child.iter()

    def find_all(self, tag: str) -> list[Node]:
        return [n for n in self.iter() if n.tag == tag]

    def by_id(self, ident: str) -> Node:
        found = [n for n in self.iter() if n.attrs.get("id") == ident]
        assert len(found) == 1, f"{len(found)} elements with id {ident!r}"
        return found[0]

    def text(self, skip: set[str] = frozenset()) -> str:
        return "".join(c if isinstance(c, str) else "" if c.tag in skip else c.text(skip) for c in self.children)


class Page(HTMLParser):
    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.root = self.node = Node("#document", {}, None)
        self.start_tags: list[str] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.start_tags.append(tag)
        node = Node(tag, dict(attrs), self.node)
        self.node.children.append(node)
        if tag not in VOID:
            self.node = node

    def handle_startendtag(self, tag, attrs):
        self.start_tags.append(tag)
        self.node.children.append(Node(tag, dict(attrs), self.node))

    def handle_endtag(self, tag):
        node = self.node
        while node is not None and node.tag != tag:
            node = node.parent
        assert node is not None, f"</{tag}> closes nothing"
        self.node = node.parent

    def handle_data(self, data):
        self.node.children.append(data)


def _figures(page: Page) -> dict[str, Node]:
    return {svg.attrs["id"]: svg for svg in page.root.find_all("svg")}


def _table(page: Page, ident: str) -> dict[str, list[str]]:
    """{row key (data-model, or the row header's text): [cell texts]} of a table's body."""
    rows = {}
    for tr in page.root.by_id(ident).find_all("tbody")[0].find_all("tr"):
        key = tr.attrs.get("data-model") or tr.find_all("th")[0].text()
        rows[key] = [td.text() for td in tr.find_all("td")]
    return rows


def _headers(page: Page, ident: str) -> list[str]:
    return [th.text() for th in page.root.by_id(ident).find_all("thead")[0].find_all("th")]


def _assert_self_contained_and_clean(html: str, page: Page) -> None:
    assert len(html.encode()) < MAX_BYTES
    assert not {"script", "link", "iframe", "object", "embed"} & set(page.start_tags)
    assert "@import" not in html
    for node in page.root.iter():
        for attr in ("src", "href", "xlink:href", "action", "srcset"):
            value = (node.attrs.get(attr) or "").strip().lower()
            assert not value.startswith(("http:", "https:", "//")), f"<{node.tag} {attr}={value[:60]}>"
            assert not value or value.startswith(("#", "data:image/png;base64,")), value[:60]
        for attr, value in node.attrs.items():
            assert not (attr.startswith("on")), f"event handler {attr} on <{node.tag}>"
            assert not re.search(r"url\(\s*['\"]?(https?:|//)", value or "")
    for style in page.root.find_all("style"):
        assert not re.search(r"url\(\s*['\"]?(https?:|//)", style.text())
    visible = page.root.find_all("body")[0].text(skip={"details"})  # the spec's JSON may hold null
    assert not re.search(r"\b(None|nan|NaN|null|undefined)\b", visible)
    assert "None" not in page.root.find_all("pre")[0].text()
    for ident, svg in _figures(page).items():
        assert svg.attrs.get("role") == "img" and len(svg.attrs.get("aria-label") or "") > 40, ident
        titles = [c for c in svg.children if isinstance(c, Node) and c.tag == "title"]
        descs = [c for c in svg.children if isinstance(c, Node) and c.tag == "desc"]
        assert titles and titles[0].text().strip() and descs and descs[0].text() == svg.attrs["aria-label"], ident
    ids = [n.attrs["id"] for n in page.root.iter() if n.attrs.get("id")]
    assert len(ids) == len(set(ids)), "ids repeat across the inline SVGs"


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _lines(svg: Node, model: str) -> int:
    return sum(1 for n in svg.iter() if re.fullmatch(rf".*-{model}-line-\d+", n.attrs.get("id") or ""))


def _error_bars(svg: Node) -> set[str]:
    return {n.attrs["id"] for n in svg.iter() if "-errorbars-" in (n.attrs.get("id") or "")}


ALL_FIGURES = {
    "fig-accuracy-vs-severity", "fig-heatmap-teacher", "fig-heatmap-student-baseline", "fig-heatmap-student-kd",
    "fig-heatmap-kd-minus-baseline", "fig-training-train-loss", "fig-training-val-acc", "fig-training-lr",
    "fig-reliability-clean", "fig-reliability-corrupted",
}


# ---- (a) one seed ---------------------------------------------------------------------------------------

def test_one_seed_report_shows_every_part_without_intervals(jobs, report):
    results = jobs["single"]
    html = report("single")
    page = Page(html)
    _assert_self_contained_and_clean(html, page)
    figures = _figures(page)
    assert set(figures) == ALL_FIGURES
    assert _error_bars(figures["fig-accuracy-vs-severity"]) == set()  # n=1: no error bars
    for model in ("teacher", "student-baseline", "student-kd"):
        assert _lines(figures["fig-accuracy-vs-severity"], model) == 1
        assert _lines(figures["fig-training-val-acc"], model) == 1

    rows = _table(page, "summary")
    assert list(rows) == ["teacher", "student_baseline", "student_kd", "diff"]
    headers = _headers(page, "summary")
    col = {h: i - 1 for i, h in enumerate(headers)}  # minus the row-header column
    for model in ("teacher", "student_baseline", "student_kd"):
        assert rows[model][col["seeds (n)"]] == "1"
        assert rows[model][col["clean acc."]] == _pct(results[model]["clean_acc"])
        assert rows[model][col["corruption acc."]] == _pct(results[model]["corruption_acc"])
        assert "±" not in "".join(rows[model])
    delta = results["student_kd"]["corruption_acc"] - results["student_baseline"]["corruption_acc"]
    assert rows["diff"][col["corruption acc."]] == f"{100 * delta:+.1f} pp".replace("-", "\u2212")
    assert "[" not in "".join(rows["diff"])  # no interval from one seed

    lead = page.root.find_all("section")[0].text()
    assert "one seed gives no interval" in lead
    size_ratio = results["student_kd"]["compression_vs_teacher"]["params_ratio"]
    assert f"{size_ratio:.2g}\u00d7 fewer parameters" in lead
    per_corruption = _table(page, "per-corruption")
    assert list(per_corruption) == CORRUPTIONS
    images = page.root.find_all("img")
    assert len(images) == 1 and images[0].attrs["src"].startswith("data:image/png;base64,")
    assert "gaussian_noise" in images[0].attrs["alt"]
    assert [d.find_all("summary")[0].text() for d in page.root.find_all("details")][:1] == ["Job spec"]
    assert json.loads(page.root.find_all("pre")[0].text()) == results["spec"]


# ---- (b) several seeds ------------------------------------------------------------------------------------

def test_several_seeds_draw_intervals_and_one_line_per_seed(jobs, report):
    results = jobs["multi"]
    html = report("multi")
    page = Page(html)
    _assert_self_contained_and_clean(html, page)
    figures = _figures(page)
    assert set(figures) == ALL_FIGURES
    severity = figures["fig-accuracy-vs-severity"]
    assert _error_bars(severity) == {"fig-accuracy-vs-severity-student-baseline-errorbars-0",
                                     "fig-accuracy-vs-severity-student-kd-errorbars-0"}  # not the one teacher
    for model in ("student-baseline", "student-kd"):
        assert _lines(figures["fig-training-train-loss"], model) == len(SEEDS)
    assert _lines(figures["fig-training-train-loss"], "teacher") == 1

    rows = _table(page, "summary")
    col = {h: i - 1 for i, h in enumerate(_headers(page, "summary"))}
    assert "MACs" in col and "FLOPs" not in col
    kd = results["summary"]["student_kd"]["clean_acc"]
    assert rows["student_kd"][col["seeds (n)"]] == str(len(SEEDS))
    assert rows["student_kd"][col["clean acc."]] == f"{_pct(kd['mean'])}± {100 * kd['ci_half_width']:.1f}"
    assert rows["teacher"][col["seeds (n)"]] == "1" and "±" not in rows["teacher"][col["clean acc."]]
    diff = results["kd_vs_baseline"]["paired"]["corruption_acc"]
    cell = rows["diff"][col["corruption acc."]]
    lo, hi = (f"{100 * v:+.1f}".replace("-", "\u2212") for v in diff["ci95"])
    assert f"[{lo}, {hi}]" in cell and ("p = " in cell or "p < " in cell) == (diff["p_value"] is not None)

    lead = page.root.find_all("section")[0].text()
    lo, hi = diff["ci95"]
    assert "95% CI [" in lead
    if lo > 0:
        assert "Distillation improved robustness" in lead
    elif hi < 0:
        assert "Distillation worsened robustness" in lead
    else:
        assert "did not measurably change robustness" in lead and "includes 0" in lead
    assert f"{len(SEEDS)} seeds" in lead
    per_corruption = _table(page, "per-corruption")
    assert all("[" in cells[1] for cells in per_corruption.values())  # each corruption with its interval


# ---- (c) no corruptions, (d) no baseline, (e) calibration off ------------------------------------------------

def test_no_corruptions_leaves_out_the_robustness_parts(jobs, report):
    results = jobs["clean_only"]
    assert "per_corruption" not in results["student_kd"]
    html = report("clean_only")
    page = Page(html)
    _assert_self_contained_and_clean(html, page)
    assert set(_figures(page)) == {"fig-training-train-loss", "fig-training-val-acc", "fig-training-lr",
                                   "fig-reliability-clean"}
    headers = _headers(page, "summary")
    assert "clean acc." in headers and not {"corruption acc.", "mCE", "retention"} & set(headers)
    assert not [n for n in page.root.iter() if n.attrs.get("id") == "per-corruption"]
    assert page.root.find_all("img") == []
    lead = page.root.find_all("section")[0].text()
    assert "evaluated no corruptions" in lead and "clean accuracy" in lead
    assert "Robustness to corruptions" not in html


def test_no_baseline_has_no_comparison_anywhere(jobs, report):
    results = jobs["no_baseline"]
    assert "student_baseline" not in results and "kd_vs_baseline" not in results
    html = report("no_baseline")
    page = Page(html)
    _assert_self_contained_and_clean(html, page)
    assert set(_figures(page)) == {"fig-accuracy-vs-severity", "fig-heatmap-teacher", "fig-heatmap-student-kd",
                                   "fig-training-train-loss", "fig-training-val-acc", "fig-training-lr"}
    assert list(_table(page, "summary")) == ["teacher", "student_kd"]
    assert not [n for n in page.root.iter() if n.attrs.get("id") == "per-corruption"]
    assert "baseline" not in _figures(page)["fig-accuracy-vs-severity"].text()
    assert "No baseline student was trained" in page.root.find_all("section")[0].text()


def test_calibration_off_shows_no_reliability_and_marks_ece_not_measured(jobs, report):
    results = jobs["no_baseline"]
    assert "ece" not in results["teacher"] and results["teacher"]["corrupted_ece"] is None
    page = Page(report("no_baseline"))
    assert not any(ident.startswith("fig-reliability") for ident in _figures(page))
    rows = _table(page, "summary")
    col = {h: i - 1 for i, h in enumerate(_headers(page, "summary"))}
    for model in rows:
        assert rows[model][col["ECE"]] == "n/a" and rows[model][col["NLL (nats)"]] == "n/a"
    assert "Calibration" not in [h.text() for h in page.root.find_all("h2")]


# ---- (f) escaping ---------------------------------------------------------------------------------------------

def test_user_strings_are_escaped_everywhere(jobs):
    results = copy.deepcopy(jobs["multi"])
    evil_name = "<script>alert('name')</script>"
    evil_classes = ["<script>alert(1)</script>", "<img src=x onerror=alert(2)>", "a&b \"quoted\""]
    evil_corruption = "<b onmouseover=alert(3)>fog</b>"
    results["spec"]["name"] = evil_name
    results["dataset"]["classes"] = evil_classes
    results["student_kd"]["arch"] = "<i>resnet8</i>"

    def rename(block: dict) -> None:  # top-level blocks are the exported run's own dicts: rename once
        if "fog" in block.get("per_corruption", {}):
            block["per_corruption"][evil_corruption] = block["per_corruption"].pop("fog")

    for block in [results[m] for m in MODELS] + [r[m] for r in results["runs"] for m in
                                                   ("student_kd", "student_baseline")]:
        rename(block)
    results["kd_vs_baseline"]["per_corruption"][evil_corruption] = results["kd_vs_baseline"]["per_corruption"].pop(
        "fog")
    html = render_report(results, grid_png=jobs["strip"])
    page = Page(html)
    _assert_self_contained_and_clean(html, page)
    assert page.start_tags.count("img") == 1 and "b" not in page.start_tags and "i" not in page.start_tags
    assert page.root.find_all("title")[0].text() == f"Distillation report: {evil_name}"
    assert page.root.find_all("h1")[0].text() == f"Distillation report: {evil_name}"
    assert ", ".join(evil_classes) in page.root.text()
    assert evil_corruption in _table(page, "per-corruption")
    heatmap = _figures(page)["fig-heatmap-student-kd"]
    assert evil_corruption in heatmap.text()  # a label inside the SVG, as text
    assert "<i>resnet8</i>" in page.root.find_all("section")[0].text()


# ---- files, determinism, the strip -----------------------------------------------------------------------------

def test_write_report_is_atomic_and_deterministic(jobs, report, tmp_path):
    path = write_report(jobs["multi"], tmp_path / "job", grid_png=jobs["strip"])
    assert path == tmp_path / "job" / "report.html"
    assert path.read_text(encoding="utf-8") == report("multi")  # rendered twice: the same bytes
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.html"]  # no temporary file left


def test_strip_shows_the_clean_images_then_each_corruption_as_evaluated(jobs):
    images = jobs["strip_images"]
    strip = np.asarray(Image.open(io.BytesIO(jobs["strip"])).convert("RGB"))
    n, _, h, w = images.shape
    scale = STRIP_PANEL_PX // max(h, w)
    columns = [images] + [corrupt(images, c, 3, seed=0, indices=torch.arange(n)) for c in CORRUPTIONS]
    assert strip.shape[:2] == (TOP_PX + n * (h * scale + GAP_PX) + MARGIN_PX,
                               MARGIN_PX + len(columns) * (w * scale + GAP_PX) + RIGHT_PX)
    for r in range(n):
        for k, column in enumerate(columns):  # every panel, pixel for pixel, where the layout puts it
            top = TOP_PX + r * (h * scale + GAP_PX) + GAP_PX // 2
            left = MARGIN_PX + k * (w * scale + GAP_PX) + GAP_PX // 2
            expected = column[r, 0].numpy().repeat(scale, axis=0).repeat(scale, axis=1)
            assert np.array_equal(strip[top:top + h * scale, left:left + w * scale, 0], expected), (r, k)
    assert not torch.equal(columns[1], columns[0])
    with pytest.raises(ValueError, match="uint8"):
        corruption_strip_png(torch.zeros(1, 1, 8, 8), CORRUPTIONS)
    with pytest.raises(ValueError, match="severity"):
        corruption_strip_png(torch.zeros(1, 1, 8, 8, dtype=torch.uint8), CORRUPTIONS, severity=6)
