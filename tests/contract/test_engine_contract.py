"""One contract, every Engine adapter: the fake and the embedded llama.cpp model."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator

import pytest

from inferq.core.errors import EngineError, InvalidRequest, PromptTooLong
from inferq.core.models import ChatMessage, ChatRequest, EmbedRequest
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


# -- embedding models ---------------------------------------------------------------


@pytest.fixture(params=["fake", "llamacpp"])
async def embedder(request: pytest.FixtureRequest) -> AsyncIterator[Engine]:
    options: dict[str, object] = {"embedding": True}
    options |= {"token_delay": 0.01} if request.param == "fake" else {"threads": 2}
    spec = ModelSpec(
        name="e", engine=request.param, context_length=CONTEXT, slots=1, options=options
    )
    the_engine = build_engine(spec)
    await the_engine.start()
    assert the_engine.ready and the_engine.embeds
    yield the_engine
    await the_engine.close()


TEXTS = ("The cat sat on the mat.", "Stock markets fell sharply today.", "The cat sat on the mat.")


def cosine(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


async def test_embeds_each_input_as_a_unit_vector(embedder: Engine) -> None:
    result = await embedder.embed(EmbedRequest(TEXTS), abort=AbortSignal())
    assert len(result.vectors) == len(TEXTS)
    size = embedder.dimensions
    assert size is not None and size > 1
    for vector in result.vectors:
        assert len(vector) == size
        assert all(isinstance(x, float) and math.isfinite(x) for x in vector)
        assert math.sqrt(sum(x * x for x in vector)) == pytest.approx(1.0, abs=1e-6)
    assert result.usage.prompt_tokens >= len(TEXTS)
    assert result.usage.completion_tokens == 0


async def test_same_text_same_vector_different_texts_differ(embedder: Engine) -> None:
    first = await embedder.embed(EmbedRequest(TEXTS), abort=AbortSignal())
    again = await embedder.embed(EmbedRequest(TEXTS), abort=AbortSignal())
    assert first == again
    alone = await embedder.embed(EmbedRequest(TEXTS[:1]), abort=AbortSignal())
    assert cosine(alone.vectors[0], first.vectors[0]) == pytest.approx(1.0, abs=1e-5)
    assert cosine(first.vectors[0], first.vectors[2]) == pytest.approx(1.0, abs=1e-5)
    assert cosine(first.vectors[0], first.vectors[1]) < 0.999


async def test_prompt_tokens_are_counted_per_input(embedder: Engine) -> None:
    one = await embedder.embed(EmbedRequest(TEXTS[:1]), abort=AbortSignal())
    two = await embedder.embed(EmbedRequest(TEXTS[1:2]), abort=AbortSignal())
    both = await embedder.embed(EmbedRequest(TEXTS[:2]), abort=AbortSignal())
    assert one.usage.prompt_tokens > 0
    assert both.usage.prompt_tokens == one.usage.prompt_tokens + two.usage.prompt_tokens


async def test_input_that_cannot_fit_is_refused(embedder: Engine) -> None:
    request = EmbedRequest(("short", "word " * (CONTEXT * 2)))
    with pytest.raises(PromptTooLong) as info:
        await embedder.embed(request, abort=AbortSignal())
    assert info.value.param == "input.1"


async def test_abort_stops_between_inputs(embedder: Engine) -> None:
    assert (await embedder.embed(EmbedRequest(TEXTS), abort=_set())).vectors == ()
    abort = AbortSignal()
    texts = tuple(f"Sentence number {i} is about the sea and its ships." for i in range(400))
    asyncio.get_running_loop().call_later(0.05, abort.set)
    result = await embedder.embed(EmbedRequest(texts), abort=abort)
    assert len(result.vectors) < len(texts)


async def test_empty_input_is_refused(embedder: Engine) -> None:
    with pytest.raises(EngineError, match="input 1 is empty"):
        await embedder.embed(EmbedRequest(("hi", "")), abort=AbortSignal())


async def test_embedding_model_refuses_chat_and_the_reverse(embedder: Engine) -> None:
    with pytest.raises(InvalidRequest, match="serves embeddings, not chat") as info:
        embedder.check(chat("hi"))
    assert info.value.param == "model"
    with pytest.raises(InvalidRequest, match="serves embeddings, not chat"):
        await embedder.generate(chat("hi"), abort=AbortSignal())
    embedder.check(EmbedRequest(("hi",)))
    chat_model = build_engine(ModelSpec(name="c", engine=embedder.spec.engine))
    with pytest.raises(InvalidRequest, match="serves chat, not embeddings") as info:
        chat_model.check(EmbedRequest(("hi",)))
    assert info.value.param == "model"
    with pytest.raises(InvalidRequest):
        await chat_model.embed(EmbedRequest(("hi",)), abort=AbortSignal())
    assert not chat_model.embeds and chat_model.dimensions is None


def _set() -> AbortSignal:
    abort = AbortSignal()
    abort.set()
    return abort
