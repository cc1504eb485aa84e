"""``/docs`` and ``/redoc`` load nothing from outside the server: every script, style and
icon they name is a local path that answers 200."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.server import Server, fake_models_file

pytestmark = pytest.mark.integration

#: the URLs a page makes the browser load: src= and href= attributes, and url(…) in styles
ASSET = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|url\(\s*["']?([^"')]+)""")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root: Path = tmp_path_factory.mktemp("docs")
    srv = Server(root / "data", models_file=fake_models_file(root / "models.toml")).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.mark.parametrize(("page", "wanted"), [("/docs", "swagger"), ("/redoc", "redoc")])
def test_docs_pages_load_only_local_assets(server: Server, page: str, wanted: str) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        answer = client.get(page)
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/html")
        assert not re.search(r"https?://", answer.text)  # no CDN, no web fonts
        urls = [a or b for a, b in ASSET.findall(answer.text)]
        assert any(wanted in url for url in urls), urls
        assert any(url.endswith(".js") for url in urls), urls
        for url in urls:
            assert url.startswith("/") and not url.startswith("//"), url
            assert client.get(url).status_code == 200, url
        assert "/openapi.json" in answer.text
        assert client.get("/openapi.json").status_code == 200


def test_swagger_oauth2_redirect_is_served(server: Server) -> None:
    assert httpx.get(f"{server.url}/docs/oauth2-redirect", timeout=30).status_code == 200
