"""OpenAI's batch queue limit through the OpenAI SDK: a tenant's unfinished batch rows
hold their estimated tokens per model; a batch that would pass the bound fails with
token_limit_exceeded, and another tenant is not held by the first one's rows."""

from __future__ import annotations

import json
import time
from pathlib import Path

import openai
import pytest

from tests.support.server import Server, fake_models_file

pytestmark = pytest.mark.integration


def lines(n: int) -> bytes:
    body = {"model": "fake", "messages": [{"role": "user", "content": "x" * 40}], "max_tokens": 50}
    rows = [{"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}
            for i in range(n)]  # fmt: skip
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def batch(client: openai.OpenAI, n: int) -> openai.types.Batch:
    uploaded = client.files.create(file=("rows.jsonl", lines(n)), purpose="batch")
    return client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )


def validated(client: openai.OpenAI, batch_id: str) -> openai.types.Batch:
    for _ in range(200):
        found = client.batches.retrieve(batch_id)
        if found.status != "validating":
            return found
        time.sleep(0.1)
    raise AssertionError(f"batch {batch_id} did not validate")


def test_a_batch_past_the_enqueued_tokens_fails(tmp_path: Path) -> None:
    # each row is about 70 tokens (40 characters, the role and model names, 50 output):
    # one batch of ten rows fits in 1000, two do not; rows run slowly (1 s a token, 1 slot),
    # so the first batch's rows are still unfinished when the second validates
    env = {"INFERQ_MAX_BATCH_ENQUEUED_TOKENS": "1000"}
    models = fake_models_file(tmp_path / "models.toml", token_delay=1.0, slots=1)
    server = Server(tmp_path / "data", models_file=models, env=env).start()
    try:
        first = openai.OpenAI(api_key=server.create_key("first"), base_url=f"{server.url}/v1")
        other = openai.OpenAI(api_key=server.create_key("other"), base_url=f"{server.url}/v1")
        assert validated(first, batch(first, 10).id).status in ("in_progress", "validating")
        over = validated(first, batch(first, 10).id)
        assert over.status == "failed"
        assert over.errors is not None and over.errors.data
        assert over.errors.data[0].code == "token_limit_exceeded"
        assert "fake" in (over.errors.data[0].message or "")
        # the bound is per tenant: another tenant's batch of the same size is accepted
        assert validated(other, batch(other, 10).id).status != "failed"
    finally:
        server.stop()
