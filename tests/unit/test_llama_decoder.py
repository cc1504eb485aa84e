"""The llama.cpp decode loop's order of evaluations, with the real model.

The loop is driven directly (no server, no queue): sequences go into its inbox,
and a wrapper around its ``_evaluate`` records every llama_decode it makes.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from inferq.core.work import ChatMessage, ChatRequest, ChatResult
from inferq.engines.base import ABORTED, ModelSpec
from inferq.engines.llama_batch import BatchDecoder
from inferq.engines.llama_sequence import Sampling, SequenceJob
from inferq.engines.llamacpp import LlamaCppEngine

URGENT = 100


@pytest.fixture(scope="module")
def engine() -> Iterator[Any]:
    spec = ModelSpec(
        name="m", engine="llamacpp", context_length=512, slots=2, options={"threads": 1}
    )
    the_engine = LlamaCppEngine(spec)
    asyncio.run(the_engine.start())
    yield the_engine
    asyncio.run(the_engine.close())


class Sequence:
    """A job for the decode loop and a way to wait for its outcome."""

    def __init__(self, engine: Any, text: str, max_new: int, priority: int = 0) -> None:
        request = ChatRequest(messages=(ChatMessage("user", text),), max_tokens=max_new)
        self.pieces: list[str] = []
        self.outcome: ChatResult | BaseException | None = None
        self.ended = threading.Event()
        self.job = SequenceJob(
            prompt=engine._chat.prompt_tokens(request),
            max_new=max_new,
            sampling=Sampling(),
            priority=priority,
            emit=self.pieces.append,
            done=self._done,
        )

    def _done(self, outcome: ChatResult | BaseException) -> None:
        self.outcome = outcome
        self.ended.set()

    def result(self) -> ChatResult:
        assert self.ended.wait(60), "the sequence did not end"
        assert isinstance(self.outcome, ChatResult)
        return self.outcome


def alone(decoder: BatchDecoder, engine: Any, text: str, max_new: int) -> str:
    seq = Sequence(engine, text, max_new)
    decoder.submit(seq.job)
    return seq.result().text


def test_an_urgent_sequence_arriving_during_a_prompt_chunk_is_evaluated_next(
    engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoder: BatchDecoder = engine._chat.decoder
    long_prompt = "Tell me about rivers, lakes and seas, and the animals living there. " * 4
    a = Sequence(engine, "Write a very long story about the sea.", 300)
    b = Sequence(engine, long_prompt, 6)
    c = Sequence(engine, "Name a colour.", 6, priority=URGENT)
    evals: list[tuple[str, ...]] = []
    names = {id(a.job): "a", id(b.job): "b", id(c.job): "c"}
    evaluate = decoder._evaluate

    def recording(parts: list[tuple[Any, list[int]]], *, logits: bool) -> bool:
        tags = tuple(f"{names[id(run.job)]}{'*' if len(t) > 1 else ''}" for run, t in parts)
        evals.append(tags)
        if tags == ("b*",) and not a.job.abort.is_set():
            # every slot is busy (a generating, b reading its prompt): a is stopped to
            # make room, as the worker preempts, and c arrives while b's chunk runs
            a.job.abort.set("preempted")
            decoder.submit(c.job)
        return evaluate(parts, logits=logits)

    monkeypatch.setattr(decoder, "_evaluate", recording)
    decoder.submit(a.job)
    while len(a.pieces) < 3:
        assert not a.ended.wait(0.01)
    decoder.submit(b.job)

    c_text, b_text = c.result().text, b.result().text
    assert a.result().finish_reason == ABORTED
    chunk = evals.index(("b*",))
    # c's prompt, then its first token on its own, before anyone else's next token
    assert evals[chunk + 1 : chunk + 3] == [("c*",), ("c",)]
    monkeypatch.undo()
    # and the order changed no text
    assert c_text == alone(decoder, engine, "Name a colour.", 6)
    assert b_text == alone(decoder, engine, long_prompt, 6)
