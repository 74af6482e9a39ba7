"""report.html opened from disk (file://) in Chromium: every plot is there and drawn, and the page asks
the network for nothing (a report must open on a machine with no server and no internet)."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page

from kdcore.pipeline import run
from kdcore.spec import JobSpec
from tests.browser.browser_harness import PHONE, screenshot

pytestmark = pytest.mark.browser

TINY = {
    "name": "report-from-disk",
    "dataset": {"source": "digits", "subset": 400, "test_subset": 100},
    "teacher": {"arch": "resnet20", "train": {"epochs": 2, "batch_size": 64, "lr": 0.1}},
    "student": {"arch": "resnet8"},
    "train": {"epochs": 2, "batch_size": 64, "lr": 0.1},
    "evaluate": {"corruptions": ["gaussian_noise", "fog", "contrast"], "severities": [1, 3, 5], "latency": False},
    "export": ["safetensors"],
}
# Every plot the report must hold, by its figure id.
FIGURES = ("fig-accuracy-vs-severity", "fig-heatmap-teacher", "fig-heatmap-student-baseline",
           "fig-heatmap-student-kd", "fig-heatmap-kd-minus-baseline", "fig-training-train-loss",
           "fig-training-val-acc", "fig-training-lr", "fig-reliability-clean", "fig-reliability-corrupted")


@pytest.fixture(scope="module")
def report_file(tmp_path_factory, cache_dir) -> Path:
    out = tmp_path_factory.mktemp("report-job")
    run(JobSpec.model_validate(TINY), out, cache_dir=cache_dir, device="cpu")
    return out / "report.html"


def test_the_report_renders_from_disk_with_every_plot_and_no_network_request(page: Page, report_file: Path):
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(report_file.as_uri())
    assert page.title() == "Distillation report: report-from-disk"
    assert page.locator("table#summary tbody tr").count() >= 3  # teacher, baseline, distilled (+ KD - baseline)
    for figure in FIGURES:
        svg = page.locator(f"svg#{figure}")
        assert svg.count() == 1, figure
        assert svg.locator("title").count() >= 1, f"{figure} has no title"
        box = svg.bounding_box()
        assert box is not None and box["width"] > 100 and box["height"] > 100, f"{figure} is not drawn: {box}"
    strip = page.locator("img[src^='data:image/png']")
    assert strip.count() == 1 and strip.evaluate("img => img.complete && img.naturalWidth > 0")
    assert strip.get_attribute("alt")
    # Only the file itself and its inline data: nothing from a server, however local.
    assert requests and all(url.split(":", 1)[0] in ("file", "data") for url in requests), requests
    screenshot(page, "report-from-disk")
    screenshot(page, "report-from-disk-phone", PHONE)
