"""Anthropic's ``count_tokens`` and Message Batches through the official ``anthropic``
SDK, against a real server and SmolLM2.

Batches stay small (a few requests of a few tokens): the machine may have two cores.
tests/acceptance/test_anthropic_batch_crash.py kills the server in the middle of one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest
from anthropic.types.messages import MessageBatch, MessageBatchIndividualResponse

from tests.integration.helpers import LONG_PROMPT, MODEL, new_key, wait_until
from tests.support.server import Server

pytestmark = pytest.mark.integration


@pytest.fixture
def claude(server: Server, api_key: str) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(api_key=api_key, base_url=server.url, max_retries=0) as client:
        yield client


@pytest.fixture
def other(server: Server) -> Iterator[anthropic.Anthropic]:
    """A client of another tenant."""
    key = new_key(server, "mallory")
    with anthropic.Anthropic(api_key=key, base_url=server.url, max_retries=0) as client:
        yield client


def params(text: str, max_tokens: int = 6) -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": max_tokens,
        "temperature": 0,
        "messages": [{"role": "user", "content": text}],
    }


def wait_ended(claude: anthropic.Anthropic, batch_id: str) -> MessageBatch:
    def ended() -> MessageBatch | None:
        batch = claude.messages.batches.retrieve(batch_id)
        return batch if batch.processing_status == "ended" else None

    return wait_until(ended, interval=0.2, what=f"message batch {batch_id} to end")


def results(
    claude: anthropic.Anthropic, batch_id: str
) -> dict[str, MessageBatchIndividualResponse]:
    lines = list(claude.messages.batches.results(batch_id))
    seen = Counter(line.custom_id for line in lines)
    assert max(seen.values()) == 1, f"a request answered twice: {seen.most_common(2)}"
    return {line.custom_id: line for line in lines}


def test_count_tokens_is_what_the_model_reads(claude: anthropic.Anthropic) -> None:
    system = "You are a helpful assistant."
    question: list[anthropic.types.MessageParam] = [
        {"role": "user", "content": "What is the capital of France?"}
    ]
    counted = claude.messages.count_tokens(model=MODEL, system=system, messages=question)
    message = claude.messages.create(
        model=MODEL, max_tokens=2, system=system, messages=question, extra_body={"temperature": 0}
    )
    read = message.usage.input_tokens + (message.usage.cache_read_input_tokens or 0)
    assert counted.input_tokens == read > 10
    longer = claude.messages.count_tokens(
        model=MODEL, system=system, messages=[{"role": "user", "content": "Why? " * 10}]
    )
    assert longer.input_tokens > counted.input_tokens


def test_a_message_batch_through_to_its_results(claude: anthropic.Anthropic) -> None:
    texts = {"moon": "Tell me about the moon.", "sea": "Describe the sea.", "one": "Say one."}
    created = claude.messages.batches.create(
        requests=[{"custom_id": cid, "params": params(text)} for cid, text in texts.items()]
    )
    assert created.processing_status == "in_progress"
    assert created.request_counts.processing == 3
    ended = wait_ended(claude, created.id)
    assert ended.request_counts.succeeded == 3
    assert ended.request_counts.processing == ended.request_counts.errored == 0
    assert ended.results_url is not None and ended.results_url.endswith(
        f"/v1/messages/batches/{created.id}/results"
    )
    got = results(claude, created.id)
    assert set(got) == set(texts)
    for custom_id, text in texts.items():
        result = got[custom_id].result
        assert result.type == "succeeded"
        batched = result.message
        assert batched.model == MODEL and batched.id.startswith("msg_")
        # greedy decoding: the same answer as the same request sent alone
        alone = claude.messages.create(
            model=MODEL,
            max_tokens=6,
            messages=[{"role": "user", "content": text}],
            extra_body={"temperature": 0},  # anthropic 2.x has no argument for it
        )
        assert [b.model_dump() for b in batched.content] == [b.model_dump() for b in alone.content]
        assert batched.usage.output_tokens == alone.usage.output_tokens <= 6


def test_cancel_a_message_batch(claude: anthropic.Anthropic) -> None:
    created = claude.messages.batches.create(
        requests=[
            {"custom_id": f"long-{i}", "params": params(LONG_PROMPT, max_tokens=400)}
            for i in range(4)
        ]
    )
    cancelling = claude.messages.batches.cancel(created.id)
    assert cancelling.processing_status in ("canceling", "ended")
    assert cancelling.cancel_initiated_at is not None
    ended = wait_ended(claude, created.id)
    counts = ended.request_counts
    assert counts.canceled >= 3, counts  # one slot: at most one request ran to its end
    assert counts.canceled + counts.succeeded == 4
    got = results(claude, created.id)
    assert set(got) == {f"long-{i}" for i in range(4)}
    assert sum(r.result.type == "canceled" for r in got.values()) == counts.canceled
    deleted = claude.messages.batches.delete(created.id)
    assert deleted.type == "message_batch_deleted"


def test_list_pages_and_other_tenants(
    claude: anthropic.Anthropic, other: anthropic.Anthropic
) -> None:
    ids = [
        claude.messages.batches.create(
            requests=[{"custom_id": "a", "params": params("Hi.", max_tokens=1)}]
        ).id
        for _ in range(3)
    ]
    page = claude.messages.batches.list(limit=2)
    assert [b.id for b in page.data] == [ids[2], ids[1]]
    assert page.has_more and page.first_id == ids[2] and page.last_id == ids[1]
    listed = [b.id for b in claude.messages.batches.list(limit=1)]  # the SDK pages on
    assert listed[:3] == ids[::-1]
    assert [b.id for b in claude.messages.batches.list(before_id=ids[0], limit=1)] == [
        ids[1],
        ids[2],
    ]
    assert list(other.messages.batches.list()) == []
    for call in (
        lambda: other.messages.batches.retrieve(ids[0]),
        lambda: other.messages.batches.cancel(ids[0]),
        lambda: other.messages.batches.results(ids[0]),
        lambda: other.messages.batches.delete(ids[0]),
    ):
        with pytest.raises(anthropic.NotFoundError) as raised:
            call()
        assert raised.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    for batch_id in ids:
        wait_ended(claude, batch_id)


def test_bad_input_is_a_400_in_anthropics_shape(claude: anthropic.Anthropic) -> None:
    before = len(list(claude.messages.batches.list()))
    good = {"custom_id": "a", "params": params("Hi.")}
    missing = {
        "custom_id": "b",
        "params": {"model": MODEL, "messages": [{"role": "user", "content": "Hi."}]},
    }
    with pytest.raises(anthropic.BadRequestError) as raised:
        claude.messages.batches.create(requests=[good, missing])
    assert raised.value.body == {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "requests.1.params.max_tokens: Field required",
        },
    }
    with pytest.raises(anthropic.BadRequestError, match=r"requests\.1\.custom_id"):
        claude.messages.batches.create(requests=[good, good])
    with pytest.raises(anthropic.BadRequestError, match=r"requests\.0\.params\.model"):
        claude.messages.batches.create(
            requests=[{"custom_id": "a", "params": {**params("Hi."), "model": "nope"}}]
        )
    with pytest.raises(anthropic.BadRequestError, match="messages: List should have at least"):
        claude.messages.count_tokens(model=MODEL, messages=[])
    assert len(list(claude.messages.batches.list())) == before, "a refused batch was stored"
