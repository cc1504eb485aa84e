"""Tenants see only their own jobs; requests without a valid key get 401 in each dialect."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import aiohttp
import httpx
import openai
import pytest
import together
from inferaSDK import InferaSDK

from tests.integration.helpers import (
    MODEL,
    cancel_quietly,
    chat_payload,
    drain,
    metrics,
    new_key,
    raw,
    start_blocker,
    status,
    submit,
    wait_status,
    wait_until,
)
from tests.support.server import Server

pytestmark = pytest.mark.integration

HELLO = [{"role": "user", "content": "Say hello."}]
TOGETHER_ERROR_KEYS = {"code", "message", "param", "type"}


@pytest.fixture(scope="module")
def keys(server: Server) -> dict[str, str]:
    return {"a": new_key(server, "tenant-a"), "b": new_key(server, "tenant-b")}


@pytest.fixture
def tq_a(server: Server, keys: dict[str, str]) -> Iterator[together.Together]:
    with together.Together(api_key=keys["a"], base_url=server.url) as client:
        yield client
        drain(client)


@pytest.fixture
def tq_b(server: Server, keys: dict[str, str]) -> Iterator[together.Together]:
    with together.Together(api_key=keys["b"], base_url=server.url) as client:
        yield client
        drain(client)


@pytest.fixture
def a_job(tq_a: together.Together) -> str:
    """A finished job of tenant A."""
    request_id = submit(tq_a, chat_payload(max_tokens=4))
    wait_status(tq_a, request_id, {"done"})
    return request_id


def test_another_tenants_job_is_not_found_in_together(
    tq_a: together.Together, tq_b: together.Together, a_job: str
) -> None:
    with pytest.raises(together.NotFoundError) as on_status:
        status(tq_b, a_job)
    assert set(on_status.value.body) == TOGETHER_ERROR_KEYS

    blocker = start_blocker(tq_a)
    try:
        pending = submit(tq_a, chat_payload(max_tokens=4))
        for request_id in (a_job, blocker, pending):
            with pytest.raises(together.NotFoundError) as on_cancel:
                tq_b.beta.jig.queue.cancel(model=MODEL, request_id=request_id)
            assert on_cancel.value.status_code == 404
            assert set(on_cancel.value.body) == TOGETHER_ERROR_KEYS
        # B's clear does not touch A's queue
        assert tq_b.beta.jig.queue.clear(model=MODEL).canceled_count == 0
        assert status(tq_a, pending).status == "pending"
        assert status(tq_a, blocker).status == "running"
    finally:
        cancel_quietly(tq_a, blocker)
    assert status(tq_a, a_job).status == "done"


async def test_another_tenants_job_is_not_found_in_infera(
    server: Server, keys: dict[str, str], a_job: str
) -> None:
    async with aiohttp.ClientSession() as session:
        as_b = await InferaSDK(keys["b"], base_url=server.url).get_result(session, a_job)
        as_a = await InferaSDK(keys["a"], base_url=server.url).get_result(session, a_job)
    assert isinstance(as_b, str) and as_b.startswith("Error: 404"), as_b
    assert as_a["status"] == "completed"

    with raw(server, keys["b"], dialect="infera") as http:
        for path in (f"/get_result/{a_job}", f"/get_completion_time/{a_job}"):
            response = http.get(path)
            assert response.status_code == 404
            assert set(response.json()) == {"detail"}
            assert a_job in response.json()["detail"]


def test_metrics_count_only_the_callers_jobs(
    tq_a: together.Together, tq_b: together.Together, a_job: str
) -> None:
    b_before = metrics(tq_b)
    a_before = metrics(tq_a)
    assert a_before.total_jobs >= 1

    blocker = start_blocker(tq_a)
    try:
        submit(tq_a, chat_payload(max_tokens=4))
        a_now, b_now = metrics(tq_a), metrics(tq_b)
        assert (a_now.messages_running, a_now.messages_waiting) == (1, 1)
        assert a_now.total_jobs == a_before.total_jobs + 2
        assert (b_now.messages_running, b_now.messages_waiting, b_now.total_jobs) == (
            0,
            0,
            b_before.total_jobs,
        )
    finally:
        cancel_quietly(tq_a, blocker)


def test_sync_jobs_belong_to_their_tenant(
    server: Server, keys: dict[str, str], tq_a: together.Together, tq_b: together.Together
) -> None:
    with openai.OpenAI(api_key=keys["a"], base_url=server.url + "/v1") as client:
        completion = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=4)
    request_id = completion.id.removeprefix("chatcmpl-")
    assert status(tq_a, request_id).status == "done"
    with pytest.raises(together.NotFoundError):
        status(tq_b, request_id)


# -- authentication -----------------------------------------------------------

NO_KEY: dict[str, str] = {}
BAD_KEYS = {
    "bad bearer": {"authorization": "Bearer iq-not-a-key"},
    "bad api_key": {"api_key": "iq-not-a-key"},
    "not bearer": {"authorization": "Basic dXNlcjpwYXNz"},
}
HEADERS = {"no key": NO_KEY, **BAD_KEYS}

REQUESTS: list[tuple[str, str, str, dict[str, Any] | None]] = [
    # dialect, method, path, JSON body
    ("together", "POST", "/v1/queue/submit", {"model": MODEL, "payload": chat_payload()}),
    ("together", "GET", f"/v1/queue/status?model={MODEL}&request_id=x", None),
    ("together", "GET", f"/v1/queue/metrics?model={MODEL}", None),
    ("together", "POST", "/v1/queue/cancel", {"model": MODEL, "request_id": "x"}),
    ("together", "POST", "/v1/queue/clear", {"model": MODEL}),
    ("openai", "POST", "/v1/chat/completions", {"model": MODEL, "messages": HELLO}),
    ("openai", "GET", "/v1/models", None),
    (
        "infera",
        "POST",
        "/submit_job",
        {"model": MODEL, "messages": HELLO, "max_output": 4, "temperature": 0},
    ),
    ("infera", "GET", "/get_result/0b7c6a2e-5d34-4c36-9f0e-2f1f7d3c9a11", None),
    (
        "infera",
        "POST",
        "/chat/completions",
        {"model": MODEL, "messages": HELLO, "max_tokens": 4, "temperature": 0},
    ),
    ("infera", "GET", "/available_models", None),
]


def assert_401_shape(dialect: str, response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    body = response.json()
    if dialect == "together":
        assert set(body) == TOGETHER_ERROR_KEYS
        assert body["type"] == "authentication_error"
        assert body["message"]
    elif dialect == "openai":
        assert set(body) == {"error"}
        assert {"message", "type", "param", "code"} <= set(body["error"])
        assert body["error"]["message"]
    else:
        assert set(body) == {"detail"}
        assert isinstance(body["detail"], str) and body["detail"]


@pytest.mark.parametrize("headers", HEADERS.values(), ids=HEADERS.keys())
@pytest.mark.parametrize(
    ("dialect", "method", "path", "body"), REQUESTS, ids=[f"{r[1]} {r[2]}" for r in REQUESTS]
)
def test_requests_without_a_valid_key_get_401(
    server: Server,
    tq_a: together.Together,
    dialect: str,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    headers: dict[str, str],
) -> None:
    before = metrics(tq_a).total_jobs
    with httpx.Client(base_url=server.url, headers=headers) as http:
        response = http.request(method, path, json=body)
    assert_401_shape(dialect, response)
    assert response.headers["x-should-retry"] == "false"
    assert metrics(tq_a).total_jobs == before


def test_sdks_report_a_bad_key(server: Server) -> None:
    tq = together.Together(api_key="iq-not-a-key", base_url=server.url)
    with tq, pytest.raises(together.AuthenticationError) as t_error:
        tq.beta.jig.queue.metrics(model=MODEL)
    assert t_error.value.status_code == 401
    assert set(t_error.value.body) == TOGETHER_ERROR_KEYS

    oai = openai.OpenAI(api_key="iq-not-a-key", base_url=server.url + "/v1")
    with oai, pytest.raises(openai.AuthenticationError) as o_error:
        oai.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=4)
    assert o_error.value.status_code == 401
    assert o_error.value.code == "invalid_api_key"


async def test_infera_sdk_reports_a_bad_key(server: Server) -> None:
    async with aiohttp.ClientSession() as session:
        answer = await InferaSDK("iq-not-a-key", base_url=server.url).submit_job(
            session, MODEL, HELLO, 4, 0.0
        )
    assert isinstance(answer, str) and answer.startswith("Error: 401"), answer
    assert "detail" in answer


def test_a_revoked_key_stops_working(server: Server) -> None:
    key = server.create_key("soon-revoked", "revoked")
    with raw(server, key) as http:
        assert http.get(f"/v1/queue/metrics?model={MODEL}").status_code == 200
        server.cli("keys", "revoke", "soon-revoked")
        # keys are cached for up to key_cache_seconds (2 s by default)
        refused = wait_until(
            lambda: (r := http.get(f"/v1/queue/metrics?model={MODEL}")).status_code == 401 and r,
            timeout=5,
            interval=0.2,
            what="the revoked key to be refused",
        )
        assert_401_shape("together", refused)
        assert "revoked" in refused.json()["message"]
