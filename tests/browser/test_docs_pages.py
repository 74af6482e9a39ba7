"""/docs (Swagger UI) and /redoc render every operation in a real Chromium with every other host blocked."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.browser.browser_harness import PHONE, PageWatch, screenshot
from tests.helpers import ApiServer

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def operations(api_server: ApiServer) -> list[tuple[str, str, str]]:
    """(method, path, summary) of every operation in the app's OpenAPI schema."""
    with api_server.client() as client:
        schema = client.get("/openapi.json").json()
    ops = [(method.upper(), path, op["summary"]) for path, methods in schema["paths"].items()
           for method, op in methods.items()]
    assert ("POST", "/v1/jobs", "Submit a distillation job") in ops
    return ops


def test_swagger_ui_renders_every_operation_and_a_request_example(page: Page,
                                                                  operations: list[tuple[str, str, str]]):
    page.goto("/docs")
    blocks = page.locator(".opblock")
    expect(blocks).to_have_count(len(operations))
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("kd-service")
    for method, path, summary in operations:
        block = blocks.filter(has=page.locator(f'.opblock-summary-path[data-path="{path}"]')).filter(
            has=page.locator(".opblock-summary-method", has_text=method))
        expect(block.locator(".opblock-summary-description")).to_have_text(summary)
    expect(page.get_by_text("Unable to render this definition")).to_have_count(0)
    screenshot(page, "docs")
    screenshot(page, "docs-phone", PHONE)

    page.get_by_text("Submit a distillation job").click()
    body = page.locator("#operations-jobs-create_job_v1_jobs_post")
    expect(body.get_by_role("button", name="Try it out")).to_be_visible()
    example = body.locator(".body-param__example").first
    expect(example).to_contain_text('"dataset"')
    example.scroll_into_view_if_needed()
    screenshot(page, "docs-submit-job", full_page=False)


def test_redoc_renders_title_and_every_operation(page: Page, page_watch: PageWatch,
                                                 operations: list[tuple[str, str, str]]):
    # ReDoc's hard-coded logo: the page's Content-Security-Policy refuses it, so no request leaves the
    # browser; one that did would still fail the test.
    page_watch.expect_csp_block("https://cdn.redoc.ly/")
    page.goto("/redoc")
    expect(page.locator("h1").first).to_contain_text("kd-service")
    menu = page.locator("[role=menuitem]")
    for _, _, summary in operations:
        expect(menu.filter(has_text=summary).first).to_be_attached()
        expect(page.locator("h2", has_text=summary).first).to_be_attached()
    screenshot(page, "redoc", full_page=False)
    screenshot(page, "redoc-phone", PHONE, full_page=False)
