"""What every /ui test does: sign in through the form, and check a page's accessibility basics and layout
at desktop and phone width (then save its screenshots)."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from tests.browser.browser_harness import DESKTOP, PHONE, screenshot

NAMED = re.compile(r"\S")


def sign_in(page: Page, key: str) -> None:
    page.goto("/ui/sign-in")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/ui/jobs$"))


def check_basics(page: Page) -> None:
    """Landmarks, a working skip link, a name for every form control, a text alternative for every image
    and chart, and a visible focus ring."""
    expect(page.get_by_role("main")).to_have_count(1)
    expect(page.get_by_role("banner")).to_have_count(1)
    expect(page.get_by_role("contentinfo")).to_have_count(1)
    assert page.locator("h1").count() == 1
    controls = page.locator("main input:not([type=hidden]), main select, main textarea, header button")
    for i in range(controls.count()):
        expect(controls.nth(i)).to_have_accessible_name(NAMED)
    for image in page.locator("img").all():
        assert image.get_attribute("alt"), image.evaluate("e => e.outerHTML")
    for chart in page.locator("svg[role=img]").all():
        expect(chart).to_have_accessible_name(NAMED)
    # Start keyboard navigation from the top of the document (as after loading a page without autofocus).
    page.evaluate("""() => { document.activeElement?.blur(); document.body.tabIndex = -1; document.body.focus();
                             document.body.removeAttribute('tabindex'); }""")
    page.keyboard.press("Tab")
    skip = page.locator(":focus")
    expect(skip).to_have_text("Skip to main content")
    expect(skip).to_be_in_viewport()
    outline = skip.evaluate("e => getComputedStyle(e).outlineStyle + ' ' + getComputedStyle(e).outlineWidth")
    assert not outline.startswith("none") and not outline.endswith(" 0px"), outline
    page.evaluate("document.activeElement.blur()")  # screenshots show the page, not the skip link


def no_horizontal_scroll(page: Page) -> None:
    width = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert width[0] <= width[1], f"the page scrolls sideways: {width[0]} px of content in {width[1]} px"


def check_and_capture(page: Page, name: str, *, full_page: bool = True) -> None:
    """check_basics, then at 1280 px and at a 390 px phone width: no sideways scroll, and a screenshot."""
    check_basics(page)
    for suffix, viewport in (("", DESKTOP), ("-phone", PHONE)):
        page.set_viewport_size(viewport)
        no_horizontal_scroll(page)
        screenshot(page, name + suffix, viewport, full_page=full_page)
    page.set_viewport_size(DESKTOP)
