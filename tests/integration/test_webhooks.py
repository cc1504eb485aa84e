"""Webhooks end to end: a real server, a real receiver process on loopback, the events
checked with the openai SDK's ``webhooks.unwrap`` (Standard Webhooks signatures), and
file and batch output expiry as OpenAI's SDK sets it."""

from __future__ import annotations

import io
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import together
from openai.types import Batch

from tests.integration.helpers import (
    MODEL,
    ONE_SLOT_MODELS,
    new_key,
    start_server,
    submit,
    wait_status,
    wait_until,
)
from tests.support.receiver import Receiver, unwrap
from tests.support.server import Server

pytestmark = pytest.mark.integration

ENV = {
    # the receiver runs on 127.0.0.1
    "INFERQ_WEBHOOK_ALLOW_PRIVATE": "true",
    # retries within a second, so a receiver failing twice is done in seconds
    "INFERQ_WEBHOOK_RETRY_SECONDS": "0.3",
}
PAYLOAD = {"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("webhooks"), models=ONE_SLOT_MODELS, env=ENV)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    rec = Receiver(tmp_path).start()
    try:
        yield rec
    finally:
        rec.stop()


def register(server: Server, tenant: str, url: str, *extra: str) -> tuple[str, str]:
    """``inferq webhooks create``: the endpoint's id and its secret (the last line)."""
    lines = server.cli("webhooks", "create", "--tenant", tenant, "--url", url, *extra)
    *_, endpoint_id, secret = lines.strip().splitlines()
    assert secret.startswith("whsec_") and endpoint_id.startswith("we_")
    return endpoint_id, secret


def run_queue_job(server: Server, tenant: str) -> str:
    with together.Together(api_key=new_key(server, tenant), base_url=server.url) as tq:
        request_id = submit(tq, PAYLOAD)
        wait_status(tq, request_id, {"done"})
    return request_id


def test_a_queue_job_and_a_batch_reach_the_receiver_signed(
    server: Server, receiver: Receiver
) -> None:
    tenant = "hooks-a"
    endpoint_id, secret = register(server, tenant, receiver.url)
    job_id = run_queue_job(server, tenant)
    key = new_key(server, tenant)
    with openai.OpenAI(api_key=key, base_url=server.url + "/v1") as oai:
        line = {"custom_id": "r1", "method": "POST", "url": "/v1/chat/completions",
                "body": {"model": MODEL, **PAYLOAD}}  # fmt: skip
        upload = oai.files.create(
            file=("in.jsonl", io.BytesIO(json.dumps(line).encode())),
            purpose="batch",
            expires_after={"anchor": "created_at", "seconds": 7200},
        )
        assert upload.expires_at == upload.created_at + 7200
        batch = oai.batches.create(
            input_file_id=upload.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            output_expires_after={"anchor": "created_at", "seconds": 3600},
        )

        def completed() -> Batch | None:
            found = oai.batches.retrieve(batch.id)
            return found if found.status == "completed" else None

        done = wait_until(completed, what="the batch to complete")
        assert done.output_file_id is not None
        output = oai.files.retrieve(done.output_file_id)
        assert output.expires_at == batch.created_at + 3600

    got = receiver.wait_for(2)
    events = {e.type: e for e in (unwrap(r, secret) for r in got)}
    assert set(events) == {"job.succeeded", "batch.completed"}
    assert events["job.succeeded"].data.id == job_id
    assert events["batch.completed"].data.id == batch.id
    for request, event in zip(got, (unwrap(r, secret) for r in got), strict=True):
        body = json.loads(request["body"])
        assert body["object"] == "event" and body["id"] == event.id
        assert isinstance(body["created_at"], int)
        assert request["headers"]["webhook-id"].startswith("wh_")
    with pytest.raises(openai.InvalidWebhookSignatureError):
        unwrap(got[0], "whsec_" + "A" * 44)  # another secret: refused

    history = server.cli("webhooks", "deliveries", endpoint_id)
    assert history.count("delivered") == 2, history
    admin = {"Authorization": f"Bearer {server.admin_key()}"}
    listed = httpx.get(f"{server.url}/admin/webhooks", params={"tenant": tenant}, headers=admin)
    assert listed.status_code == 200
    [shown] = listed.json()["data"]
    assert shown["id"] == endpoint_id and "secret" not in shown
    deliveries = httpx.get(f"{server.url}/admin/webhooks/{endpoint_id}/deliveries", headers=admin)
    assert {d["state"] for d in deliveries.json()["data"]} == {"delivered"}
    tenant_key = {"Authorization": f"Bearer {key}"}
    assert httpx.get(f"{server.url}/admin/webhooks", headers=tenant_key).status_code == 401


def test_a_receiver_failing_twice_gets_the_same_webhook_id_three_times(
    server: Server, tmp_path: Path
) -> None:
    flaky = Receiver(tmp_path, fail_first=2).start()
    try:
        endpoint_id, secret = register(server, "hooks-b", flaky.url, "--events", "job.succeeded")
        job_id = run_queue_job(server, "hooks-b")
        got = flaky.wait_for(3)
    finally:
        flaky.stop()
    assert [r["status"] for r in got] == [500, 500, 200]
    assert len({r["headers"]["webhook-id"] for r in got}) == 1
    assert len({r["body"] for r in got}) == 1  # the same event, byte for byte
    assert unwrap(got[2], secret).data.id == job_id

    def delivered() -> str | None:
        history = server.cli("webhooks", "deliveries", endpoint_id)
        return history if "delivered" in history else None

    history = wait_until(delivered, what="the delivery recorded")
    assert re.search(r"delivered\W+3\b", history), history


def test_the_admin_api_creates_and_deletes_endpoints(server: Server) -> None:
    admin = {"Authorization": f"Bearer {server.admin_key()}"}
    bad = httpx.post(
        f"{server.url}/admin/webhooks",
        json={"tenant": "hooks-c", "url": "ftp://example.com/x"},
        headers=admin,
    )
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "url"
    unknown = httpx.post(
        f"{server.url}/admin/webhooks",
        json={"tenant": "hooks-c", "url": "https://example.com/x", "events": ["job.exploded"]},
        headers=admin,
    )
    assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "events"
    made = httpx.post(
        f"{server.url}/admin/webhooks",
        json={"tenant": "hooks-c", "url": "https://example.com/x", "events": ["batch.failed"]},
        headers=admin,
    )
    assert made.status_code == 201 and made.json()["secret"].startswith("whsec_")
    endpoint_id = made.json()["id"]
    assert endpoint_id in server.cli("webhooks", "list", "--tenant", "hooks-c")
    gone = httpx.delete(f"{server.url}/admin/webhooks/{endpoint_id}", headers=admin)
    assert gone.status_code == 200 and gone.json()["deleted"] is True
    again = httpx.delete(f"{server.url}/admin/webhooks/{endpoint_id}", headers=admin)
    assert again.status_code == 404
    assert endpoint_id not in server.cli("webhooks", "list")


def test_a_file_past_its_expiry_is_a_404(server: Server) -> None:
    """Expiry is checked on every read (the sweep deletes later): with the shortest
    expiry OpenAI allows (an hour), this checks the file is there before it; the moved
    clock is in tests/unit/test_retention.py."""
    with openai.OpenAI(api_key=new_key(server, "hooks-d"), base_url=server.url + "/v1") as oai:
        upload = oai.files.create(
            file=("a.jsonl", io.BytesIO(b"{}\n")),
            purpose="batch",
            expires_after={"anchor": "created_at", "seconds": 3600},
        )
        assert oai.files.retrieve(upload.id).expires_at == upload.created_at + 3600
        with pytest.raises(openai.BadRequestError):
            oai.files.create(
                file=("a.jsonl", io.BytesIO(b"{}\n")),
                purpose="batch",
                expires_after={"anchor": "created_at", "seconds": 60},
            )
    assert time.time() < upload.created_at + 3600


def test_a_background_response_sends_response_completed(server: Server, receiver: Receiver) -> None:
    _, secret = register(server, "hooks-e", receiver.url)
    with openai.OpenAI(api_key=new_key(server, "hooks-e"), base_url=server.url + "/v1") as oai:
        sync = oai.responses.create(model=MODEL, input="Say hi.", max_output_tokens=16)
        queued = oai.responses.create(
            model=MODEL, input="Say hi.", max_output_tokens=16, background=True
        )
        [request] = receiver.wait_for(1)
        status = oai.responses.retrieve(queued.id).status
    event = unwrap(request, secret)
    # the event says what the response's status says (incomplete: it hit its token limit)
    assert status in ("completed", "incomplete")
    assert (event.type, event.data.id) == (f"response.{status}", queued.id)
    time.sleep(1.5)  # a sync response sends nothing: nothing more arrives
    assert len(receiver.requests()) == 1 and sync.status in ("completed", "incomplete")
