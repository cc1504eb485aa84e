"""Together's queue API through the official ``together`` SDK (``client.beta.jig.queue``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import together

from tests.integration.helpers import (
    MODEL,
    cancel_quietly,
    chat_payload,
    drain,
    metrics,
    new_key,
    start_blocker,
    status,
    submit,
    wait_status,
    wait_until,
)
from tests.support.server import Server

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _idle(tq: together.Together) -> Iterator[None]:
    """Each test leaves its tenant with nothing queued or running."""
    yield
    drain(tq)


def test_submitted_job_runs_to_done_with_a_chat_completion(tq: together.Together) -> None:
    payload = chat_payload("Tell me about the sea.", max_tokens=24)
    info = {"user_id": "user_123", "trace": {"span": 7}}
    request_id = submit(tq, payload, info=info, priority=5)

    seen = [status(tq, request_id).status]
    done = wait_until(
        lambda: (s := status(tq, request_id), seen.append(s.status))[0].status == "done" and s,
        timeout=30,
        interval=0.02,
        what="the job to finish",
    )

    # pending -> running -> done, never backwards, nothing else
    order = {"pending": 0, "running": 1, "done": 2}
    assert set(seen) <= set(order), seen
    assert seen[0] in ("pending", "running"), seen
    assert [order[s] for s in seen] == sorted(order[s] for s in seen), seen

    assert done.request_id == request_id
    assert done.model == MODEL
    assert done.inputs == payload
    outputs = done.outputs
    assert outputs["object"] == "chat.completion"
    assert outputs["model"] == MODEL
    choice = outputs["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str) and choice["message"]["content"].strip()
    assert choice["finish_reason"] in ("stop", "length")
    usage = outputs["usage"]
    assert usage["prompt_tokens"] > 0
    assert 0 < usage["completion_tokens"] <= 24
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]

    # info keeps what the client sent, plus the server's progress
    assert done.info["user_id"] == "user_123"
    assert done.info["trace"] == {"span": 7}
    assert done.info["progress"] == 1
    assert done.priority == 5
    assert done.retries == 0
    assert done.created_at is not None and done.claimed_at is not None
    assert done.done_at is not None
    assert done.created_at <= done.claimed_at <= done.done_at


def test_metrics_count_the_tenants_jobs_and_clear_cancels_pending_ones(server: Server) -> None:
    with together.Together(api_key=new_key(server, "metrics"), base_url=server.url) as client:
        empty = metrics(client)
        assert (empty.messages_running, empty.messages_waiting, empty.total_jobs) == (0, 0, 0)

        blocker = start_blocker(client)
        try:
            pending = [submit(client, chat_payload(max_tokens=4)) for _ in range(3)]
            counts = metrics(client)
            # the test server runs the model with one slot: async jobs run one at a time
            assert counts.messages_running == 1
            assert counts.messages_waiting == 3
            assert counts.total_jobs == 4

            cleared = client.beta.jig.queue.clear(model=MODEL)
            assert cleared.canceled_count == 3
            for request_id in pending:
                job = status(client, request_id)
                assert job.status == "canceled"
                assert job.claimed_at is None and job.outputs is None
            # clear leaves the running job alone
            assert status(client, blocker).status == "running"
            after = metrics(client)
            assert (after.messages_running, after.messages_waiting, after.total_jobs) == (1, 0, 4)
            assert client.beta.jig.queue.clear(model=MODEL).canceled_count == 0
        finally:
            cancel_quietly(client, blocker)
        wait_until(lambda: metrics(client).messages_running == 0, what="the blocker to stop")


def test_cancel_of_a_pending_job_cancels_it(tq: together.Together) -> None:
    blocker = start_blocker(tq)
    try:
        request_id = submit(tq, chat_payload(max_tokens=4), info={"k": "v"})
        assert status(tq, request_id).status == "pending"

        assert tq.beta.jig.queue.cancel(model=MODEL, request_id=request_id).status == "canceled"
        job = status(tq, request_id)
        assert job.status == "canceled"
        assert job.claimed_at is None
        assert job.outputs is None
        assert job.info == {"k": "v"}
    finally:
        cancel_quietly(tq, blocker)
    # once the slot is free, the canceled job is still not run
    later = submit(tq, chat_payload(max_tokens=4))
    wait_status(tq, later, {"done"})
    assert status(tq, request_id).status == "canceled"


def test_cancel_of_a_finished_job_is_a_conflict_after_one_request(
    server: Server, api_key: str
) -> None:
    sent: list[str] = []
    http = together.DefaultHttpxClient(
        event_hooks={"request": [lambda request: sent.append(request.url.path)]}
    )
    with together.Together(api_key=api_key, base_url=server.url, http_client=http) as client:
        request_id = submit(client, chat_payload(max_tokens=4))
        wait_status(client, request_id, {"done"})
        sent.clear()

        with pytest.raises(together.ConflictError) as raised:
            client.beta.jig.queue.cancel(model=MODEL, request_id=request_id)

        error = raised.value
        assert error.status_code == 409
        assert sent == ["/v1/queue/cancel"]  # the SDK did not retry
        assert error.response.headers["x-should-retry"] == "false"
        assert error.body["status"] == "done"
        assert error.body["param"] == "request_id"
        assert error.body["type"] == "conflict_error"
        assert isinstance(error.body["message"], str) and error.body["message"]
        assert status(client, request_id).status == "done"

        # a canceled job cannot be canceled again either
        pending = submit(client, chat_payload(max_tokens=4))
        cancel_quietly(client, pending)
        final = wait_status(client, pending, {"canceled", "done"}).status
        with pytest.raises(together.ConflictError) as again:
            client.beta.jig.queue.cancel(model=MODEL, request_id=pending)
        assert again.value.body["status"] == final


def test_status_of_an_unknown_job_is_not_found(tq: together.Together) -> None:
    with pytest.raises(together.NotFoundError) as raised:
        status(tq, "0b7c6a2e-5d34-4c36-9f0e-2f1f7d3c9a11")
    body = raised.value.body
    assert set(body) == {"code", "message", "param", "type"}
    assert body["type"] == "not_found_error"
    assert body["param"] == "request_id"


def test_status_names_the_job_only_under_its_own_model(tq: together.Together) -> None:
    request_id = submit(tq, chat_payload(max_tokens=4))
    with pytest.raises(together.NotFoundError):
        tq.beta.jig.queue.retrieve(model="some-other-model", request_id=request_id)
    assert status(tq, request_id).request_id == request_id
