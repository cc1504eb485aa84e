"""File downloads: HTTP ranges (206) on OpenAI's file content and Fireworks' signed
downloads, and Fireworks download URLs presigned by an S3 bucket.

Two servers with the fake engine: one on a local blob directory (its downloads pass
through inferq, ranges included), one on an S3-compatible bucket, where
``getDownloadEndpoint`` hands out the bucket's presigned URLs that plain HTTP reads. The
bucket is moto's S3 server on loopback, the only S3-compatible server installable here.
"""

from __future__ import annotations

from collections.abc import Iterator

import fireworks
import httpx
import openai
import pytest

from tests.integration.helpers import start_server
from tests.support.s3 import S3Server, s3_server
from tests.support.server import Server, fake_models_file

pytestmark = pytest.mark.integration

DATA = bytes(range(256)) * 400  # 102,400 bytes
ACCOUNT = "acme"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with s3_server(tmp_path_factory.mktemp("s3") / "moto.log") as server:
        yield server


@pytest.fixture(scope="module", params=["local", "s3"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """The fake engine (no model to load), on a local directory or on the bucket."""
    root = tmp_path_factory.mktemp("server")
    s3_url = request.getfixturevalue("s3").url() if request.param == "s3" else None
    srv = start_server(
        root,
        models=fake_models_file(root / "fake.toml").read_text(),
        env={"INFERQ_BLOB_URL": s3_url} if s3_url else {},
    )
    yield srv
    srv.stop()


def _get(url: str, key: str | None, range_: str | None = None) -> httpx.Response:
    headers = {} if range_ is None else {"Range": range_}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return httpx.get(url, headers=headers, timeout=30)


def test_openai_file_content_serves_ranges(server: Server, api_key: str) -> None:
    with openai.OpenAI(api_key=api_key, base_url=server.url + "/v1") as oai:
        file = oai.files.create(file=("data.bin", DATA), purpose="user_data")
        assert oai.files.content(file.id).content == DATA
    url = f"{server.url}/v1/files/{file.id}/content"
    whole = _get(url, api_key)
    assert whole.status_code == 200 and whole.content == DATA
    assert whole.headers["accept-ranges"] == "bytes"
    for header, start, stop in [
        ("bytes=0-0", 0, 1),
        ("bytes=100-65635", 100, 65636),  # across the store's chunks
        ("bytes=100000-", 100_000, len(DATA)),
        ("bytes=-10", len(DATA) - 10, len(DATA)),
        ("bytes=102000-999999", 102_000, len(DATA)),
    ]:
        part = _get(url, api_key, header)
        assert part.status_code == 206, (header, part.text)
        assert part.content == DATA[start:stop], header
        assert part.headers["content-range"] == f"bytes {start}-{stop - 1}/{len(DATA)}"
        assert part.headers["content-length"] == str(stop - start)
    # ignored, as the RFC allows: another unit, several ranges, nonsense
    for header in ("items=0-5", "bytes=0-1,5-6", "bytes=9-2", "bytes=x"):
        ignored = _get(url, api_key, header)
        assert ignored.status_code == 200 and ignored.content == DATA, header
    past = _get(url, api_key, f"bytes={len(DATA)}-")
    assert past.status_code == 416
    assert past.json()["error"]["code"] == "range_not_satisfiable"
    # a range does not get around authentication
    assert _get(url, None, "bytes=0-9").status_code == 401


def test_fireworks_downloads(server: Server, api_key: str, s3: S3Server) -> None:
    with fireworks.Fireworks(api_key=api_key, base_url=server.url, account_id=ACCOUNT) as fw:
        fw.datasets.create(
            dataset_id="blobs",
            dataset={"display_name": "Blobs", "example_count": "1", "user_uploaded": {}},
        )
        fw.datasets.upload("blobs", file=("data.jsonl", DATA))
        urls = fw.datasets.get_download_endpoint("blobs").filename_to_signed_urls
    assert urls is not None
    url = urls["dataset/blobs/data.jsonl"]
    presigned = server.env.get("INFERQ_BLOB_URL", "").startswith("s3://")
    # the bucket's own URL on S3 (the bytes never pass through inferq), else inferq's
    assert url.startswith(s3.endpoint if presigned else server.url), url
    assert ("X-Amz-Signature=" in url) is presigned
    whole = _get(url, None)
    assert whole.status_code == 200 and whole.content == DATA
    part = _get(url, None, "bytes=1000-1999")
    assert part.status_code == 206 and part.content == DATA[1000:2000]
    assert part.headers["content-range"] == f"bytes 1000-1999/{len(DATA)}"
    if not presigned:
        past = _get(url, None, "bytes=200000-")
        assert past.status_code == 416 and "past the end" in past.json()["message"]
