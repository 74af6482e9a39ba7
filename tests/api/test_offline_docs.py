"""/docs and /redoc load nothing from other hosts: their assets come from the service (real HTTP).

tests/browser/test_docs_pages.py renders both pages in Chromium; this runs without a browser.
"""

from __future__ import annotations

import re

from tests import helpers
from tests.helpers import ApiServer

api_server = helpers.api_server
LINKED = re.compile(r'(?:src|href)="([^"]+)"|(?:_url|url)\s*:\s*[\'"]([^\'"]+)[\'"]')


def linked_urls(html: str) -> list[str]:
    return [a or b for a, b in LINKED.findall(html)]


def test_docs_pages_link_only_local_assets(api_server: ApiServer):
    with api_server.client() as client:
        for page in ("/docs", "/redoc"):
            response = client.get(page)
            assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
            urls = linked_urls(response.text)
            assert "/openapi.json" in response.text and len(urls) >= 2, urls
            assert all(url.startswith("/") and not url.startswith("//") for url in urls), (page, urls)
            assert "googleapis" not in response.text and "cdn." not in response.text
            for url in urls:
                if url == "/openapi.json":
                    continue
                asset = client.get(url)
                assert asset.status_code == 200, url
                assert "immutable" in asset.headers["cache-control"], url


def test_swagger_ui_is_version_5_which_renders_openapi_3_1(api_server: ApiServer):
    with api_server.client() as client:
        html = client.get("/docs").text
        bundle = next(url for url in linked_urls(html) if url.endswith("swagger-ui-bundle.js"))
        code = client.get(bundle).text
        assert client.get("/openapi.json").json()["openapi"].startswith("3.1")
    assert re.search(r'PACKAGE_VERSION:"5\.\d+\.\d+"', code)


def test_redoc_page_refuses_images_from_other_hosts(api_server: ApiServer):
    with api_server.client() as client:
        policy = client.get("/redoc").headers["content-security-policy"]
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";") if part.strip())
    sources = directives["img-src"].split()
    assert "'self'" in sources and not any(s == "*" or "://" in s or s.startswith("http") for s in sources)
