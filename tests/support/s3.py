"""An S3-compatible server on loopback for the S3 blob store's tests: moto's server mode.

moto's server (``python -m moto.server``) is the only S3-compatible server that installs
here (from PyPI, with the test extra); it speaks S3's wire protocol over real HTTP,
multipart uploads, range GETs and presigned URLs included, so the S3 blob store runs
against it exactly as against a bucket. Each test takes its own prefix in one bucket.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.support.server import free_port

BUCKET = "inferq-test"
#: what moto takes as credentials (it checks none); the region S3 signs with
QUERY = "region=us-east-1&access_key_id=test&secret_access_key=test"


class S3Server:
    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint

    def url(self, prefix: str | None = None) -> str:
        """An ``s3://`` blob URL on a fresh prefix (or ``prefix``) of the test bucket."""
        prefix = prefix or "t-" + uuid.uuid4().hex[:12]
        return f"s3://{BUCKET}/{prefix}?endpoint={self.endpoint}&{QUERY}"

    def pending_uploads(self, prefix: str) -> str:
        """The incomplete multipart uploads under ``prefix``, as S3's XML listing."""
        return httpx.get(f"{self.endpoint}/{BUCKET}", params={"uploads": "", "prefix": prefix}).text


@contextlib.contextmanager
def s3_server(log: Path) -> Iterator[S3Server]:
    """moto's S3 server on a free loopback port with the test bucket, stopped afterwards."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.put(f"{endpoint}/{BUCKET}").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto's S3 server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield S3Server(endpoint)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
