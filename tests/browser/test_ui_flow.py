"""The whole product through its pages, in a real Chromium, against real `uvicorn` + `python -m worker`
processes (tests/helpers.py Service): sign in, submit the digits example through the form (reduced to a
few seconds of training by editing the form), watch the progress bar move and the job succeed without a
reload, read its results and downloads, watch a second job finish on the live jobs list, compare the
two, delete one, sign out."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import delete

from kdcore.job_files import REPORT
from kdservice.db import make_engine, make_sessionmaker
from kdservice.summaries import format_spread
from kdservice.tables import Artifact
from tests.browser.browser_harness import PHONE, PageWatch, screenshot
from tests.browser.ui_checks import check_and_capture, sign_in
from tests.helpers import Service, service_env

pytestmark = [pytest.mark.browser, pytest.mark.slow]

JOB_TIMEOUT_MS = 300_000  # the worker's first job also pays for its start (torch import); 2 shared cores
# The digits example, cut to seconds of training: the fields a user would edit in the form...
FORM_EDITS = {
    "teacher.train.epochs": "2", "teacher.train.warmup_epochs": "0",
    "train.epochs": "3", "train.warmup_epochs": "0",
    "evaluate.corruptions": '["gaussian_noise", "contrast"]', "evaluate.severities": "[1, 3, 5]",
    "evaluate.max_images": "100", "export": '["safetensors"]',
}
# ...and what the example leaves out, in the "more fields" box.
MORE_FIELDS = {"dataset": {"subset": 400, "test_subset": 200}, "evaluate": {"latency": False}}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    var_dir = tmp_path_factory.mktemp("ui-service")
    svc = Service(var_dir, service_env(var_dir, events_poll_seconds=0.2))
    try:
        svc.start_api()
        svc.start_worker("w1")
        yield svc
    finally:
        svc.stop()


@pytest.fixture(scope="module")
def base_url(service: Service) -> str:
    return service.url


# Every value the job page's progress bar takes (the status section may be re-rendered in place).
def forget_report(service: Service, job_id: str) -> None:
    """Make a job look like one finished before jobs wrote report.html: no file, no artifact row."""
    (service.var_dir / "jobs" / job_id / REPORT).unlink()
    with make_sessionmaker(make_engine(service.env["KD_DATABASE_URL"])).begin() as session:
        session.execute(delete(Artifact).where(Artifact.job_id == job_id, Artifact.name == REPORT))


RECORD_PROGRESS = """() => {
    window.sameDocument = true;
    window.progressSeen = [];
    const record = () => window.progressSeen.push(Number(document.querySelector('#job-status progress').value));
    record();
    new MutationObserver(record).observe(document.querySelector('main'),
        {subtree: true, childList: true, attributes: true, attributeFilter: ['value']});
}"""


def test_submit_watch_results_compare_and_sign_out(page: Page, page_watch: PageWatch, service: Service):
    sign_in(page, service.key)
    page.get_by_role("link", name="New job").first.click()
    page.get_by_label("Start from example").select_option("digits-kd")
    page.get_by_role("button", name="Load example").click()
    page.get_by_label("name", exact=True).fill("digits-ui")
    for name, value in FORM_EDITS.items():
        page.locator(f'[name="{name}"]').fill(value)
    page.get_by_label("More fields (JSON, merged over the fields above)").fill(json.dumps(MORE_FIELDS))
    page.get_by_role("button", name="Submit job").click()
    expect(page).to_have_url(re.compile(r"/ui/jobs/[0-9a-f]{32}$"))
    first = page.url.rsplit("/", 1)[1]
    spec = service.job(first)["spec"]
    assert spec["train"]["epochs"] == 3 and spec["dataset"]["subset"] == 400 and spec["evaluate"]["latency"] is False
    second = service.submit({**spec, "name": "digits-ui-t2", "distill": {**spec["distill"], "temperature": 2.0}})

    # Live: the bar moves and the job ends, in this same document (no reload).
    page.evaluate(RECORD_PROGRESS)
    state = page.locator("#job-status [data-field=state]")
    expect(state).to_have_text("running", timeout=JOB_TIMEOUT_MS)
    page.wait_for_function("() => window.progressSeen.some(v => v > 0 && v < 1)", timeout=JOB_TIMEOUT_MS)
    expect(page.locator("#job-log li").first).to_be_attached()  # log lines arrive over the stream
    check_and_capture(page, "ui-job-running")
    expect(state).to_have_text("succeeded", timeout=JOB_TIMEOUT_MS)
    seen = page.evaluate("window.progressSeen")
    assert page.evaluate("window.sameDocument") is True
    assert len({v for v in seen if 0 < v < 1}) >= 2, seen

    # The report (sandboxed: no script, nothing fetched) and the downloads, swapped in once the job
    # succeeded, still in the same document.
    artifacts = service.http.get(f"/v1/jobs/{first}/artifacts").json()["items"]
    assert REPORT in [a["name"] for a in artifacts]
    results = page.locator("#job-results")
    expect(results.locator("iframe.report")).to_have_attribute("sandbox", "")
    expect(page.frame_locator("iframe.report").locator("h1")).to_contain_text("digits-ui")
    downloads = results.locator("table.downloads a")
    expect(downloads).to_have_text([a["name"] for a in artifacts])
    student = next(a for a in artifacts if a["name"] == "student.safetensors")
    body = page.request.get(downloads.filter(has_text="student.safetensors").get_attribute("href")).body()
    assert hashlib.sha256(body).hexdigest() == student["sha256"]
    expect(page.get_by_role("button", name="Delete job")).to_be_visible()
    expect(page.get_by_role("button", name="Cancel job")).to_have_count(0)
    assert page.evaluate("window.sameDocument") is True
    check_and_capture(page, "ui-job-succeeded", full_page=False)
    response = page.goto(f"/ui/jobs/{first}/report")
    assert response is not None and "sandbox" in response.headers["content-security-policy"]
    expect(page.locator("h1")).to_contain_text("digits-ui")
    screenshot(page, "ui-report", full_page=False)
    screenshot(page, "ui-report-phone", PHONE, full_page=False)
    page.go_back()

    # The jobs list follows the second job live, then compares the two.
    page.get_by_role("link", name="Jobs", exact=True).click()
    page.evaluate("window.sameDocument = true")
    row = page.locator(f"#job-{second}")
    expect(row.locator("[data-field=state]")).to_have_text("succeeded", timeout=JOB_TIMEOUT_MS)
    expect(row.locator("td.headline")).to_contain_text("clean ")  # the swapped-in row has the headline
    assert page.evaluate("window.sameDocument") is True
    check_and_capture(page, "ui-jobs-done")
    for job_id in (first, second):
        page.locator(f"#pick-{job_id}").check()
    page.get_by_role("button", name="Compare selected jobs").click()
    expect(page).to_have_url(re.compile(r"/ui/compare\?id="))
    expect(page.locator(".side-by-side article")).to_have_count(2)
    expect(page.locator(".side-by-side")).to_contain_text("digits-ui-t2")
    severity = page.locator("table.severity")
    expect(severity.locator("thead th")).to_have_text(["job", "model", "clean", "1", "3", "5"])
    expect(severity.locator("tbody tr", has_text="distilled")).to_have_count(2)
    chart = page.locator("svg#fig-compare-severity")  # one line per job, each named in the text alternative
    expect(chart.locator("[id^=fig-compare-severity-student-kd-line-]")).to_have_count(2)
    expect(chart).to_have_accessible_name(re.compile(r"digits-ui-t2 .*digits-ui |digits-ui .*digits-ui-t2 "))
    check_and_capture(page, "ui-compare")

    # A job without report.html (finished before jobs wrote one) shows its results_summary as a table.
    forget_report(service, second)
    page.goto(f"/ui/jobs/{second}")
    table = page.locator("#job-results table.summary")
    expect(table.locator("thead th")).to_have_text(["metric", "teacher", "baseline", "distilled"])
    summary = service.job(second)["results_summary"]
    clean = [format_spread(summary[m]["clean_acc"]) for m in ("teacher", "student_baseline", "student_kd")]
    expect(table.locator("tbody tr").first.locator("td")).to_have_text(clean)
    assert all(text.endswith("(n=1)") for text in clean)
    check_and_capture(page, "ui-job-no-report")

    # Delete that job from its page, then sign out.
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete job").click()
    expect(page).to_have_url(re.compile(r"/ui/jobs$"))
    expect(page.locator(f"#job-{second}")).to_have_count(0)
    assert service.http.get(f"/v1/jobs/{second}").status_code == 404
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/ui/sign-in$"))
    page.goto(f"/ui/jobs/{first}")
    expect(page).to_have_url(re.compile(r"/ui/sign-in\?next="))
