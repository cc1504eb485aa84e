"""On a one-slot server, where each job runs alone: strict priority order, and a
cancelled or timed-out generation giving the slot back at once."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
import together

from tests.integration.helpers import (
    ABORT_WITHIN,
    LONG_PROMPT,
    MODEL,
    ONE_SLOT_MODELS,
    cancel_quietly,
    chat_payload,
    drain,
    new_key,
    start_blocker,
    start_server,
    status,
    submit,
    wait_status,
    wait_until,
)
from tests.support.server import Server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def one_slot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("one-slot"), models=ONE_SLOT_MODELS)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def key(one_slot: Server) -> str:
    return new_key(one_slot, "order")


@pytest.fixture
def client(one_slot: Server, key: str) -> Iterator[together.Together]:
    with together.Together(api_key=key, base_url=one_slot.url) as tq:
        yield tq
        drain(tq)


def test_jobs_are_claimed_by_priority_then_in_submission_order(client: together.Together) -> None:
    blocker = start_blocker(client)
    plan = [("a", 0), ("b", 5), ("c", 1), ("d", 5), ("e", 0), ("f", 10), ("g", 1), ("h", -2)]
    try:
        ids = {
            name: submit(client, chat_payload(max_tokens=4), priority=priority, info={"name": name})
            for name, priority in plan
        }
        # all of them really queued up behind the blocker
        assert {status(client, i).status for i in ids.values()} == {"pending"}
    finally:
        client.beta.jig.queue.cancel(model=MODEL, request_id=blocker)

    done = {name: wait_status(client, i, {"done"}) for name, i in ids.items()}

    by_claim = sorted(done, key=lambda name: done[name].claimed_at)
    expected = [name for name, _ in sorted(plan, key=lambda entry: -entry[1])]  # stable: FIFO
    assert by_claim == expected == ["f", "b", "d", "c", "g", "a", "e", "h"]
    for name, priority in plan:
        assert done[name].priority == priority
        assert done[name].info["name"] == name
    # one slot: each job was claimed after the previous one finished
    for first, second in itertools.pairwise(by_claim):
        assert done[first].done_at <= done[second].claimed_at


def test_cancel_of_a_running_job_aborts_its_generation(client: together.Together) -> None:
    running = start_blocker(client)
    following = submit(client, chat_payload(max_tokens=4))
    try:
        time.sleep(0.5)  # let it generate for a while
        assert status(client, following).status == "pending"

        cancelled_at = time.time()
        answer = client.beta.jig.queue.cancel(model=MODEL, request_id=running)
        assert answer.status == "canceled"
        job = status(client, running)
        assert job.status == "canceled"

        # The only slot is free again at once: the generation stopped.
        started = wait_status(client, following, {"running", "done"})
        assert started.claimed_at.timestamp() - cancelled_at < ABORT_WITHIN
        wait_status(client, following, {"done"})
    finally:
        cancel_quietly(client, running)

    # the cancelled job never completes, even after its slot ran another job
    time.sleep(0.5)
    job = status(client, running)
    assert job.status == "canceled"
    assert job.outputs is None
    assert job.done_at is None
    assert job.info.get("progress", 0) < 1
    with pytest.raises(together.ConflictError) as raised:
        client.beta.jig.queue.cancel(model=MODEL, request_id=running)
    assert raised.value.body["status"] == "canceled"


def test_a_long_job_keeps_running_until_cancelled(client: together.Together) -> None:
    """Guard for the blocker the other tests rely on: it does not end by itself quickly."""
    blocker = start_blocker(client)
    try:
        time.sleep(1.5)
        job = status(client, blocker)
        assert job.status == "running"
        wait_until(
            lambda: status(client, blocker).info.get("progress", 0) > 0,
            what="progress to be reported",
        )
    finally:
        cancel_quietly(client, blocker)


def _openai_times_out(server: Server, key: str) -> int:
    oai = openai.OpenAI(api_key=key, base_url=server.url + "/v1", max_retries=0)
    with oai, pytest.raises(openai.APIStatusError) as raised:
        oai.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": LONG_PROMPT}],
            max_tokens=500,
            temperature=0,
            extra_body={"timeout": 0.05},
        )
    return raised.value.status_code


def _infera_times_out(server: Server, key: str) -> int:
    with httpx.Client(base_url=server.url, headers={"api_key": key}, timeout=30) as http:
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
    assert set(response.json()) == {"detail"}
    return response.status_code


@pytest.mark.parametrize(
    "times_out", [_openai_times_out, _infera_times_out], ids=["openai", "infera"]
)
def test_a_timed_out_sync_request_stops_generating(
    one_slot: Server, key: str, client: together.Together, times_out: Any
) -> None:
    assert times_out(one_slot, key) == 408
    timed_out_at = time.time()

    # The only slot is free again at once: the timed-out generation stopped.
    following = submit(client, chat_payload(max_tokens=4))
    done = wait_status(client, following, {"done"})
    assert done.claimed_at.timestamp() - timed_out_at < ABORT_WITHIN
