"""One contract, every Engine adapter: the fake and the embedded llama.cpp model."""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import AsyncIterator

import pytest

from inferq.core.errors import EngineError, InvalidRequest, PromptTooLong
from inferq.core.work import ChatMessage, ChatRequest, ChatResult, EmbedRequest
from inferq.engines.base import ABORTED, AbortSignal, Engine, ModelSpec
from inferq.engines.registry import build_engine

CONTEXT = 256


@pytest.fixture(params=["fake", "llamacpp"])
async def engine(request: pytest.FixtureRequest) -> AsyncIterator[Engine]:
    options = {"token_delay": 0.01} if request.param == "fake" else {"threads": 1}
    spec = ModelSpec(
        name="m", engine=request.param, context_length=CONTEXT, slots=1, options=options
    )
    the_engine = build_engine(spec)
    await the_engine.start()
    assert the_engine.ready
    yield the_engine
    await the_engine.close()


def chat(
    text: str,
    max_tokens: int | None = 12,
    *,
    system: str = "Be brief.",
    temperature: float = 0.0,
    **kw: object,
) -> ChatRequest:
    return ChatRequest(
        messages=(ChatMessage("system", system), ChatMessage("user", text)),
        max_tokens=max_tokens,
        temperature=temperature,
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


async def test_count_tokens_is_the_prompt_a_generation_reads(engine: Engine) -> None:
    request = chat("Name three colours.", 2)
    counted = await engine.count_tokens(request)
    result = await engine.generate(request, abort=AbortSignal())
    assert counted == result.usage.prompt_tokens > 0
    assert await engine.count_tokens(chat("Name three colours. " * 5)) > counted


async def test_count_tokens_without_loading_the_model() -> None:
    """A process that runs no worker never starts its engines; it can still count."""
    for name in ("fake", "llamacpp"):
        started = build_engine(ModelSpec(name="m", engine=name, options={"threads": 1}))
        idle = build_engine(ModelSpec(name="m", engine=name, options={"threads": 1}))
        await started.start()
        try:
            request = chat("How many tokens is this?")
            assert await idle.count_tokens(request) == await started.count_tokens(request)
            assert not idle.ready, "counting loaded the model"
        finally:
            await started.close()
            await idle.close()


def test_max_tokens_beyond_the_context_is_rejected_up_front(engine: Engine) -> None:
    with pytest.raises(InvalidRequest) as info:
        engine.check(chat("hi", max_tokens=CONTEXT))
    assert info.value.param == "max_tokens"
    engine.check(chat("hi", max_tokens=CONTEXT - 1))


# -- many sequences at once ----------------------------------------------------------

#: fewer slots than PROMPTS, so that some wait for a slot and join mid-way
BATCH_SLOTS = 4
PROMPTS = (
    ("Hi!", 16),
    ("What is the capital of France?", 20),
    ("Give me three tips for writing clear emails to a busy manager.", 24),
    ("Explain in one paragraph what a hash table is, and why looking a key up is fast.", 24),
    ("Write a haiku about autumn leaves.", 18),
    ("Why is the sky blue? Answer for a child of six, in two or three short sentences.", 22),
)


async def _batched(engine: str) -> AsyncIterator[Engine]:
    # one thread: llama.cpp's threads spin-wait on each other, so two threads on a busy
    # two-core machine make every step erratically slow
    options = {"token_delay": 0.01} if engine == "fake" else {"threads": 1}
    spec = ModelSpec(
        name="b", engine=engine, context_length=CONTEXT, slots=BATCH_SLOTS, options=options
    )
    the_engine = build_engine(spec)
    await the_engine.start()
    yield the_engine
    await the_engine.close()


@pytest.fixture(params=["fake", "llamacpp"])
async def batched(request: pytest.FixtureRequest) -> AsyncIterator[Engine]:
    async for the_engine in _batched(request.param):
        yield the_engine


@pytest.fixture
async def llama_batched() -> AsyncIterator[Engine]:
    """llama.cpp alone, for what the fake engine does not model (a waiting line: it
    runs every request at once; stop strings)."""
    async for the_engine in _batched("llamacpp"):
        yield the_engine


async def run(
    engine: Engine,
    request: ChatRequest,
    *,
    delay: float = 0.0,
    abort: AbortSignal | None = None,
    priority: int = 0,
) -> tuple[ChatResult, str]:
    """Generate after ``delay`` seconds; the result and its streamed pieces joined."""
    await asyncio.sleep(delay)
    pieces: list[str] = []
    result = await engine.generate(
        request, abort=abort or AbortSignal(), on_text=pieces.append, priority=priority
    )
    await asyncio.sleep(0)
    return result, "".join(pieces)


async def test_concurrent_generations_match_one_at_a_time(batched: Engine) -> None:
    requests = [chat(text, n) for text, n in PROMPTS]
    alone = [await run(batched, r) for r in requests]
    # staggered: later sequences join while earlier ones generate, two wait for a slot;
    # some more urgent than the others (they get their first token on their own)
    together = await asyncio.gather(
        *(run(batched, r, delay=0.02 * i, priority=10 * (i % 3)) for i, r in enumerate(requests))
    )
    for (one, one_streamed), (many, many_streamed), (_, limit) in zip(
        alone, together, PROMPTS, strict=True
    ):
        assert one.text and many.text == one.text
        assert one_streamed == one.text and many_streamed == many.text
        assert many.finish_reason == one.finish_reason
        assert many.usage.prompt_tokens == one.usage.prompt_tokens
        assert many.usage.completion_tokens == one.usage.completion_tokens <= limit


async def test_prefix_cache_reuses_a_shared_prefix_and_keeps_the_text(batched: Engine) -> None:
    system = "You are a careful assistant. Answer in plain words, and keep every answer short."
    first = chat("Name two rivers in Europe.", 16, system=system)
    other = chat("Name two mountains in Asia.", 16, system=system)
    cold, _ = await run(batched, first)
    warm_other, _ = await run(batched, other)
    again, streamed = await run(batched, first)
    assert again.text == cold.text and streamed == again.text
    assert again.usage.prompt_tokens == cold.usage.prompt_tokens
    if batched.spec.engine == "llamacpp":
        assert cold.usage.cached_tokens == 0
        # the system prompt at least, never the whole prompt: its last token is evaluated
        assert 0 < warm_other.usage.cached_tokens < warm_other.usage.prompt_tokens
        assert 0 < again.usage.cached_tokens < again.usage.prompt_tokens
        same, _ = await run(batched, first)
        assert same.text == cold.text
        assert same.usage.cached_tokens == same.usage.prompt_tokens - 1


async def test_cancelling_one_sequence_leaves_the_others_alone(batched: Engine) -> None:
    requests = [chat(text, n) for text, n in PROMPTS[:3]]
    alone = [(await run(batched, r))[0].text for r in requests]
    abort = AbortSignal()
    seen: list[str] = []

    def on_text(piece: str) -> None:
        seen.append(piece)
        if len(seen) == 2:
            abort.set()

    async def victim() -> ChatResult:
        long = chat("Write a very long story about the sea. " * 3, max_tokens=200)
        return await batched.generate(long, abort=abort, on_text=on_text)

    stopping = asyncio.create_task(victim())
    others = await asyncio.gather(*(run(batched, r) for r in requests))
    stopped = await stopping
    assert stopped.finish_reason == ABORTED
    assert len(seen) < 10
    assert [result.text for result, _ in others] == alone


async def test_an_abort_set_before_the_start_generates_nothing(batched: Engine) -> None:
    result = await batched.generate(chat("Write a long story.", 100), abort=_set())
    assert result.finish_reason == ABORTED
    assert result.usage.completion_tokens == 0


async def test_the_most_urgent_waiting_sequence_gets_the_next_slot(
    llama_batched: Engine,
) -> None:
    batched = llama_batched
    # every slot taken; they free one at a time
    longs = [chat("Write a very long story about the sea.", 40 + 8 * i) for i in range(BATCH_SLOTS)]
    busy = [asyncio.create_task(run(batched, long)) for long in longs]
    await asyncio.sleep(0.3)
    finished: list[str] = []

    async def waiting(name: str, priority: int) -> None:
        await batched.generate(chat("Hi!", 4), abort=AbortSignal(), priority=priority)
        finished.append(name)

    low = asyncio.create_task(waiting("low", 0))
    await asyncio.sleep(0.05)
    high = asyncio.create_task(waiting("high", 10))
    await asyncio.gather(low, high, *busy)
    assert finished == ["high", "low"]


async def test_a_cancelled_caller_frees_its_slot(batched: Engine) -> None:
    long = chat("Write a very long story about the sea.", max_tokens=200)
    tasks = [asyncio.create_task(run(batched, long)) for _ in range(BATCH_SLOTS)]
    await asyncio.sleep(0.2)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    result = await asyncio.wait_for(run(batched, chat("Hi!", 8)), 30)
    assert result[0].text


async def test_stop_strings_end_the_text_before_them(llama_batched: Engine) -> None:
    batched = llama_batched
    request = chat("Count from one to twenty, separated by commas.", 40)
    full, _ = await run(batched, request)
    # a stop string from the middle of the text, starting at its first occurrence
    stop = full.text[len(full.text) // 2 : len(full.text) // 2 + 3]
    cut = full.text.index(stop)
    cut_short, streamed = await run(batched, dataclasses.replace(request, stop=("zzz", stop)))
    assert cut_short.text == full.text[:cut]
    assert streamed == cut_short.text
    assert cut_short.finish_reason == "stop"
    assert cut_short.stop_sequence == stop
    assert full.stop_sequence is None
    assert cut_short.usage.completion_tokens < full.usage.completion_tokens


async def test_multibyte_characters_stream_whole(batched: Engine) -> None:
    request = chat("Write three words in Japanese, then three emoji.", 24)
    pieces: list[str] = []
    result = await batched.generate(request, abort=AbortSignal(), on_text=pieces.append)
    await asyncio.sleep(0)
    assert "".join(pieces) == result.text
    assert all("\ufffd" not in piece for piece in pieces)
    if batched.spec.engine == "llamacpp":
        assert any(ord(c) > 0x7F for c in result.text)  # SmolLM2 does write some


async def test_a_seed_repeats_a_sampled_generation(batched: Engine) -> None:
    request = chat("Tell me a short story about a fox.", 20, temperature=0.9, seed=1234)
    first, _ = await run(batched, request)
    # the same seed again, now among other sequences
    others = [chat(text, n) for text, n in PROMPTS[:2]]
    again, *_ = await asyncio.gather(run(batched, request), *(run(batched, r) for r in others))
    assert again[0].text == first.text
    if batched.spec.engine == "llamacpp":
        seeds = [dataclasses.replace(request, seed=seed) for seed in (1, 2, 3)]
        texts = {(await run(batched, r))[0].text for r in seeds} | {first.text}
        assert len(texts) > 1  # different seeds do sample differently


async def test_penalties_and_top_k_are_accepted(batched: Engine) -> None:
    request = chat(
        "List some fruits.",
        16,
        temperature=0.7,
        top_k=5,
        top_p=0.9,
        seed=3,
        presence_penalty=0.5,
        frequency_penalty=0.5,
    )
    first, _ = await run(batched, request)
    again, _ = await run(batched, request)
    assert first.text and first.text == again.text


async def test_a_prompt_that_fits_only_without_max_tokens_is_refused(batched: Engine) -> None:
    with pytest.raises(PromptTooLong):
        await batched.generate(
            chat("word " * (CONTEXT // 2), max_tokens=CONTEXT - 10), abort=_set()
        )
    result, _ = await run(batched, chat("Hi!", max_tokens=None))
    assert result.finish_reason in ("stop", "length")


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
    with pytest.raises(InvalidRequest, match="serves embeddings, not chat"):
        await embedder.count_tokens(chat("hi"))
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
