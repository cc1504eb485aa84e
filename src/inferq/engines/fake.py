"""A deterministic engine for tests and queue benchmarks.

A chat model answers ``"echo: <last user message>"``, one whitespace-separated word per
"token", cut at ``max_tokens``; ``token_delay`` (seconds, option) paces the words
so cancellation and streaming can be observed. Prompt tokens are the words of all
messages. The same request always gives the same result.

With the option ``embedding = true`` it is an embedding model instead: each
text's vector is derived from a hash of the text (``dimensions`` long, option,
default 8; L2-normalised), so the same text always gets the same vector and
different texts almost surely different ones. Each input's tokens are its words
(at least 1); ``token_delay`` paces the inputs.

``execution_log`` (option, a file path) appends the last user message of every
generation (or the inputs of every embedding) that ran to the end, one line each,
so tests spanning processes can count how often each job really executed.
"""

from __future__ import annotations

import asyncio
import hashlib
import os

from inferq.core.errors import ConfigError, EngineError, PromptTooLong
from inferq.core.work import ChatRequest, ChatResult, EmbedRequest, EmbedResult, Usage
from inferq.engines.base import (
    ABORTED,
    Call,
    Engine,
    ModelSpec,
    normalise,
)

#: a message (or embedding input) with this exact content makes the fake engine fail
FAIL_TRIGGER = "__inferq_fail__"
#: the length of the fake embedding vectors unless the option ``dimensions`` says otherwise
FAKE_DIMENSIONS = 8


class FakeEngine(Engine):
    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        self.token_delay = float(spec.options.get("token_delay", 0.0))
        log = spec.options.get("execution_log")
        self.execution_log = str(log) if log else None
        self._dimensions = int(spec.options.get("dimensions", FAKE_DIMENSIONS))
        if self._dimensions < 1:
            raise ConfigError(f"model {spec.name!r}: dimensions must be at least 1")
        self._ready = False
        #: how many generations (or embeddings) started (tests count re-runs)
        self.calls = 0

    async def start(self) -> None:
        self._ready = True

    async def close(self) -> None:
        self._ready = False

    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def dimensions(self) -> int | None:
        return self._dimensions if self._embeds else None

    async def count_tokens(self, request: ChatRequest) -> int:
        if self.embeds:
            raise self._wrong_kind()
        return _prompt_tokens(request)

    async def _generate(self, request: ChatRequest, call: Call) -> ChatResult:
        self.calls += 1
        prompt_tokens = _prompt_tokens(request)
        last_user = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
        if last_user == FAIL_TRIGGER:
            raise EngineError("the fake engine was asked to fail")
        limit = request.max_tokens or (self.spec.context_length - prompt_tokens)
        if prompt_tokens + (request.max_tokens or 1) > self.spec.context_length:
            raise PromptTooLong(
                f"the prompt has {prompt_tokens} tokens; with max_tokens it exceeds the "
                f"context length of {self.spec.name} ({self.spec.context_length})"
            )
        words = ["echo:", *last_user.split()]
        out: list[str] = []
        finish = "stop"
        for i, word in enumerate(words):
            if call.abort.is_set():
                finish = ABORTED
                break
            if i >= limit:
                finish = "length"
                break
            piece = word if i == 0 else " " + word
            out.append(piece)
            if call.on_text is not None:
                call.on_text(piece)
            if self.token_delay:
                await asyncio.sleep(self.token_delay)
        if self.execution_log and finish != ABORTED:
            _append_line(self.execution_log, last_user)
        return ChatResult(
            text="".join(out),
            finish_reason=finish,
            usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=len(out)),
        )

    async def _embed(self, request: EmbedRequest, call: Call) -> EmbedResult:
        self.calls += 1
        counts = [max(1, len(text.split())) for text in request.inputs]
        for i, (text, count) in enumerate(zip(request.inputs, counts, strict=True)):
            if text == FAIL_TRIGGER:
                raise EngineError("the fake engine was asked to fail")
            if not text:
                raise EngineError(f"input {i} is empty: there is nothing to embed")
            if count > self.spec.context_length:
                raise PromptTooLong(
                    f"input {i} has {count} tokens; it exceeds the context length of "
                    f"{self.spec.name} ({self.spec.context_length})",
                    param=f"input.{i}",
                )
        vectors: list[tuple[float, ...]] = []
        tokens = 0
        for text, count in zip(request.inputs, counts, strict=True):
            if call.abort.is_set():
                break
            vectors.append(fake_vector(text, self._dimensions))
            tokens += count
            if self.token_delay:
                await asyncio.sleep(self.token_delay)
        if self.execution_log and not call.abort.is_set():
            _append_line(self.execution_log, " ".join(request.inputs))
        return EmbedResult(vectors=tuple(vectors), usage=Usage(prompt_tokens=tokens))


def _prompt_tokens(request: ChatRequest) -> int:
    """The fake's prompt tokens: the words of every message, and one per message."""
    return sum(len(m.content.split()) + 1 for m in request.messages)


def fake_vector(text: str, dimensions: int) -> tuple[float, ...]:
    """A unit vector that depends only on ``text`` (bytes of SHA-256 hashes, centred)."""
    values: list[float] = []
    block = 0
    while len(values) < dimensions:
        digest = hashlib.sha256(f"{block}:{text}".encode()).digest()
        values.extend((b - 127.5) / 127.5 for b in digest)
        block += 1
    return normalise(values[:dimensions])


def _append_line(path: str, text: str) -> None:
    """One write with O_APPEND: lines from many processes never interleave."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (text.replace("\n", " ") + "\n").encode("utf-8"))
    finally:
        os.close(fd)
