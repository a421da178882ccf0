"""/docs and /redoc work offline: their pages name only assets the API serves itself."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from api.main import app

# Every URL a page loads: src= and href= attributes, and the URLs its script hands the viewer.
PAGE_URLS = re.compile(
    r"""(?:src|href)\s*=\s*["']([^"']+)["']|(?:url|spec-url)\s*[:=]\s*["']([^"']+)["']"""
)


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(app)


def _urls(html: str) -> list[str]:
    return [first or second for first, second in PAGE_URLS.findall(html)]


@pytest.mark.parametrize(
    ("page", "assets"),
    [
        ("/docs", {"swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"}),
        ("/redoc", {"redoc.standalone.js", "favicon.png"}),
    ],
)
def test_a_docs_page_loads_only_local_assets_and_each_is_served(
    client: TestClient, page: str, assets: set[str]
) -> None:
    response = client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    urls = _urls(response.text)
    assert "/openapi.json" in urls
    # No CDN, no other host, no protocol-relative URL: everything comes from this API.
    assert "://" not in response.text.replace("http://www.w3.org", "")
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), url
    served = {url.rsplit("/", 1)[1] for url in urls if url.startswith("/docs-assets/")}
    assert served == assets
    for url in urls:
        if url.startswith("/docs-assets/"):
            asset = client.get(url)
            assert asset.status_code == 200, url
            assert len(asset.content) > 1000, url
    # Each bundle is the viewer itself, not a stub.
    if page == "/docs":
        assert "SwaggerUIBundle" in client.get("/docs-assets/swagger-ui-bundle.js").text
    else:
        assert "Redoc" in client.get("/docs-assets/redoc.standalone.js").text


def test_the_docs_pages_and_assets_stay_out_of_the_openapi_document(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert not [path for path in paths if path.startswith(("/docs", "/redoc"))]


def test_an_unknown_asset_is_a_404(client: TestClient) -> None:
    assert client.get("/docs-assets/nothing.js").status_code == 404
