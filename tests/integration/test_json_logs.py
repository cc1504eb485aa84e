"""``inferq serve --log-format json``: every line is a JSON object, a request's lines carry
its request id, the id comes back as ``X-Request-Id``, and signed URLs stay redacted."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.server import Server, fake_models_file

pytestmark = pytest.mark.integration

SECRET_TOKEN = "s3cr3t-download-token-value"


def test_json_logs_carry_request_and_job_ids(tmp_path: Path) -> None:
    server = Server(
        tmp_path / "data",
        models_file=fake_models_file(tmp_path / "models.toml"),
        args=("--log-format", "json"),
    )
    # a key before the first start: no admin-key banner (which is not a log line)
    key = server.create_key("logs", "logs")
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            answers = exercise(client, key)
    finally:
        server.stop()

    chat, mine, generated, too_long, spaced, unauthorised = answers
    assert chat.headers["x-request-id"] == "chat-req-1"
    assert mine.headers["x-request-id"] == "my-request.id_42"
    for answer in (generated, too_long, spaced):
        assert re.fullmatch(r"[0-9a-f]{32}", answer.headers["x-request-id"])
    assert unauthorised.status_code == 401
    assert unauthorised.headers["x-request-id"] == "no-key-1"

    lines = [line for line in server.log().splitlines() if line.strip()]
    records: list[dict[str, Any]] = [json.loads(line) for line in lines]
    assert records
    for record in records:
        assert {"time", "level", "message"} <= record.keys(), record
    chat_lines = [r for r in records if r.get("request_id") == "chat-req-1"]
    assert chat_lines, records
    assert any("POST /v1/chat/completions" in r["message"] for r in chat_lines)
    assert any(r.get("tenant") == "logs" for r in chat_lines)
    job_lines = [r for r in records if r.get("job_id")]
    assert any(r.get("model") == "fake" and r.get("tenant") == "logs" for r in job_lines)
    assert "no-key-1" in {r.get("request_id") for r in records}
    # the redaction filter still works on the JSON lines
    assert SECRET_TOKEN not in server.log()
    assert any("/v1/downloads/[redacted]" in r["message"] for r in records)


def exercise(client: httpx.Client, key: str) -> list[httpx.Response]:
    auth = {"Authorization": f"Bearer {key}"}
    chat = client.post(
        "/v1/chat/completions",
        headers={**auth, "X-Request-Id": "chat-req-1"},
        json={"model": "fake", "messages": [{"role": "user", "content": "hello there"}]},
    )
    assert chat.status_code == 200, chat.text
    mine = client.get("/healthz", headers={"X-Request-Id": "my-request.id_42"})
    generated = client.get("/healthz")
    too_long = client.get("/healthz", headers={"X-Request-Id": "x" * 129})
    spaced = client.get("/healthz", headers={"X-Request-Id": "two words"})
    unauthorised = client.get("/v1/models", headers={"X-Request-Id": "no-key-1"})
    client.get(f"/v1/downloads/{SECRET_TOKEN}")
    return [chat, mine, generated, too_long, spaced, unauthorised]
