"""One chat request on the decode loop: its sequences, and the result they make.

A request becomes ``n`` sequences of the same prompt (the prefix cache evaluates
it once for all but the first that start together), each with its own grammar
state when the answer is constrained and its own seed (the request's plus the
choice's index) when it samples. Only the first streams. Each answer is then
split into text and a tool call (:func:`~inferq.core.tool_text.split_answer`);
an answer that is a call finishes with ``tool_calls``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from inferq.core.tool_text import split_answer
from inferq.core.work import ChatRequest, ChatResult, Usage
from inferq.engines.base import Call
from inferq.engines.llama_batch import BatchDecoder
from inferq.engines.llama_sequence import Sampling, SequenceJob
from inferq.engines.llama_structured import Constraint, grammar_for

#: the finish reason of an answer that is a function call
TOOL_CALLS = "tool_calls"


@dataclass(frozen=True, slots=True)
class _Outcome:
    """What the decode thread hands back to the waiting coroutine."""

    value: ChatResult | BaseException


async def run_request(
    decoder: BatchDecoder,
    request: ChatRequest,
    prompt: list[int],
    *,
    max_new: int,
    sampling: Sampling,
    call: Call,
) -> ChatResult:
    """Run ``request`` (its ``prompt`` tokenized) on ``decoder``; the whole result."""
    grammar = await asyncio.to_thread(grammar_for, request)
    constraints: list[Constraint | None] = [None] * request.n
    if grammar is not None:
        tokenizer = decoder.grammar_tokenizer
        constraints = await asyncio.to_thread(
            lambda: [Constraint(tokenizer, grammar) for _ in range(request.n)]
        )
    loop = asyncio.get_running_loop()
    futures: list[asyncio.Future[_Outcome]] = []
    jobs: list[SequenceJob] = []
    on_text = call.on_text

    def emit(piece: str) -> None:
        if on_text is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed
                loop.call_soon_threadsafe(on_text, piece)

    for index, constraint in enumerate(constraints):
        future: asyncio.Future[_Outcome] = loop.create_future()
        futures.append(future)
        seed = sampling.seed if sampling.seed is None or not index else sampling.seed + index
        jobs.append(
            SequenceJob(
                prompt=prompt,
                max_new=max_new,
                sampling=dataclasses.replace(sampling, seed=seed),
                stop=request.stop,
                priority=call.priority or 0,
                abort=call.abort,
                emit=emit if index == 0 else _ignore,
                done=_settler(loop, future),
                constraint=constraint,
                top_logprobs=request.top_logprobs if request.logprobs else None,
            )
        )
    for job in jobs:
        decoder.submit(job)
    try:
        outcomes = [(await future).value for future in futures]
    except asyncio.CancelledError:
        for job in jobs:
            job.cancelled.set()
        raise
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    answers = [_answer(request, o) for o in outcomes if isinstance(o, ChatResult)]
    return _combine(answers)


def _ignore(piece: str) -> None:
    """The text of a choice past the first: not streamed."""


def _settler(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future[_Outcome]
) -> Callable[[ChatResult | BaseException], None]:
    def done(outcome: ChatResult | BaseException) -> None:
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_settle, future, _Outcome(outcome))

    return done


def _settle(future: asyncio.Future[_Outcome], outcome: _Outcome) -> None:
    if not future.done():
        future.set_result(outcome)


def _answer(request: ChatRequest, result: ChatResult) -> ChatResult:
    """``result`` with its text split into text and a tool call."""
    if result.finish_reason != "stop":
        return result
    text, tool_call = split_answer(result.text, request.tools, request.tool_choice)
    if tool_call is None:
        return result
    return dataclasses.replace(result, text=text, tool_calls=(tool_call,), finish_reason=TOOL_CALLS)


def _combine(answers: list[ChatResult]) -> ChatResult:
    """The first answer with the others beside it; usage counts the prompt once and
    every answer's tokens."""
    first, others = answers[0], tuple(answers[1:])
    if not others:
        return first
    usage = Usage(
        prompt_tokens=first.usage.prompt_tokens,
        completion_tokens=sum(a.usage.completion_tokens for a in answers),
        cached_tokens=first.usage.cached_tokens,
    )
    return dataclasses.replace(first, usage=usage, others=others)
