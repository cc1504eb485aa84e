"""Request and token limits per key, through the providers' SDKs against a real server
(the fake engine answers, so only the limits take time): 429 in each dialect's shape with
Retry-After and OpenAI's x-ratelimit-* headers, other keys untouched, the SDKs' retries
honouring Retry-After; and one key's limit held across two API processes on PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import together

from tests.acceptance.cluster import Cluster, fresh_schema
from tests.support.server import Server, fake_models_file

pytestmark = pytest.mark.integration

MESSAGES = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("limits")
    srv = Server(root / "data", models_file=fake_models_file(root / "models.toml")).start()
    try:
        yield srv
    finally:
        srv.stop()


def key(server: Server, name: str, *limits: str) -> str:
    return server.cli("keys", "create", "--name", name, *limits).strip().splitlines()[-1]


def openai_client(server: Server, secret: str, retries: int = 0) -> openai.OpenAI:
    return openai.OpenAI(api_key=secret, base_url=f"{server.url}/v1", max_retries=retries)


def test_openai_sdk_gets_rate_limit_error_after_five(server: Server) -> None:
    limited = openai_client(server, key(server, "five", "--rpm", "5", "--tpm", "100000"))
    for left in range(4, -1, -1):
        raw = limited.chat.completions.with_raw_response.create(
            model="fake", messages=MESSAGES, max_tokens=4
        )
        assert raw.headers["x-ratelimit-limit-requests"] == "5"
        assert raw.headers["x-ratelimit-remaining-requests"] == str(left)
        assert raw.headers["x-ratelimit-reset-requests"].endswith("s")
        assert raw.headers["x-ratelimit-limit-tokens"] == "100000"
        assert int(raw.headers["x-ratelimit-remaining-tokens"]) < 100000
        assert raw.parse().choices[0].message.content
    with pytest.raises(openai.RateLimitError) as refused:
        limited.chat.completions.create(model="fake", messages=MESSAGES, max_tokens=4)
    response = refused.value.response
    assert response.status_code == 429
    assert 1 <= int(response.headers["retry-after"]) <= 12
    assert response.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.value.code == "rate_limit_exceeded"
    assert "requests per minute" in refused.value.message
    # another key of the server is not touched, and carries no limit headers
    free = openai_client(server, key(server, "free"))
    raw = free.chat.completions.with_raw_response.create(
        model="fake", messages=MESSAGES, max_tokens=4
    )
    assert "x-ratelimit-limit-requests" not in raw.headers


def test_a_token_limit_refuses_what_would_overdraw_it(server: Server) -> None:
    limited = openai_client(server, key(server, "tokens", "--tpm", "300"))
    limited.chat.completions.create(model="fake", messages=MESSAGES, max_tokens=250)
    with pytest.raises(openai.RateLimitError) as refused:
        limited.chat.completions.create(model="fake", messages=MESSAGES, max_tokens=250)
    assert "tokens per minute" in refused.value.message
    assert refused.value.response.headers["x-ratelimit-limit-tokens"] == "300"


def test_together_shape_and_key_limit_changed_live(server: Server) -> None:
    secret = key(server, "tq", "--rpm", "5")
    with together.Together(api_key=secret, base_url=server.url, max_retries=0) as tq:
        for _ in range(5):
            tq.beta.jig.queue.submit(model="fake", payload={"messages": MESSAGES})
        with pytest.raises(together.RateLimitError) as refused:
            tq.beta.jig.queue.submit(model="fake", payload={"messages": MESSAGES})
    body = refused.value.response.json()
    error = body.get("error", body)  # Together's queue errors are flat, others nested
    assert error["code"] == "rate_limit_exceeded" and "retry in" in error["message"]
    assert refused.value.response.headers["retry-after"]
    # raised by the operator: the next request passes (the key cache lasts seconds)
    server.cli("keys", "limit", "tq", "--rpm", "0")
    time.sleep(2.5)
    answer = httpx.get(
        f"{server.url}/v1/models", headers={"Authorization": f"Bearer {secret}"}, timeout=10
    )
    assert answer.status_code == 200 and "x-ratelimit-limit-requests" not in answer.headers


def test_the_sdks_retry_after_retry_after(server: Server) -> None:
    secret = key(server, "retry", "--rpm", "30")  # one request back every 2 s
    client = openai_client(server, secret, retries=2)
    for _ in range(30):
        client.models.list()
    started = time.monotonic()
    client.models.list()  # a 429 first, then the SDK waits Retry-After and succeeds
    assert 1.0 <= time.monotonic() - started < 10
    # Together's SDK does the same
    secret = key(server, "retry-tq", "--rpm", "30")
    body = {"model": "fake", "payload": {"messages": MESSAGES}}
    with together.Together(api_key=secret, base_url=server.url, max_retries=2) as tq:
        for _ in range(30):
            tq.beta.jig.queue.submit(**body)
        started = time.monotonic()
        assert tq.beta.jig.queue.submit(**body).request_id
        assert 1.0 <= time.monotonic() - started < 10


async def test_one_limit_across_two_api_processes_on_postgres(tmp_path: Path) -> None:
    async with fresh_schema() as schema:
        cluster = Cluster(tmp_path, schema, lease_seconds=10)
        try:
            cluster.cli("db", "upgrade")
            secret = cluster.cli("keys", "create", "--name", "fleet", "--rpm", "5")
            secret = secret.strip().splitlines()[-1]
            apis = [cluster.spawn_api(), cluster.spawn_api()]
            await cluster.wait_ready(apis)
            headers = {"Authorization": f"Bearer {secret}"}
            async with httpx.AsyncClient(headers=headers, timeout=10) as client:
                codes = [
                    (await client.get(f"{apis[i % 2].url}/v1/models")).status_code for i in range(6)
                ]
                refused = await client.get(f"{apis[1].url}/v1/models")
            assert codes == [200] * 5 + [429]
            assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        finally:
            cluster.close()


def test_queue_bounds_and_launch_spacing(tmp_path: Path) -> None:
    env = {"INFERQ_MAX_QUEUED_PER_TENANT": "20", "INFERQ_MAX_QUEUED": "30"}
    models = fake_models_file(tmp_path / "models.toml")
    # no worker: what is submitted stays queued
    srv = Server(tmp_path / "data", models_file=models, env=env, args=("--no-worker",))
    srv.start()
    try:
        first, second = key(srv, "first"), key(srv, "second")
        body = {"model": "fake", "payload": {"messages": MESSAGES}}
        with together.Together(api_key=first, base_url=srv.url, max_retries=0) as tq:
            for _ in range(20):
                tq.beta.jig.queue.submit(**body)
            with pytest.raises(together.RateLimitError) as refused:
                tq.beta.jig.queue.submit(**body)
        assert "20 jobs queued" in refused.value.response.text
        assert refused.value.response.headers["retry-after"] == "2"
        # another tenant still submits, up to the server's bound (30 in all): then 503
        headers = {"Authorization": f"Bearer {second}"}
        codes = [
            httpx.post(f"{srv.url}/v1/queue/submit", json=body, headers=headers, timeout=10)
            for _ in range(11)
        ]
        assert [c.status_code for c in codes] == [200] * 10 + [503]
        assert codes[-1].headers["retry-after"] == "2"
        error = codes[-1].json()
        assert error.get("error", error)["code"] == "overloaded"  # Together's flat shape
        # Unstructured: workflow jobs launched less than 1 s apart get 429
        launch = {
            "data": {"request_data": '{"template_id": "fast_partition"}'},
            "files": [("input_files", ("a.txt", b"Ada went to Paris.", "text/plain"))],
            "headers": {"unstructured-api-key": first},
            "timeout": 10,
        }
        answers = [httpx.post(f"{srv.url}/api/v1/jobs/", **launch) for _ in range(2)]  # type: ignore[arg-type]
        assert [a.status_code for a in answers] == [200, 429], answers[1].text
        assert "1 s apart" in answers[1].json()["detail"]
        time.sleep(1.1)
        assert httpx.post(f"{srv.url}/api/v1/jobs/", **launch).status_code == 200  # type: ignore[arg-type]
    finally:
        srv.stop()
