"""Anthropic's Messages API through the official ``anthropic`` SDK, on the real model."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import pytest
import together

from tests.integration.helpers import MODEL, drain
from tests.support.server import Server

pytestmark = pytest.mark.integration

#: sampling settings go in extra_body: anthropic 2.x has no arguments for them any more
GREEDY = {"temperature": 0}
HELLO: list[anthropic.types.MessageParam] = [{"role": "user", "content": "Tell me about the moon."}]


@pytest.fixture
def claude(server: Server, api_key: str) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(api_key=api_key, base_url=server.url, max_retries=0) as client:
        yield client


@pytest.fixture(autouse=True)
def _idle(tq: together.Together) -> Iterator[None]:
    yield
    drain(tq)


def _text(message: anthropic.types.Message) -> str:
    assert [block.type for block in message.content] == ["text"]
    block = message.content[0]
    assert isinstance(block, anthropic.types.TextBlock)
    return block.text


def test_a_message(claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(model=MODEL, max_tokens=12, messages=HELLO)
    assert message.type == "message" and message.role == "assistant"
    assert message.id.startswith("msg_")
    assert message.model == MODEL
    assert _text(message).strip()
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert message.stop_sequence is None
    assert message.usage.input_tokens > 0
    assert 0 < message.usage.output_tokens <= 12


def test_the_stream_relays_the_greedy_text_in_order(claude: anthropic.Anthropic) -> None:
    plain = claude.messages.create(model=MODEL, max_tokens=16, messages=HELLO, extra_body=GREEDY)
    with claude.messages.stream(
        model=MODEL, max_tokens=16, messages=HELLO, extra_body=GREEDY
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    names = [event.type for event in events]
    # the SDK adds its own "text" event after each content_block_delta
    wire = [name for name in names if name != "text"]
    deltas = wire.count("content_block_delta")
    assert deltas > 1, "the text came in one piece, not streamed"
    assert wire == [
        "message_start",
        "content_block_start",
        *["content_block_delta"] * deltas,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert _text(final) == _text(plain)
    assert final.stop_reason == plain.stop_reason
    assert final.usage.output_tokens == plain.usage.output_tokens


def test_a_system_prompt_changes_the_answer(claude: anthropic.Anthropic) -> None:
    question: list[anthropic.types.MessageParam] = [
        {"role": "user", "content": "What is your name?"}
    ]
    without = claude.messages.create(
        model=MODEL, max_tokens=12, messages=question, extra_body=GREEDY
    )
    pirate = claude.messages.create(
        model=MODEL,
        max_tokens=12,
        messages=question,
        extra_body=GREEDY,
        system=[{"type": "text", "text": "You are a pirate called Captain Flint."}],
    )
    assert pirate.usage.input_tokens > without.usage.input_tokens
    assert _text(pirate) != _text(without)


def test_a_stop_sequence_ends_the_text(claude: anthropic.Anthropic) -> None:
    full = _text(
        claude.messages.create(model=MODEL, max_tokens=16, messages=HELLO, extra_body=GREEDY)
    )
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    message = claude.messages.create(
        model=MODEL, max_tokens=16, messages=HELLO, extra_body=GREEDY, stop_sequences=["zzz", stop]
    )
    assert message.stop_reason == "stop_sequence"
    assert message.stop_sequence == stop
    assert _text(message) == full[: full.index(stop)]


def test_bad_input_is_a_400_in_anthropics_shape(claude: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as missing:
        claude.post(
            "/v1/messages",
            body={"model": MODEL, "messages": HELLO},
            cast_to=anthropic.types.Message,
        )
    assert missing.value.status_code == 400
    assert missing.value.body == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"},
    }
    tool_use: list[anthropic.types.MessageParam] = [
        {
            "role": "user",
            "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}],
        }
    ]
    with pytest.raises(anthropic.BadRequestError, match="'tool_use' are not supported"):
        claude.messages.create(model=MODEL, max_tokens=4, messages=tool_use)


def test_a_bad_key_is_a_401(server: Server) -> None:
    with (
        anthropic.Anthropic(api_key="wrong", base_url=server.url, max_retries=0) as client,
        pytest.raises(anthropic.AuthenticationError) as raised,
    ):
        client.messages.create(model=MODEL, max_tokens=4, messages=HELLO)
    assert raised.value.status_code == 401
    assert isinstance(raised.value.body, dict)
    assert raised.value.body["error"]["type"] == "authentication_error"
