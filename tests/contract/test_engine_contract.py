"""One contract, every Engine adapter: the fake and the embedded llama.cpp model."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from inferq.core.errors import InvalidRequest, PromptTooLong
from inferq.core.models import ChatMessage, ChatRequest
from inferq.engines.base import ABORTED, AbortSignal, Engine, ModelSpec
from inferq.engines.registry import build_engine

CONTEXT = 256


@pytest.fixture(params=["fake", "llamacpp"])
async def engine(request: pytest.FixtureRequest) -> AsyncIterator[Engine]:
    options = {"token_delay": 0.01} if request.param == "fake" else {"threads": 2}
    spec = ModelSpec(
        name="m", engine=request.param, context_length=CONTEXT, slots=1, options=options
    )
    the_engine = build_engine(spec)
    await the_engine.start()
    assert the_engine.ready
    yield the_engine
    await the_engine.close()


def chat(text: str, max_tokens: int | None = 12, **kw: object) -> ChatRequest:
    return ChatRequest(
        messages=(ChatMessage("system", "Be brief."), ChatMessage("user", text)),
        max_tokens=max_tokens,
        temperature=0.0,
        **kw,  # type: ignore[arg-type]
    )


async def test_generates_text_with_usage_and_streams_it(engine: Engine) -> None:
    pieces: list[str] = []
    result = await engine.generate(
        chat("Name three colours."), abort=AbortSignal(), on_text=pieces.append
    )
    assert result.text
    assert "".join(pieces) == result.text
    assert result.finish_reason in ("stop", "length")
    assert result.usage.prompt_tokens > 0
    assert 0 < result.usage.completion_tokens <= 12


async def test_max_tokens_caps_the_output(engine: Engine) -> None:
    result = await engine.generate(chat("Count from one to fifty.", 3), abort=AbortSignal())
    assert result.finish_reason == "length"
    assert result.usage.completion_tokens <= 3


async def test_temperature_zero_is_deterministic(engine: Engine) -> None:
    first = await engine.generate(chat("Say something about cats."), abort=AbortSignal())
    second = await engine.generate(chat("Say something about cats."), abort=AbortSignal())
    assert first.text == second.text


async def test_abort_stops_within_a_few_tokens(engine: Engine) -> None:
    abort = AbortSignal()
    seen: list[str] = []

    def on_text(piece: str) -> None:
        seen.append(piece)
        if len(seen) == 2:
            abort.set()

    request = chat("Write a very long story about the sea. " * 3, max_tokens=200)
    result = await engine.generate(request, abort=abort, on_text=on_text)
    await asyncio.sleep(0)
    assert result.finish_reason == ABORTED
    assert len(seen) < 10


async def test_prompt_that_cannot_fit_is_refused(engine: Engine) -> None:
    with pytest.raises(PromptTooLong):
        await engine.generate(chat("word " * (CONTEXT * 2), max_tokens=8), abort=AbortSignal())


def test_max_tokens_beyond_the_context_is_rejected_up_front(engine: Engine) -> None:
    with pytest.raises(InvalidRequest) as info:
        engine.check(chat("hi", max_tokens=CONTEXT))
    assert info.value.param == "max_tokens"
    engine.check(chat("hi", max_tokens=CONTEXT - 1))
