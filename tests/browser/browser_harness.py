"""Helpers for the real-browser tests: where Chromium is, what a page did wrong, screenshots.

The fixtures that use them are in conftest.py next to this file (`browser`, `base_url`, `page_watch`,
`page`); a test module imports `screenshot`, `DESKTOP` and `PHONE` from here.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from playwright.sync_api import ConsoleMessage, Error, Frame, Page, Request, Response, Route, ViewportSize

from tests.paths import REPO

SCREENSHOT_DIR = REPO / "test-artifacts" / "screenshots"
DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 390, "height": 844}
# Without the background-networking flags Chromium phones home at every start, which a closed network
# refuses; --no-sandbox because CI runs as root.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
STATUS_LOG = re.compile(r"Failed to load resource: the server responded with a status of (\d+)")
written_screenshots: list[Path] = []


def chromium_path() -> str | None:
    """The Chromium to drive: $KD_CHROMIUM, else `chromium` on PATH (Debian's apt package)."""
    return os.environ.get("KD_CHROMIUM") or shutil.which("chromium")


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@dataclass
class PageWatch:
    """Everything that went wrong in a page: console errors, uncaught exceptions, failed requests (not
    those aborted because the page navigated away), responses >= 400 the test did not expect, and
    requests to any host but the test server (blocked)."""

    allowed_origin: str
    problems: list[str] = field(default_factory=list)
    expected: list[tuple[str, int]] = field(default_factory=list)
    csp_blocked: list[str] = field(default_factory=list)
    blocked: set[str] = field(default_factory=set)
    page: Page | None = None
    # Main-frame navigations begun or committed so far, and the count when each request started: a
    # request the browser aborts because the page navigated away (a live event stream, a fetch) is the
    # page leaving, not a failure. Judged in check(), once every event has arrived.
    navigations: int = 0
    started_at_navigation: dict[Request, int] = field(default_factory=dict)
    aborted: list[Request] = field(default_factory=list)

    def expect_status(self, url_part: str, status: int) -> None:
        """A `status` answer from a URL containing `url_part` is part of the test, not a problem."""
        self.expected.append((url_part, status))

    def expect_csp_block(self, url_part: str) -> None:
        """The page's Content-Security-Policy refusing a URL containing `url_part` (the browser never sends
        the request; it logs a console error and fails the request as "csp") is intended, not a problem."""
        self.csp_blocked.append(url_part)

    def watch(self, page: Page) -> None:
        self.page = page
        page.route("**/*", self._route)
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.problems.append(f"uncaught exception: {error}"))
        page.on("request", self._request)
        page.on("framenavigated", self._navigated)
        page.on("requestfailed", self._request_failed)
        page.on("response", self._response)

    def check(self) -> None:
        """Raise AssertionError listing the problems, after the events already sent have arrived."""
        if self.page is not None and not self.page.is_closed():
            try:
                self.page.evaluate("0")  # a round trip: Playwright delivers pending events meanwhile
            except Error:
                pass
        self.problems += [f"request failed: {r.method} {r.url}: {r.failure}" for r in self.aborted
                          if self.started_at_navigation.get(r, self.navigations) >= self.navigations]
        self.aborted.clear()
        if self.problems:
            raise AssertionError(self.report())

    def report(self) -> str:
        return "the page had problems:\n  " + "\n  ".join(self.problems)

    def _is_expected(self, url: str, status: int) -> bool:
        return any(part in url and status == expected for part, expected in self.expected)

    def _route(self, route: Route) -> None:
        url = route.request.url
        if urlsplit(url).scheme not in ("http", "https", "ws", "wss") or origin(url) == self.allowed_origin:
            route.continue_()
            return
        self.blocked.add(url)
        self.problems.append(f"request to another host (blocked): {route.request.method} {url}")
        route.abort("blockedbyclient")

    def _console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        url = message.location.get("url", "")
        status = STATUS_LOG.match(message.text)
        csp_block = "Content Security Policy" in message.text and any(p in message.text for p in self.csp_blocked)
        if url in self.blocked or csp_block or (status and self._is_expected(url, int(status[1]))):
            return  # reported as blocked, or expected
        self.problems.append(f"console error: {message.text} (at {url or 'page'})")

    def _request(self, request: Request) -> None:
        if request.is_navigation_request() and self.page is not None and request.frame == self.page.main_frame:
            self.navigations += 1
        self.started_at_navigation[request] = self.navigations

    def _navigated(self, frame: Frame) -> None:
        if self.page is not None and frame == self.page.main_frame:
            self.navigations += 1

    def _request_failed(self, request: Request) -> None:
        csp_block = request.failure == "csp" and any(part in request.url for part in self.csp_blocked)
        if request.failure == "net::ERR_ABORTED" and request.url not in self.blocked:
            self.aborted.append(request)
        elif request.url not in self.blocked and not csp_block:
            self.problems.append(f"request failed: {request.method} {request.url}: {request.failure}")

    def _response(self, response: Response) -> None:
        if response.status >= 400 and not self._is_expected(response.url, response.status):
            self.problems.append(f"HTTP {response.status}: {response.request.method} {response.url}")


def screenshot(page: Page, name: str, viewport: ViewportSize = DESKTOP, *, full_page: bool = True) -> Path:
    """Save the page as test-artifacts/screenshots/<name>.png at `viewport` (DESKTOP: 1280 px wide)."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"screenshot name {name!r}: use letters, digits, '.', '_' and '-'")
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOT_DIR / f"{name}.png"
    previous = page.viewport_size
    page.set_viewport_size(viewport)
    try:
        page.screenshot(path=path, full_page=full_page)
    finally:
        if previous is not None and previous != viewport:
            page.set_viewport_size(previous)
    written_screenshots.append(path)
    return path
