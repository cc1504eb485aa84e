"""Signed URLs: the configured public host, and no token in the logs (a real server's
log is checked in tests/integration/test_slow_clients.py)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from inferq.api.app import create_app
from inferq.api.redact import REDACTED, RedactSecrets, redact
from inferq.blobs import MemoryBlobs
from inferq.config import Settings
from inferq.core.keys import KeyService
from inferq.engines.base import ModelSpec
from inferq.engines.registry import ModelRegistry
from inferq.store.memory import MemoryStore


def _upload_url(settings: Settings, host: str) -> str:
    store = MemoryStore()
    registry = ModelRegistry({"fake": ModelSpec(name="fake", engine="fake", context_length=64)})
    app = create_app(settings, store=store, registry=registry, blobs=MemoryBlobs())
    with TestClient(app) as client:
        _, secret = asyncio.run(KeyService(store).create(name="a", tenant="ta"))
        client.headers.update({"authorization": f"Bearer {secret}", "host": host})
        base = "/v1/accounts/acme/datasets"
        made = client.post(base, json={"datasetId": "ds", "dataset": {"exampleCount": "1"}})
        assert made.status_code == 200, made.text
        answer = client.post(
            f"{base}/ds:getUploadEndpoint", json={"filenameToSize": {"in.jsonl": "3"}}
        )
        assert answer.status_code == 200, answer.text
        url: str = answer.json()["filenameToSignedUrls"]["in.jsonl"]
        return url


def test_signed_urls_use_the_public_url(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path, signing_key="s", public_url="https://inferq.example.com/api/"
    )
    url = _upload_url(settings, "attacker.example")
    assert url.startswith("https://inferq.example.com/api/v1/uploads/"), url


def test_signed_urls_without_public_url_keep_the_request_host(tmp_path: Path) -> None:
    url = _upload_url(Settings(data_dir=tmp_path, signing_key="s"), "inferq.internal:8000")
    assert url.startswith("http://inferq.internal:8000/v1/uploads/"), url


def test_public_url_must_be_http() -> None:
    with pytest.raises(ValueError, match="public_url"):
        Settings(public_url="inferq.example.com")
    assert Settings(public_url="").public_url == ""


def test_redact_hides_signed_url_tokens() -> None:
    assert redact("/v1/downloads/eyJhIjoxfQ.c2ln") == f"/v1/downloads/{REDACTED}"
    assert redact("/v1/uploads/abc.def?x=1") == f"/v1/uploads/{REDACTED}?x=1"
    assert redact("/x?a=1&signature=s3cr3t&token=t0k&b=2") == (
        f"/x?a=1&signature={REDACTED}&token={REDACTED}&b=2"
    )
    assert redact("/v1/accounts/acme/datasets/ds") == "/v1/accounts/acme/datasets/ds"


def test_access_log_records_are_redacted_in_uvicorns_format() -> None:
    from uvicorn.logging import AccessFormatter

    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/v1/downloads/payload.mac?sig=zz", "1.1", 200),
        None,
    )
    assert RedactSecrets().filter(record)
    line = AccessFormatter(use_colors=False).format(record)
    assert "payload.mac" not in line and "zz" not in line
    assert f"GET /v1/downloads/{REDACTED}?sig={REDACTED}" in line
