"""A sync request whose client goes away stops its generation and frees the slot."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.integration.helpers import BLOCKER_TOKENS, LONG_PROMPT, MODEL, PATIENCE, jobs_of
from tests.support.server import Server

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("path", "body", "headers"),
    [
        (
            "/v1/chat/completions",
            # greedy, as every blocker: a sampled story may end within the client's second
            {"max_tokens": BLOCKER_TOKENS, "temperature": 0},
            lambda key: {"authorization": f"Bearer {key}"},
        ),
        (
            "/chat/completions",
            {"max_tokens": BLOCKER_TOKENS, "temperature": 0},
            lambda key: {"api_key": key},
        ),
    ],
    ids=["openai", "infera"],
)
def test_disconnected_sync_request_is_cancelled(
    server: Server, path: str, body: dict[str, object], headers: object
) -> None:
    tenant = f"gone-{path.strip('/').replace('/', '-')}"
    key = server.create_key(tenant)
    request = {"model": MODEL, "messages": [{"role": "user", "content": LONG_PROMPT}], **body}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.url + path, json=request, headers=headers(key), timeout=1.0)  # type: ignore[operator]
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline:
        rows = jobs_of(server, tenant)
        if rows and rows[0][6] == "cancelled":
            break
        time.sleep(0.2)
    rows = jobs_of(server, tenant)
    assert len(rows) == 1 and rows[0][6] == "cancelled", rows
