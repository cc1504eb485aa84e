"""What a node sends as a job's result: read as the job's kind, every field of its type
(a result is stored as it is and read back by every dialect), a 400 otherwise."""

from __future__ import annotations

from typing import Any

import pytest

from inferq.core.errors import InvalidRequest
from inferq.core.models import Job, JobError, Lease
from inferq.core.node_checks import parse_result
from inferq.core.node_messages import Held, Outcome, refused, sort_outcomes
from inferq.core.states import JobState, ServiceClass
from inferq.core.work import (
    ChatMessage,
    ChatRequest,
    ChatResult,
    EmbedRequest,
    EmbedResult,
    Request,
)

USAGE = {"prompt_tokens": 3, "completion_tokens": 1, "cached_tokens": 0}
CHAT = {"text": "hi", "finish_reason": "stop", "usage": USAGE}
TOKEN = {"token": "hi", "logprob": -0.5, "bytes": [104, 105]}
EMBED = {"vectors": [[0.5, -1]], "usage": USAGE}


def job(request: Request) -> Job:
    return Job(
        id="j",
        tenant="t",
        model="m",
        origin="together",
        service_class=ServiceClass.ASYNC,
        priority=0,
        state=JobState.RUNNING,
        request=request,
        created_at=0.0,
    )


CHAT_JOB = job(ChatRequest(messages=(ChatMessage("user", "hi"),)))
EMBED_JOB = job(EmbedRequest(inputs=("a",)))


def test_a_whole_result_is_read() -> None:
    full = {
        **CHAT,
        "stop_sequence": "x",
        "tool_calls": [{"id": "c", "name": "f", "arguments": "{}"}],
        "logprobs": [{**TOKEN, "top": [TOKEN]}],
        "others": [CHAT],
    }
    chat = parse_result(CHAT_JOB, full)
    assert isinstance(chat, ChatResult) and chat.usage.prompt_tokens == 3
    assert chat.logprobs is not None and chat.logprobs[0].top[0].bytes == (104, 105)
    embedded = parse_result(EMBED_JOB, EMBED)
    assert isinstance(embedded, EmbedResult) and embedded.vectors == ((0.5, -1),)


@pytest.mark.parametrize(
    "change",
    [
        {"usage": {**USAGE, "prompt_tokens": None}},
        {"usage": {**USAGE, "completion_tokens": "1"}},
        {"usage": {**USAGE, "cached_tokens": -1}},
        {"usage": {**USAGE, "prompt_tokens": True}},
        {"usage": {**USAGE, "prompt_tokens": 2**31}},
        {"usage": {**USAGE, "extra": 1}},
        {"text": 5},
        {"finish_reason": None},
        {"stop_sequence": ["x"]},
        {"tool_calls": [{"id": "c", "name": 1, "arguments": "{}"}]},
        {"logprobs": [{**TOKEN, "logprob": "low"}]},
        {"logprobs": [{**TOKEN, "bytes": [256]}]},
        {"logprobs": [{**TOKEN, "top": [{**TOKEN, "token": None}]}]},
        {"others": [{**CHAT, "usage": {**USAGE, "prompt_tokens": 1.5}}]},
    ],
)
def test_a_chat_result_of_the_wrong_types_is_refused(change: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest, match="not a chat result"):
        parse_result(CHAT_JOB, {**CHAT, **change})


@pytest.mark.parametrize(
    "change",
    [{"vectors": [["0.5"]]}, {"vectors": [[True]]}, {"usage": {**USAGE, "prompt_tokens": None}}],
)
def test_an_embed_result_of_the_wrong_types_is_refused(change: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest, match="not a embed result"):
        parse_result(EMBED_JOB, {**EMBED, **change})


def test_a_report_sends_only_plain_results_of_jobs_handed_out_here_together() -> None:
    # a: plain result of a job handed out here; b: the same job named again; c: an error;
    # d: a result with info to merge; e: a job this process did not hand out; f: a
    # result that is not a chat result (refused at once)
    lease = Lease("a", "node:n:s", 1)
    known = {
        name: (job(ChatRequest(messages=(ChatMessage("user", "hi"),))), lease) for name in "abcdf"
    }
    outcomes = [
        Outcome(Held("s", "a", 1), result=CHAT, text=("hi",)),
        Outcome(Held("s", "a", 1), result=CHAT),
        Outcome(Held("s", "c", 1), error=JobError("engine_error", "boom")),
        Outcome(Held("s", "d", 1), result=CHAT, info={"progress": 1}),
        Outcome(Held("s", "e", 1), result=CHAT),
        Outcome(Held("s", "f", 1), result={"vectors": []}),
    ]
    quick, rest, fates = sort_outcomes(outcomes, lambda held: known.get(held.job_id), parse_result)
    assert [(i, text) for i, _, _, _, text in quick] == [(0, ("hi",))]
    assert isinstance(quick[0][3], ChatResult) and quick[0][2] == lease
    assert rest == [1, 2, 3, 4]
    assert fates[:5] == [None] * 5
    refusal = fates[5]
    assert refusal is not None and refusal == refused("f", InvalidRequest(refusal["message"]))
    # a store that cannot record several results in one write: every outcome one by one
    quick, rest, fates = sort_outcomes(outcomes, None, parse_result)
    assert (quick, rest, fates) == ([], list(range(6)), [None] * 6)
