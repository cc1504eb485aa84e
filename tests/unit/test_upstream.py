"""The openai_upstream engine against scripted upstreams (``httpx.MockTransport``):
configuration, streaming and usage, priority mapping, retries and backoff, error
mapping, endpoint choice, health checks and abort. tests/integration/test_upstream.py
runs it against real servers."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import random
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

from inferq.api.errors import status_of
from inferq.core.errors import (
    ConfigError,
    EngineError,
    EngineUnavailable,
    InvalidRequest,
    PromptTooLong,
)
from inferq.core.states import ServiceClass
from inferq.core.work import ChatMessage, ChatRequest, EmbedRequest
from inferq.engines.base import ABORTED, AbortSignal, ModelSpec, urgency
from inferq.engines.registry import ModelRegistry, load_specs
from inferq.engines.upstream import UpstreamEngine
from inferq.engines.upstream_config import parse_settings
from inferq.engines.upstream_wire import backoff_delay, priority_field

Reply = Callable[[httpx.Request], httpx.Response]

# -- a scripted upstream ------------------------------------------------------------------


class Events(httpx.AsyncByteStream):
    """A server-sent event stream; ``stall_after`` events, it waits forever."""

    def __init__(self, events: list[Any], *, stall_after: int | None = None) -> None:
        self.events = events
        self.stall_after = stall_after
        self.closed = asyncio.Event()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for i, event in enumerate(self.events):
            if i == self.stall_after:
                await asyncio.sleep(3600)
            if isinstance(event, str) and event.startswith(":"):
                yield f"{event}\n\n".encode()  # a comment, as servers send pings
                continue
            data = event if isinstance(event, str) else json.dumps(event)
            yield f"data: {data}\n\n".encode()
        if self.stall_after == len(self.events):
            await asyncio.sleep(3600)

    async def aclose(self) -> None:
        self.closed.set()


def delta(text: str) -> dict[str, Any]:
    return {
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"content": text}}],
    }


def finish(reason: str = "stop") -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": {}, "finish_reason": reason}]}


def usage(prompt: int, completion: int, cached: int | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion}
    if cached is not None:
        data["prompt_tokens_details"] = {"cached_tokens": cached}
    return {"choices": [], "usage": data}


def streamed(*events: Any, stall_after: int | None = None) -> Reply:
    def reply(request: httpx.Request) -> httpx.Response:
        stream = Events(list(events), stall_after=stall_after)
        Upstream.streams.append(stream)
        return httpx.Response(200, stream=stream, headers={"content-type": "text/event-stream"})

    return reply


def answer(text: str = "hi there") -> Reply:
    return streamed(
        delta(text.split()[0]), delta(" " + " ".join(text.split()[1:])), finish(), "[DONE]"
    )


def error(status: int, message: str, *, code: str | None = None, **headers: str) -> Reply:
    body = {"error": {"message": message, "type": "invalid_request_error", "code": code}}
    return lambda request: httpx.Response(status, json=body, headers=headers)


def refused(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


class Upstream:
    """Per host, the replies to POSTs in order (the last one repeats) and the status
    of GET /models."""

    #: every event stream served, in order (reset by each new Upstream)
    streams: ClassVar[list[Events]] = []

    def __init__(self, **replies: list[Reply]) -> None:
        self.replies = replies
        self.requests: list[httpx.Request] = []
        self.health: dict[str, int | None] = {}
        Upstream.streams = []

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if request.method == "GET":
            status = self.health.get(host, 200)
            if status is None:
                raise httpx.ConnectError("connection refused", request=request)
            return httpx.Response(status, json={"object": "list", "data": []})
        self.requests.append(request)
        queue = self.replies[host]
        return (queue.pop(0) if len(queue) > 1 else queue[0])(request)

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.requests]

    def hosts(self) -> list[str]:
        return [r.url.host for r in self.requests]


def endpoint(host: str, **extra: Any) -> dict[str, Any]:
    return {"base_url": f"http://{host}:8000/v1", **extra}


def engine_for(upstream: Upstream, *endpoints: dict[str, Any], **options: Any) -> UpstreamEngine:
    options = {
        "endpoints": list(endpoints),
        "backoff": 0.001,
        "max_backoff": 0.01,
        "health_interval": 60,
        **options,
    }
    spec = ModelSpec(name="m", engine="openai_upstream", context_length=256, options=options)
    return UpstreamEngine(spec, transport=upstream.transport(), rng=random.Random(7))


@contextlib.asynccontextmanager
async def running(engine: UpstreamEngine) -> AsyncIterator[UpstreamEngine]:
    await engine.start()
    try:
        yield engine
    finally:
        await engine.close()


def chat(text: str = "Say hi.", **kw: Any) -> ChatRequest:
    return ChatRequest(messages=(ChatMessage("user", text),), **kw)


# -- configuration ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "needs at least one endpoint"),
        ({"endpoints": []}, "needs at least one endpoint"),
        ({"endpoints": [{"model": "x"}]}, "base_url must be an http"),
        ({"endpoints": [{"base_url": "gpu1:8000"}]}, "base_url must be an http"),
        ({"endpoints": [{"base_url": "http:///v1"}]}, "names no host"),
        ({"endpoints": [endpoint("a", api_key="sk-1")]}, "keep the key out of the models file"),
        ({"endpoints": [endpoint("a", max_concurency=2)]}, "unknown key 'max_concurency'"),
        ({"endpoints": [endpoint("a", max_concurrency=0)]}, "max_concurrency must be an integer"),
        ({"endpoints": [endpoint("a", max_concurrency=True)]}, "max_concurrency must be"),
        ({"endpoints": [endpoint("a", priority="lowest")]}, "priority is one of"),
        ({"endpoints": [endpoint("a", api_key_env="")]}, "api_key_env must name"),
        ({"endpoints": [endpoint("a")], "retries": 3}, "unknown option 'retries'"),
        ({"endpoints": [endpoint("a")], "max_attempts": 0}, "max_attempts must be an integer"),
        ({"endpoints": [endpoint("a")], "backoff": "1s"}, "backoff must be a number of seconds"),
    ],
)
def test_bad_settings_are_named(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse_settings("qwen", options)
    assert "qwen" in info.value.message


def test_models_file_slots_are_the_sum_of_the_endpoints(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text(
        '[models."qwen-7b"]\nengine = "openai_upstream"\ncontext_length = 8192\n'
        '[[models."qwen-7b".endpoints]]\nbase_url = "http://gpu1:8000/v1"\n'
        'api_key_env = "GPU1_KEY"\nmodel = "Qwen/Qwen2.5-7B-Instruct"\nmax_concurrency = 16\n'
        'priority = "vllm"\n'
        '[[models."qwen-7b".endpoints]]\nbase_url = "http://gpu2:8000/v1"\nmax_concurrency = 8\n'
    )
    spec = load_specs(path)["qwen-7b"]
    assert spec.slots == 24
    engine = ModelRegistry({"qwen-7b": spec}).get("qwen-7b")
    assert isinstance(engine, UpstreamEngine)
    assert engine.slots == 24 and not engine.ready
    first, second = engine.settings.endpoints
    assert (first.model, first.priority, first.api_key_env) == (
        "Qwen/Qwen2.5-7B-Instruct",
        "vllm",
        "GPU1_KEY",
    )
    assert (second.model, second.priority, second.api_key_env) == ("qwen-7b", "none", None)


def test_models_file_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text('[models.q]\nengine = "openai_upstream"\nslots = 4\n')
    with pytest.raises(ConfigError, match="set max_concurrency on each endpoint"):
        load_specs(path)
    path.write_text('[models.q]\nengine = "openai_upstream"\n')
    with pytest.raises(ConfigError, match=rf"{path}: model 'q'.*at least one endpoint"):
        load_specs(path)


async def test_api_key_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    upstream = Upstream(a=[answer()])
    engine = engine_for(upstream, endpoint("a", api_key_env="UPSTREAM_TEST_KEY"))
    monkeypatch.delenv("UPSTREAM_TEST_KEY", raising=False)
    with pytest.raises(ConfigError, match="UPSTREAM_TEST_KEY, which is not set"):
        await engine.start()
    monkeypatch.setenv("UPSTREAM_TEST_KEY", "sk-test")
    async with running(engine):
        await engine.generate(chat(), abort=AbortSignal())
    assert upstream.requests[0].headers["authorization"] == "Bearer sk-test"


# -- chat -----------------------------------------------------------------------------------


async def test_streams_deltas_with_the_upstream_usage_and_finish_reason() -> None:
    upstream = Upstream(
        a=[streamed(delta("Hello"), delta(","), delta(" world"), finish("length"), usage(12, 3, 5))]
    )
    pieces: list[str] = []
    async with running(engine_for(upstream, endpoint("a", model="up/name"))) as engine:
        result = await engine.generate(
            chat(max_tokens=3, temperature=0.2, top_p=0.9, top_k=5, seed=1, stop=("\n",)),
            abort=AbortSignal(),
            on_text=pieces.append,
        )
    assert pieces == ["Hello", ",", " world"]
    assert (result.text, result.finish_reason) == ("Hello, world", "length")
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (12, 3)
    assert result.usage.cached_tokens == 5
    body = upstream.bodies()[0]
    assert body == {
        "model": "up/name",
        "messages": [{"role": "user", "content": "Say hi."}],
        "max_tokens": 3,
        "temperature": 0.2,
        "top_p": 0.9,
        "top_k": 5,
        "seed": 1,
        "stop": ["\n"],
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert upstream.requests[0].url == "http://a:8000/v1/chat/completions"


def test_max_tokens_beyond_the_context_is_rejected_before_queueing() -> None:
    engine = engine_for(Upstream(), endpoint("a"))
    with pytest.raises(InvalidRequest) as info:
        engine.check(chat(max_tokens=256))
    assert info.value.param == "max_tokens"
    engine.check(chat(max_tokens=255))
    with pytest.raises(InvalidRequest, match="serves chat, not embeddings"):
        engine.check(EmbedRequest(("x",)))


async def test_without_a_usage_chunk_the_content_chunks_are_counted() -> None:
    upstream = Upstream(a=[streamed(": ping", delta("a"), delta("b"), finish(), "[DONE]")])
    async with running(engine_for(upstream, endpoint("a"))) as engine:
        result = await engine.generate(chat(), abort=AbortSignal())
    assert result.text == "ab"
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (0, 2)


@pytest.mark.parametrize(
    ("convention", "sent"),
    [("vllm", -(2 * 1_000_000 + 5)), ("sglang", 2 * 1_000_000 + 5), ("none", None)],
)
async def test_priority_is_forwarded_in_the_endpoints_convention(
    convention: str, sent: int | None
) -> None:
    upstream = Upstream(a=[answer()])
    async with running(engine_for(upstream, endpoint("a", priority=convention))) as engine:
        await engine.generate(
            chat(), abort=AbortSignal(), priority=urgency(ServiceClass.INTERACTIVE, 5)
        )
        await engine.generate(chat(), abort=AbortSignal())
    first, second = upstream.bodies()
    assert first.get("priority") == sent
    assert "priority" not in second


def test_urgency_orders_class_first_then_priority() -> None:
    ranks = [
        urgency(ServiceClass.INTERACTIVE, -(10**9)),
        urgency(ServiceClass.ASYNC, 10**9),
        urgency(ServiceClass.ASYNC, 1),
        urgency(ServiceClass.ASYNC, 0),
        urgency(ServiceClass.BATCH, 10**9),
        urgency(ServiceClass.BATCH, 0),
    ]
    assert ranks == sorted(ranks, reverse=True) and len(set(ranks)) == len(ranks)
    # vLLM runs lower values first, SGLang higher ones: the same order either way
    vllm = [priority_field("vllm", r) for r in ranks]
    sglang = [priority_field("sglang", r) for r in ranks]
    assert vllm == sorted(vllm) and sglang == sorted(sglang, reverse=True)  # type: ignore[type-var]
    assert priority_field("none", 5) is None and priority_field("vllm", None) is None


# -- retries and errors ---------------------------------------------------------------------


async def test_5xx_and_429_are_retried_then_succeed() -> None:
    upstream = Upstream(
        a=[error(503, "overloaded"), error(429, "slow down", code="rate_limit"), answer("ok then")]
    )
    async with running(engine_for(upstream, endpoint("a"))) as engine:
        result = await engine.generate(chat(), abort=AbortSignal())
    assert result.text == "ok then"
    assert len(upstream.requests) == 3


async def test_retry_after_is_honoured() -> None:
    upstream = Upstream(a=[error(429, "slow down", **{"retry-after": "0.3"}), answer()])
    async with running(engine_for(upstream, endpoint("a"))) as engine:
        started = time.monotonic()
        await engine.generate(chat(), abort=AbortSignal())
    assert time.monotonic() - started >= 0.3


def test_backoff_is_exponential_with_full_jitter() -> None:
    rng = random.Random(1)
    for attempt in range(1, 8):
        ceiling = min(4.0, 0.5 * 2 ** (attempt - 1))
        delays = [backoff_delay(attempt, base=0.5, cap=4.0, rng=rng) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > 0.8 * ceiling and min(delays) < 0.2 * ceiling
    assert backoff_delay(1, base=0.5, cap=4.0, retry_after=7.0) == 7.0
    assert backoff_delay(1, base=0.5, cap=4.0, retry_after=900.0, max_retry_after=60) == 60


async def test_exhausted_retries_are_retryable_for_the_runner() -> None:
    upstream = Upstream(a=[error(502, "bad gateway")])
    async with running(engine_for(upstream, endpoint("a"), max_attempts=3)) as engine:
        with pytest.raises(EngineUnavailable, match=r"failed 3 attempts.*502: bad gateway") as info:
            await engine.generate(chat(), abort=AbortSignal())
    assert info.value.retryable
    assert len(upstream.requests) == 3


@pytest.mark.parametrize(
    "message",
    [
        "This model's maximum context length is 2048 tokens. However, you requested 4000 tokens",
        "Requested tokens (3000) exceed context window of 2048",
        "the request exceeds the available context size, try increasing it",
        "The input (3000 tokens) is longer than the model's context length (2048 tokens).",
    ],
)
async def test_context_length_errors_become_prompt_too_long(message: str) -> None:
    upstream = Upstream(a=[error(400, message)])
    async with running(engine_for(upstream, endpoint("a"))) as engine:
        with pytest.raises(PromptTooLong, match="context") as info:
            await engine.generate(chat(), abort=AbortSignal())
    assert status_of(info.value) == 400 and not info.value.retryable  # the API answers 400
    assert len(upstream.requests) == 1


async def test_other_4xx_fail_with_the_upstream_message_and_no_retry() -> None:
    upstream = Upstream(a=[error(422, "top_k: must be positive")])
    async with running(engine_for(upstream, endpoint("a"))) as engine:
        with pytest.raises(EngineError, match="refused the request \\(422\\): top_k") as info:
            await engine.generate(chat(), abort=AbortSignal())
    assert not info.value.retryable and not isinstance(info.value, PromptTooLong)
    assert len(upstream.requests) == 1


async def test_an_error_event_inside_the_stream_is_mapped() -> None:
    event = {"error": {"message": "the model crashed", "type": "server_error", "code": "x"}}
    upstream = Upstream(a=[streamed(event), answer("second try")])
    async with running(engine_for(upstream, endpoint("a"))) as engine:
        assert (await engine.generate(chat(), abort=AbortSignal())).text == "second try"
        upstream.replies["a"] = [streamed(delta("half"), event)]
        with pytest.raises(EngineUnavailable, match="crashed") as info:
            await engine.generate(chat(), abort=AbortSignal())
    assert info.value.retryable


async def test_a_stream_broken_before_any_event_is_asked_again_without_streaming() -> None:
    def broken(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("peer closed connection", request=request)

    too_long = error(400, "Requested tokens (900) exceed context window of 256")
    upstream = Upstream(a=[broken, too_long])
    async with running(engine_for(upstream, endpoint("a"))) as engine:
        with pytest.raises(PromptTooLong):
            await engine.generate(chat(), abort=AbortSignal())
    first, second = upstream.bodies()
    assert first["stream"] is True and "stream" not in second


async def test_a_stream_ending_without_finish_reason_is_not_a_result() -> None:
    upstream = Upstream(a=[streamed(delta("cut"), "[DONE]")])
    async with running(engine_for(upstream, endpoint("a"))) as engine:
        with pytest.raises(EngineUnavailable, match="without a finish_reason") as info:
            await engine.generate(chat(), abort=AbortSignal())
    assert info.value.retryable and len(upstream.requests) == 1


# -- endpoints and health ------------------------------------------------------------------


async def test_a_refused_connection_takes_the_endpoint_out_and_another_answers() -> None:
    upstream = Upstream(a=[refused], b=[answer("from b")])
    engine = engine_for(upstream, endpoint("a", max_concurrency=4), endpoint("b"))
    async with running(engine):
        result = await engine.generate(chat(), abort=AbortSignal())
        assert result.text == "from b"
        assert upstream.hosts() == ["a", "b"]
        assert [e["healthy"] for e in engine.endpoints] == [False, True]
        await engine.generate(chat(), abort=AbortSignal())
        assert upstream.hosts() == ["a", "b", "b"]
        assert engine.ready


async def test_health_checks_take_an_endpoint_out_and_put_it_back() -> None:
    upstream = Upstream(a=[answer()], b=[answer()])
    engine = engine_for(
        upstream, endpoint("a"), endpoint("b"), health_interval=0.02, unhealthy_after=2
    )
    async with running(engine):
        assert engine.ready
        upstream.health["a"] = 503
        await wait_for(lambda: not engine.endpoints[0]["healthy"])
        assert "503" in engine.endpoints[0]["last_error"]
        upstream.health["a"] = 200
        await wait_for(lambda: engine.endpoints[0]["healthy"])


async def test_with_no_healthy_endpoint_it_waits_then_fails_retryably() -> None:
    upstream = Upstream(a=[answer()])
    upstream.health["a"] = None
    engine = engine_for(upstream, endpoint("a"), wait_for_endpoint=0.1, health_interval=0.02)
    async with running(engine):
        assert engine.ready  # the queue still takes jobs
        assert engine.endpoints[0]["healthy"] is False
        with pytest.raises(EngineUnavailable, match="no upstream server of m is reachable"):
            await engine.generate(chat(), abort=AbortSignal())
        # it comes back while a request waits: the request goes through
        engine.settings = dataclasses.replace(engine.settings, wait_for_endpoint=5)
        waiting = asyncio.create_task(engine.generate(chat(), abort=AbortSignal()))
        await asyncio.sleep(0.05)
        upstream.health["a"] = 200
        assert (await asyncio.wait_for(waiting, 5)).text == "hi there"


async def test_requests_go_where_most_capacity_is_free_and_wait_when_all_are_full() -> None:
    upstream = Upstream(
        a=[streamed(delta("x"), stall_after=1)], b=[streamed(delta("y"), stall_after=1)]
    )
    engine = engine_for(upstream, endpoint("a", max_concurrency=2), endpoint("b"))
    assert engine.slots == 3
    async with running(engine):
        aborts = [AbortSignal() for _ in range(4)]
        tasks = [asyncio.create_task(engine.generate(chat(), abort=a)) for a in aborts]
        await wait_for(lambda: len(upstream.requests) == 3)
        await asyncio.sleep(0.05)
        assert sorted(upstream.hosts()) == ["a", "a", "b"]
        assert [e["in_flight"] for e in engine.endpoints] == [2, 1]
        aborts[0].set()
        await wait_for(lambda: len(upstream.requests) == 4)
        for abort in aborts:
            abort.set()
        results = await asyncio.gather(*tasks)
    assert {r.finish_reason for r in results} == {ABORTED}


# -- abort ------------------------------------------------------------------------------------


async def test_abort_closes_the_upstream_stream_while_no_token_arrives() -> None:
    upstream = Upstream(a=[streamed(delta("first"), stall_after=1)])
    abort = AbortSignal()
    pieces: list[str] = []
    async with running(engine_for(upstream, endpoint("a"))) as engine:
        task = asyncio.create_task(engine.generate(chat(), abort=abort, on_text=pieces.append))
        await wait_for(lambda: pieces == ["first"])
        threading.Thread(target=abort.set).start()  # from another thread, like any caller
        # the upstream sends nothing for an hour: only the abort can end this
        result = await asyncio.wait_for(task, 2)
        await asyncio.wait_for(Upstream.streams[0].closed.wait(), 1)
    assert (result.text, result.finish_reason) == ("first", ABORTED)
    assert result.usage.completion_tokens == 1
    assert engine.endpoints == []


async def test_abort_during_backoff_returns_at_once() -> None:
    upstream = Upstream(a=[error(503, "busy", **{"retry-after": "30"})])
    abort = AbortSignal()
    async with running(engine_for(upstream, endpoint("a"))) as engine:
        task = asyncio.create_task(engine.generate(chat(), abort=abort))
        await wait_for(lambda: len(upstream.requests) == 1)
        abort.set()
        result = await asyncio.wait_for(task, 1)
    assert result.finish_reason == ABORTED and result.text == ""


async def test_abort_signal_wait() -> None:
    abort = AbortSignal()
    assert not await abort.wait(0.01)
    waiter = asyncio.create_task(abort.wait(5))
    await asyncio.sleep(0.01)
    threading.Thread(target=abort.set, args=("stop",)).start()
    assert await asyncio.wait_for(waiter, 1)
    assert await abort.wait(0) and abort.reason == "stop"


# -- embeddings -----------------------------------------------------------------------------


def embeddings(*vectors: list[float], prompt_tokens: int = 7) -> Reply:
    data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
    data.reverse()  # the index, not the order, says which input a vector belongs to
    body = {"object": "list", "data": data, "usage": {"prompt_tokens": prompt_tokens}}
    return lambda request: httpx.Response(200, json=body)


async def test_embeddings_are_normalised_in_input_order_with_usage() -> None:
    upstream = Upstream(a=[embeddings([3.0, 4.0], [0.0, 2.0])])
    engine = engine_for(upstream, endpoint("a", model="up-embed"), embedding=True)
    assert engine.embeds and engine.dimensions is None
    async with running(engine):
        result = await engine.embed(EmbedRequest(("one", "two")), abort=AbortSignal())
    assert result.vectors == ((0.6, 0.8), (0.0, 1.0))
    assert result.usage.prompt_tokens == 7 and engine.dimensions == 2
    body = upstream.bodies()[0]
    assert body == {"model": "up-embed", "input": ["one", "two"], "encoding_format": "float"}
    assert upstream.requests[0].url == "http://a:8000/v1/embeddings"


async def test_embedding_errors_are_mapped() -> None:
    upstream = Upstream(
        a=[error(500, "oops"), error(400, "input is too long for the context length")]
    )
    async with running(engine_for(upstream, endpoint("a"), embedding=True)) as engine:
        with pytest.raises(PromptTooLong) as info:
            await engine.embed(EmbedRequest(("x",)), abort=AbortSignal())
        assert info.value.param == "input"
        with pytest.raises(InvalidRequest, match="serves embeddings, not chat"):
            await engine.generate(chat(), abort=AbortSignal())
    assert len(upstream.requests) == 2


async def wait_for(probe: Callable[[], object], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {probe}")
        await asyncio.sleep(0.01)
