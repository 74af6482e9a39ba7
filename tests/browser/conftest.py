"""Fixtures for the real-browser tests: headless Chromium (Playwright) against a real uvicorn server.

`page` is a fresh tab (1280 x 800) whose relative URLs go to `base_url`, the test's API server. The test
FAILS if the page logs a console error, throws, has a request fail or get a status >= 400 it did not
announce with `page_watch.expect_status(url_part, status)`, or asks any other host for anything (such
requests are blocked: a CDN reference cannot pass). Mark browser test modules with
`pytestmark = pytest.mark.browser` (`make test-fast` leaves them out). Without Chromium they are skipped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests import helpers
from tests.browser.browser_harness import (
    CHROMIUM_ARGS,
    DESKTOP,
    SCREENSHOT_DIR,
    PageWatch,
    chromium_path,
    origin,
    written_screenshots,
)
from tests.helpers import ApiServer

api_server = helpers.api_server
PAGE_TIMEOUT_MS = 20_000  # generous: the test machines' 2 cores are shared


@pytest.fixture(scope="session", autouse=True)
def _fresh_screenshot_folder() -> None:
    """Screenshots left by an earlier run would pass for this run's."""
    for old in SCREENSHOT_DIR.glob("*.png"):
        old.unlink()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # Per module, not per session: a running sync Playwright holds an asyncio loop that breaks
    # asyncio.run() in the (non-browser) tests that follow.
    executable = chromium_path()
    if executable is None:
        if os.environ.get("KD_REQUIRE_BROWSER"):  # .ci/run sets it: CI must never skip the browser tests
            pytest.fail("chromium not found but KD_REQUIRE_BROWSER is set (scripts/ci-services.sh installs it)")
        pytest.skip("chromium not found: `apt-get install chromium` (scripts/ci-services.sh does), "
                    "or set KD_CHROMIUM to a Chromium binary")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def base_url(api_server: ApiServer) -> str:
    """The server pages load from; override it in a module to test another server."""
    return api_server.base_url


@pytest.fixture
def page_watch(base_url: str) -> PageWatch:
    return PageWatch(allowed_origin=origin(base_url))


@pytest.fixture
def page(browser: Browser, base_url: str, page_watch: PageWatch) -> Iterator[Page]:
    context = browser.new_context(base_url=base_url, viewport=DESKTOP)
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    tab = context.new_page()
    page_watch.watch(tab)
    yield tab
    context.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """After the test body, fail it on the page's problems (or add them to its own failure)."""
    watch = getattr(item, "funcargs", {}).get("page_watch")
    try:
        result = yield
    except BaseException as error:
        if isinstance(watch, PageWatch) and watch.problems:
            error.add_note(watch.report())
        raise
    if isinstance(watch, PageWatch):
        watch.check()
    return result


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if written_screenshots:
        terminalreporter.write_line(f"browser screenshots: {SCREENSHOT_DIR} ({len(written_screenshots)} files)")
