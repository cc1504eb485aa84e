"""Infera's job API through the official ``InferaSDK``, and its sync endpoints over httpx."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import Any

import aiohttp
import httpx
import pytest
import together
from inferaSDK import InferaSDK

from tests.integration.helpers import (
    LONG_PROMPT,
    MODEL,
    PATIENCE,
    drain,
    jobs_of,
    metrics,
    raw,
    wait_until,
)
from tests.support.server import Server

pytestmark = pytest.mark.integration

HELLO = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(autouse=True)
def _idle(tq: together.Together) -> Iterator[None]:
    yield
    drain(tq)


@pytest.fixture
def sdk(server: Server, api_key: str) -> InferaSDK:
    return InferaSDK(api_key, base_url=server.url)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def http(server: Server, api_key: str) -> Iterator[httpx.Client]:
    """httpx with only Infera's ``api_key`` header."""
    with raw(server, api_key, dialect="infera") as client:
        yield client


async def test_submit_job_then_poll_get_result(
    sdk: InferaSDK, session: aiohttp.ClientSession
) -> None:
    submitted = await sdk.submit_job(
        session, MODEL, [{"role": "user", "content": LONG_PROMPT}], 24, 0.0
    )
    assert isinstance(submitted, dict), submitted
    job_id = submitted["job_id"]
    assert uuid.UUID(job_id).version == 4

    polls: list[dict[str, Any]] = []
    deadline = time.monotonic() + PATIENCE
    while True:
        result = await sdk.get_result(session, job_id)
        assert isinstance(result, dict), result
        if result.get("status") != "processing":
            break
        polls.append(result)
        assert time.monotonic() < deadline, "the job never finished"
        await asyncio.sleep(0.02)

    # while not finished, exactly what the SDK waits on; nothing else
    assert polls, "the job finished before the first poll; cannot check 'processing'"
    assert all(p == {"status": "processing"} for p in polls)
    assert result["status"] == "completed"
    message = result["result"]["message"]
    assert message["role"] == "assistant"
    assert isinstance(message["content"], str) and message["content"].strip()
    assert result["result"]["model"] == MODEL
    assert result["result"]["done"] is True
    assert 0 < result["result"]["eval_count"] <= 24


async def test_process_job_returns_the_content(
    sdk: InferaSDK, session: aiohttp.ClientSession
) -> None:
    # polls at once, then every 5 s: one sleep at most for this short job
    content = await sdk.process_job(session, MODEL, HELLO, 8, 0.0)
    assert isinstance(content, str) and content.strip()
    assert not content.startswith(("Error", "Timeout", "{")), content


async def test_get_result_of_a_cancelled_job_is_final(
    sdk: InferaSDK, session: aiohttp.ClientSession, tq: together.Together
) -> None:
    submitted = await sdk.submit_job(
        session, MODEL, [{"role": "user", "content": LONG_PROMPT}], 1500, 0.0
    )
    job_id = submitted["job_id"]
    assert tq.beta.jig.queue.cancel(model=MODEL, request_id=job_id).status == "canceled"

    result = await sdk.get_result(session, job_id)
    assert result["status"] == "cancelled"
    assert "result" not in result
    assert isinstance(result["error"]["message"], str)


def test_sync_chat_completions_returns_an_openai_completion(http: httpx.Client) -> None:
    response = http.post(
        "/chat/completions",
        json={"model": MODEL, "messages": HELLO, "max_tokens": 8, "temperature": 0},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == MODEL
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str) and choice["message"]["content"].strip()
    assert choice["finish_reason"] in ("stop", "length")
    assert 0 < body["usage"]["completion_tokens"] <= 8


def test_sync_request_timeout_is_a_timeout_error(
    server: Server, http: httpx.Client, tq: together.Together
) -> None:
    expired_before = len(jobs_of(server, "alice", "expired"))
    started = time.monotonic()
    response = http.post(
        "/chat/completions",
        json={
            "model": MODEL,
            "messages": [{"role": "user", "content": LONG_PROMPT}],
            "max_tokens": 1500,
            "temperature": 0,
            "request_timeout_time": 1,
        },
    )
    elapsed = time.monotonic() - started

    assert 400 <= response.status_code < 500, response.text
    assert response.status_code == 408
    body = response.json()
    assert set(body) == {"detail"}
    assert isinstance(body["detail"], str) and body["detail"]
    # at the deadline, not after the 1500 tokens (15 s and more)
    assert 0.9 <= elapsed < 10, elapsed
    wait_until(lambda: metrics(tq).messages_running == 0, timeout=5, what="the job to stop")
    assert len(jobs_of(server, "alice", "expired")) == expired_before + 1


async def test_get_completion_time(
    sdk: InferaSDK, session: aiohttp.ClientSession, http: httpx.Client
) -> None:
    submitted = await sdk.submit_job(
        session, MODEL, [{"role": "user", "content": LONG_PROMPT}], 24, 0.0
    )
    job_id = submitted["job_id"]

    early = http.get(f"/get_completion_time/{job_id}")
    assert early.status_code == 200
    assert early.json()["status"] == "processing"
    assert early.json()["completion_time"] is None

    def finished() -> dict[str, Any] | None:
        body: dict[str, Any] = http.get(f"/get_completion_time/{job_id}").json()
        return body if body["status"] != "processing" else None

    done = wait_until(finished, what="the job to finish")
    assert done["job_id"] == job_id
    assert done["status"] == "completed"
    created = datetime.fromisoformat(done["created_at"])
    finished_at = datetime.fromisoformat(done["done_at"])
    assert created < finished_at
    assert done["completion_time"] == pytest.approx(
        (finished_at - created).total_seconds(), abs=0.01
    )
    assert done["completion_time"] > 0


def test_available_models(http: httpx.Client) -> None:
    response = http.get("/available_models")
    assert response.status_code == 200
    assert MODEL in response.json()


def test_the_api_key_header_is_the_credential(server: Server, api_key: str) -> None:
    with raw(server, api_key, dialect="infera") as keyed, raw(server) as anonymous:
        assert keyed.get("/available_models").status_code == 200
        refused = anonymous.get("/available_models")
        assert refused.status_code == 401
        assert set(refused.json()) == {"detail"}
