"""The /ui pages in a real Chromium against a real API server (no worker here: jobs stay queued; the
run-a-job flow is in test_ui_flow.py): sign-in and its redirects, another owner's 404, CSRF refusals,
validation errors next to their fields, the jobs list, and the upload forms."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import Browser, Page, expect

from kdservice.db import make_engine, make_sessionmaker
from kdservice.security import find_api_key, revoke_api_key
from tests.browser.browser_harness import PageWatch
from tests.browser.ui_checks import check_and_capture, sign_in
from tests.helpers import ApiServer, image_folder_files, module_settings, serve, tiny_spec, zip_bytes
from tests.paths import EXAMPLES

pytestmark = pytest.mark.browser
UPLOAD_LIMIT = 2 << 20  # small, so that a test can pick a larger file


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    yield from serve(module_settings(tmp_path_factory, upload_max_bytes=UPLOAD_LIMIT))


def submit_api(api_server: ApiServer, key: str, name: str) -> str:
    with api_server.client(key) as client:
        response = client.post("/v1/jobs", json=tiny_spec(name))
        assert response.status_code == 201, response.text
        return response.json()["id"]


def revoke(api_server: ApiServer, key: str) -> None:
    """What `kd admin revoke-key` does."""
    engine = make_engine(api_server.settings.database_url)
    with make_sessionmaker(engine).begin() as session:
        revoke_api_key(session, find_api_key(session, key).id)
    engine.dispose()


def test_pages_need_a_valid_key_cookie(page: Page, page_watch: PageWatch, api_server: ApiServer):
    with api_server.client(follow_redirects=False) as client:
        response = client.get("/ui")
        assert response.status_code == 303 and response.headers["location"] == "/ui/sign-in?next=/ui/jobs"
        client.cookies.set("kd_ui_key", "kd_not-a-key", path="/ui")
        response = client.get("/ui/jobs")
        assert response.status_code == 303 and response.headers["location"].startswith("/ui/sign-in")

    page.goto("/ui/jobs?state=queued")
    expect(page).to_have_url(re.compile(r"/ui/sign-in\?next=/ui/jobs%3Fstate%3Dqueued$|/ui/sign-in\?next="))
    check_and_capture(page, "ui-sign-in")

    page_watch.expect_status("/ui/sign-in", 422)
    page.get_by_label("API key").fill("kd_wrong")
    page.get_by_role("button", name="Sign in").click()
    key_input = page.get_by_label("API key")
    expect(key_input).to_have_attribute("aria-invalid", "true")
    expect(key_input).to_have_accessible_description(re.compile("Unknown API key"))

    key = api_server.new_key("carol")
    key_input.fill(key)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/ui/jobs\?state=queued$"))  # back where the redirect started
    cookie = next(c for c in page.context.cookies() if c["name"] == "kd_ui_key")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/ui"

    revoke(api_server, key)  # a revoked key signs its pages out at once, and cannot sign in again
    page.goto("/ui/jobs")
    expect(page).to_have_url(re.compile(r"/ui/sign-in"))
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_label("API key")).to_have_accessible_description("This API key was revoked.")


def test_another_owners_job_is_404_as_in_the_api(page: Page, page_watch: PageWatch, api_server: ApiServer):
    alice, bob = api_server.new_key("alice"), api_server.new_key("bob")
    job_id = submit_api(api_server, alice, "alices")
    with api_server.client(bob) as client:
        api_detail = client.get(f"/v1/jobs/{job_id}").json()["detail"]
    sign_in(page, bob)
    for path in (f"/ui/jobs/{job_id}", f"/ui/jobs/{job_id}/events", f"/ui/jobs/{job_id}/artifacts/results.json",
                 f"/ui/compare?id={job_id}&id={job_id}x"):
        page_watch.expect_status(path, 404)
    response = page.goto(f"/ui/jobs/{job_id}")
    assert response is not None and response.status == 404
    expect(page.get_by_role("alert")).to_have_text(api_detail)
    check_and_capture(page, "ui-not-found")
    for path in (f"/ui/jobs/{job_id}/events", f"/ui/jobs/{job_id}/artifacts/results.json",
                 f"/ui/compare?id={job_id}&id={job_id}x"):
        assert page.request.get(path).status == 404, path


def test_posts_without_the_right_csrf_token_are_refused(page: Page, page_watch: PageWatch, api_server: ApiServer):
    key = api_server.new_key("dave")
    job_id = submit_api(api_server, key, "to-cancel")
    sign_in(page, key)
    page.goto(f"/ui/jobs/{job_id}")
    page_watch.expect_status("/cancel", 403)
    page_watch.expect_status("/sign-out", 403)
    page_watch.expect_status("/ui/datasets", 403)

    # A form another page could post (same cookie, no token): the browser sends it, the server refuses it.
    page.evaluate("""id => { const f = document.createElement('form'); f.method = 'post';
        f.action = `/ui/jobs/${id}/cancel`; document.body.append(f); f.submit(); }""", job_id)
    expect(page.get_by_role("heading", level=1)).to_contain_text("403")
    assert page.request.post(f"/ui/jobs/{job_id}/cancel", form={"csrf": "0" * 64}).status == 403
    assert page.request.post("/ui/sign-out", form={"csrf": ""}).status == 403
    upload = page.request.post("/ui/datasets?csrf=wrong", multipart={"file": {
        "name": "d.zip", "mimeType": "application/zip", "buffer": b"PK"}})
    assert upload.status == 403
    with api_server.client(key) as client:
        assert client.get(f"/v1/jobs/{job_id}").json()["state"] == "queued"  # nothing was cancelled

    page.goto(f"/ui/jobs/{job_id}")
    page.get_by_role("button", name="Cancel job").click()  # the page's own form carries the token
    expect(page.locator("#job-status [data-field=state]")).to_have_text("cancelled")
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/ui/sign-in$"))
    assert not [c for c in page.context.cookies() if c["name"] == "kd_ui_key"]


def test_validation_errors_show_next_to_their_fields(page: Page, page_watch: PageWatch, api_server: ApiServer):
    key = api_server.new_key("erin")
    sign_in(page, key)
    page.get_by_role("link", name="New job").first.click()
    page.get_by_label("Start from example").select_option("digits-kd")
    page.get_by_role("button", name="Load example").click()
    page.locator('[name="distill.temperature"]').fill("-1")
    page.locator('[name="teacher.train.epochs"]').fill("many")
    page.get_by_label("More fields (JSON, merged over the fields above)").fill('{"dataset": {"subset": 5}}')
    page_watch.expect_status("/ui/jobs/new", 422)
    page.get_by_role("button", name="Submit job").click()
    expect(page.get_by_role("alert")).to_contain_text("teacher.train.epochs")
    epochs = page.locator('[name="teacher.train.epochs"]')
    expect(epochs).to_have_attribute("aria-invalid", "true")
    expect(epochs).to_have_accessible_description(re.compile("enter a number"))

    page.locator('[name="teacher.train.epochs"]').fill("2")
    page.locator('[name="teacher.train.warmup_epochs"]').fill("5")
    page.get_by_role("button", name="Submit job").click()
    temperature = page.locator('[name="distill.temperature"]')
    expect(temperature).to_have_value("-1")  # the form comes back as it was sent
    expect(temperature).to_have_attribute("aria-invalid", "true")
    expect(temperature).to_have_accessible_description(re.compile("Input should be greater than 0"))
    extra = page.get_by_label("More fields (JSON, merged over the fields above)")
    expect(extra).to_have_accessible_description(re.compile("dataset.subset: Input should be greater than or equal"))
    # A rule about two fields names their parent (teacher.train): it shows on the teacher fieldset.
    expect(page.get_by_role("group", name="teacher")).to_have_accessible_description(
        re.compile("teacher.train: train.warmup_epochs must be smaller than train.epochs"))

    # The same messages as the API's problem+json for the same spec.
    spec = json.loads(json.dumps(_example()))
    spec["teacher"]["train"].update(epochs=2, warmup_epochs=5)
    spec["distill"]["temperature"] = -1
    spec["dataset"]["subset"] = 5
    with api_server.client(key) as client:
        problem = client.post("/v1/jobs", json=spec).json()
    summary = page.locator("#error-summary li")
    expect(summary).to_have_count(len(problem["errors"]))
    for error in problem["errors"]:
        expect(page.locator("#error-summary")).to_contain_text(f"{error['field']}: {error['message']}")
    check_and_capture(page, "ui-new-job-errors")

    temperature.fill("4")
    page.locator('[name="teacher.train.warmup_epochs"]').fill("1")
    extra.fill("")
    page.get_by_role("button", name="Submit job").click()
    expect(page).to_have_url(re.compile(r"/ui/jobs/[0-9a-f]{32}$"))
    expect(page.locator("#job-status [data-field=state]")).to_have_text("queued")
    expect(page.get_by_role("button", name="Cancel job")).to_be_visible()
    expect(page.get_by_role("button", name="Delete job")).to_have_count(0)  # only finished jobs
    check_and_capture(page, "ui-job-queued")


def _example() -> dict:
    return json.loads((EXAMPLES / "digits-kd.json").read_text())


def test_times_show_in_the_readers_time_zone(browser: Browser, base_url: str, api_server: ApiServer):
    key = api_server.new_key("ravi")
    job_id = submit_api(api_server, key, "local-time")
    with api_server.client(key) as client:
        created = datetime.fromisoformat(client.get(f"/v1/jobs/{job_id}").json()["created_at"])
    context = browser.new_context(base_url=base_url, timezone_id="Asia/Kolkata")  # UTC+05:30
    try:
        page = context.new_page()
        sign_in(page, key)
        local = created.astimezone(ZoneInfo("Asia/Kolkata"))
        cell = page.locator(f"#job-{job_id} time").first
        expect(cell).to_have_text(local.strftime("%Y-%m-%d %H:%M:%S UTC+05:30"))
        expect(cell).to_have_attribute("title", created.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"))
        page.goto(f"/ui/jobs/{job_id}")
        expect(page.locator("#job-status time").first).to_have_text(local.strftime("%Y-%m-%d %H:%M:%S UTC+05:30"))
    finally:
        context.close()


def test_jobs_list_filters_and_pages(page: Page, api_server: ApiServer):
    key = api_server.new_key("frank")
    ids = [submit_api(api_server, key, f"job-{i:02d}") for i in range(23)]
    with api_server.client(key) as client:
        for job_id in ids[:2]:
            assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
    sign_in(page, key)
    rows = page.locator("table.jobs tbody tr")
    expect(rows).to_have_count(20)
    expect(rows.first).to_contain_text("job-22")  # newest first
    check_and_capture(page, "ui-jobs")
    page.get_by_role("link", name="Older jobs").click()
    expect(rows).to_have_count(3)
    expect(rows.last).to_contain_text("job-00")
    page.get_by_label("Show").select_option("cancelled")
    page.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(2)
    expect(page.locator("table.jobs [data-field=state]")).to_have_text(["cancelled", "cancelled"])


def test_upload_forms_store_data_sets_and_models(page: Page, page_watch: PageWatch, api_server: ApiServer,
                                                 tmp_path: Path):
    from safetensors.torch import save_file

    from kdcore.models import build_model

    sign_in(page, api_server.new_key("grace"))
    page.get_by_role("link", name="Data sets").click()
    archive = tmp_path / "pets.zip"
    archive.write_bytes(zip_bytes(image_folder_files({"cat": 3, "dog": 3})))
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"not an archive")
    too_large = tmp_path / "huge.zip"
    too_large.write_bytes(b"\0" * (UPLOAD_LIMIT + 1))
    field = page.get_by_label("Archive (.zip or .tar.gz)")
    expect(field).to_have_accessible_description(re.compile("At most 2.00 MiB"))
    field.set_input_files(too_large)  # refused by the page's script: nothing is sent
    page.get_by_role("button", name="Upload data set").click()
    assert "huge.zip is larger than the upload limit of 2.00 MiB" in field.evaluate("input => input.validationMessage")
    expect(page).to_have_url(re.compile(r"/ui/datasets$"))
    page_watch.expect_status("/ui/datasets", 422)
    page.get_by_label("Archive (.zip or .tar.gz)").set_input_files(broken)
    page.get_by_role("button", name="Upload data set").click()
    expect(page.get_by_label("Archive (.zip or .tar.gz)")).to_have_accessible_description(
        re.compile("neither a .zip nor a .tar.gz"))
    page.get_by_label("Archive (.zip or .tar.gz)").set_input_files(archive)
    page.get_by_label("Name (optional)").fill("pets")
    page.get_by_role("button", name="Upload data set").click()
    expect(page).to_have_url(re.compile(r"/ui/datasets\?created="))
    expect(page.locator("tr.just-added")).to_contain_text("pets")
    expect(page.locator("tr.just-added")).to_contain_text("cat, dog")
    check_and_capture(page, "ui-datasets")

    weights = tmp_path / "teacher.safetensors"
    save_file(build_model("resnet8", 10, in_channels=1, image_size=8).state_dict(), str(weights))
    page.get_by_role("link", name="Models").click()
    page_watch.expect_status("/ui/models", 422)
    page.get_by_label("Weights (.safetensors)").set_input_files(weights)
    page.get_by_label("Architecture").select_option("resnet8")
    page.get_by_label("Number of classes").fill("1")
    page.get_by_label("Input channels").fill("1")
    page.get_by_role("button", name="Upload model").click()
    expect(page.get_by_label("Number of classes")).to_have_accessible_description(
        re.compile("greater than or equal to 2"))
    page.get_by_label("Weights (.safetensors)").set_input_files(weights)
    page.get_by_label("Number of classes").fill("10")
    page.get_by_role("button", name="Upload model").click()
    expect(page).to_have_url(re.compile(r"/ui/models\?created="))
    expect(page.locator("tr.just-added")).to_contain_text("resnet8")
    check_and_capture(page, "ui-models")
