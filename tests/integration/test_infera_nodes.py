"""Infera's node endpoints: an Infera-style node (spoken here over httpx, as Infera's
workers speak it) serves a chat model that a client uses through the official InferaSDK.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from inferaSDK import InferaSDK

from tests.integration.helpers import new_key, start_server
from tests.support.server import Server

pytestmark = pytest.mark.integration

MODEL = "llama3.2:3b"
HANDLER = "my-org/handler"
MODELS = f"""\
[models."{MODEL}"]
engine = "remote"
context_length = 4096

[models."{HANDLER}"]
engine = "remote"
handler = true
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("infera-nodes"), models=MODELS)
    try:
        yield srv
    finally:
        srv.stop()


def node_client(server: Server) -> httpx.Client:
    name = f"ollama-{uuid.uuid4().hex[:6]}"
    token = server.cli("nodes", "create", "--name", name).strip().splitlines()[-1]
    return httpx.Client(base_url=server.url, headers={"api_key": token}, timeout=30)


@pytest.fixture
def node(server: Server) -> Iterator[httpx.Client]:
    with node_client(server) as client:
        yield client


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def ollama(content: str) -> dict[str, Any]:
    """An Ollama /api/chat response, as Infera's workers post it."""
    return {
        "model": MODEL,
        "created_at": "2026-12-05T00:00:00Z",
        "message": {"role": "assistant", "content": content},
        "done": True,
        "done_reason": "stop",
        "prompt_eval_count": 7,
        "eval_count": 3,
    }


def take(node: httpx.Client) -> dict[str, Any]:
    for _ in range(100):
        job: dict[str, Any] = node.get("/worker/get_job").json()
        if job["job_id"] is not None:
            return job
    raise AssertionError("no job to take")


async def test_an_infera_node_serves_a_client_of_the_infera_sdk(
    server: Server, node: httpx.Client, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    assert node.post("/check_node_secret").json()["valid"] is True
    assert node.post("/register_node_secret").status_code == 200
    registered = node.post(
        "/worker/register_node", json={"node_url": "http://gpu:11434", "node_version": "0.4"}
    )
    assert registered.status_code == 200, registered.text
    assert node.post("/worker/update_models", json={"models": [MODEL]}).status_code == 200
    assert node.get("/worker/get_job").json() == {"job_id": None}

    sdk = InferaSDK(new_key(server, "alice"), base_url=server.url)
    messages = [{"role": "user", "content": "Say hello."}]
    submitted = await sdk.submit_job(session, MODEL, messages, 16, 0.0)
    job = take(node)
    assert job == {
        "job_id": submitted["job_id"],
        "model": MODEL,
        "messages": messages,
        "max_output": 16,
        "temperature": 0.0,
    }
    assert node.get("/worker/ping").json()["jobs"] == [job["job_id"]]
    assert (await sdk.get_result(session, job["job_id"])) == {"status": "processing"}
    posted = node.post(
        "/worker/update_result",
        json={
            "job_id": job["job_id"],
            "api_key": "",
            "model_name": MODEL,
            "result": ollama("Hello!"),
            "status": "completed",
        },
    )
    assert posted.status_code == 200, posted.text
    result = await sdk.get_result(session, job["job_id"])
    assert result["status"] == "completed"
    assert result["result"]["message"]["content"] == "Hello!"
    assert result["result"]["eval_count"] == 3
    listed = server.cli("nodes", "list")
    assert MODEL in listed and "0.4" in listed


async def test_a_failed_result_is_retried_and_a_stolen_one_refused(
    server: Server, node: httpx.Client, session: aiohttp.ClientSession
) -> None:
    node.post("/worker/update_models", json={"models": [MODEL]})
    sdk = InferaSDK(new_key(server, "bob"), base_url=server.url)
    submitted = await sdk.submit_job(session, MODEL, [{"role": "user", "content": "x"}], 8, 0.0)
    job = take(node)

    def update(client: httpx.Client, status: str, result: dict[str, Any]) -> httpx.Response:
        body = {"job_id": job["job_id"], "api_key": "", "model_name": MODEL}
        return client.post(
            "/worker/update_result", json={**body, "result": result, "status": status}
        )

    assert update(node, "failed", {"error": "out of memory"}).status_code == 200
    again = take(node)  # requeued for another attempt
    assert again["job_id"] == submitted["job_id"]
    with node_client(server) as thief:
        thief.post("/worker/update_models", json={"models": [MODEL]})
        stolen = update(thief, "completed", ollama("not mine"))
        assert stolen.status_code == 409
        assert "detail" in stolen.json()  # Infera's error shape
    bad = update(node, "completed", {"message": {"role": "assistant"}})
    assert bad.status_code == 422  # Infera's status for a request it cannot take
    assert update(node, "completed", ollama("mine")).status_code == 200
    await asyncio.sleep(0)
    result = await sdk.get_result(session, job["job_id"])
    assert result["result"]["message"]["content"] == "mine"


def test_infera_node_endpoints_refuse_api_keys_and_bad_input(
    server: Server, node: httpx.Client
) -> None:
    key = new_key(server, "carol")
    with httpx.Client(base_url=server.url, headers={"api_key": key}) as client:
        for method, path in [
            ("GET", "/worker/get_job"),
            ("GET", "/worker/ping"),
            ("POST", "/worker/update_models"),
            ("POST", "/worker/register_node"),
            ("POST", "/worker/deregister_node"),
            ("POST", "/check_node_secret"),
            ("POST", "/register_node_secret"),
        ]:
            assert client.request(method, path, json={}).status_code == 401, path
    assert httpx.get(f"{server.url}/worker/get_job").status_code == 401
    refused = node.post("/worker/update_models", json={"models": [HANDLER]})
    assert refused.status_code == 422 and "detail" in refused.json()
    assert node.post("/worker/update_models", json={"models": "x"}).status_code == 422
    missing = {"job_id": str(uuid.uuid4()), "api_key": "", "model_name": MODEL}
    answer = node.post("/worker/update_result", json={**missing, "result": {}, "status": "done"})
    assert answer.status_code == 404
