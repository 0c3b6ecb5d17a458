"""The documentation pages work without a network: everything they load comes from the API."""

import re

import httpx
import pytest


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_documentation_pages_load_their_assets_from_the_api_itself(
    client: httpx.Client, page: str
) -> None:
    html = client.get(page)
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html.text)
    assert assets, "the page loads nothing"
    assert [url for url in assets if not url.startswith("/")] == []
    assert "/openapi.json" in html.text
    for url in assets:
        asset = client.get(url)
        assert asset.status_code == 200 and len(asset.content) > 100, url
