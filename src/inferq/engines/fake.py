"""A deterministic engine for tests and queue benchmarks.

It answers ``"echo: <last user message>"``, one whitespace-separated word per
"token", cut at ``max_tokens``; ``token_delay`` (seconds, option) paces the words
so cancellation and streaming can be observed. Prompt tokens are the words of all
messages. The same request always gives the same result.

``execution_log`` (option, a file path) appends the last user message of every
generation that ran to the end, one line each, so tests spanning processes can
count how often each job really executed.
"""

from __future__ import annotations

import asyncio
import os

from inferq.core.errors import EngineError, PromptTooLong
from inferq.core.models import ChatRequest, ChatResult, Usage
from inferq.engines.base import ABORTED, AbortSignal, Engine, ModelSpec, TextCallback

#: a message with this exact content makes the fake engine fail (for tests)
FAIL_TRIGGER = "__inferq_fail__"


class FakeEngine(Engine):
    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        self.token_delay = float(spec.options.get("token_delay", 0.0))
        log = spec.options.get("execution_log")
        self.execution_log = str(log) if log else None
        self._ready = False
        #: how many generations started (tests count re-runs)
        self.calls = 0

    async def start(self) -> None:
        self._ready = True

    async def close(self) -> None:
        self._ready = False

    @property
    def ready(self) -> bool:
        return self._ready

    async def generate(
        self,
        request: ChatRequest,
        *,
        abort: AbortSignal,
        on_text: TextCallback | None = None,
    ) -> ChatResult:
        self.calls += 1
        prompt_tokens = sum(len(m.content.split()) + 1 for m in request.messages)
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
            if abort.is_set():
                finish = ABORTED
                break
            if i >= limit:
                finish = "length"
                break
            piece = word if i == 0 else " " + word
            out.append(piece)
            if on_text is not None:
                on_text(piece)
            if self.token_delay:
                await asyncio.sleep(self.token_delay)
        if self.execution_log and finish != ABORTED:
            _append_line(self.execution_log, last_user)
        return ChatResult(
            text="".join(out),
            finish_reason=finish,
            usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=len(out)),
        )


def _append_line(path: str, text: str) -> None:
    """One write with O_APPEND: lines from many processes never interleave."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (text.replace("\n", " ") + "\n").encode("utf-8"))
    finally:
        os.close(fd)
