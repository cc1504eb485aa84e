"""OpenAI batch lines of ``/v1/responses`` and ``/v1/completions``: what a line becomes,
and the 400s naming what a batch row cannot do (checked line by line at validation)."""

from __future__ import annotations

from typing import Any

import pytest

from inferq.api.openai.batch_format import COMPLETIONS, RESPONSES, OpenAIBatchFormat
from inferq.core.errors import InvalidRequest
from inferq.core.models import Batch
from inferq.core.states import JobState
from inferq.core.work import ChatRequest


def batch(endpoint: str) -> Batch:
    return Batch(
        id="batch_1",
        tenant="t",
        dialect="openai",
        model=None,
        endpoint=endpoint,
        state=JobState.VALIDATING,
        input_file_id="file-1",
        created_at=0.0,
        expires_at=1.0,
    )


def line(endpoint: str, **body: Any) -> dict[str, Any]:
    return {"custom_id": "a", "method": "POST", "url": endpoint, "body": {"model": "m", **body}}


def test_a_responses_line_is_a_chat_request() -> None:
    parsed = OpenAIBatchFormat().parse_row(
        line(RESPONSES, input="hi", instructions="be brief", max_output_tokens=5),
        batch(RESPONSES),
    )
    assert isinstance(parsed.request, ChatRequest)
    assert [(m.role, m.content) for m in parsed.request.messages] == [
        ("system", "be brief"),
        ("user", "hi"),
    ]
    assert parsed.request.max_tokens == 5


def test_a_completions_line_is_a_prompt() -> None:
    parsed = OpenAIBatchFormat().parse_row(
        line(COMPLETIONS, prompt="Once upon", max_tokens=3, logprobs=2), batch(COMPLETIONS)
    )
    assert isinstance(parsed.request, ChatRequest)
    assert parsed.request.prompt == "Once upon" and parsed.request.messages == ()
    assert parsed.request.logprobs and parsed.request.top_logprobs == 2


@pytest.mark.parametrize(
    ("endpoint", "body", "param"),
    [
        (RESPONSES, {"input": "x", "stream": True}, "body.stream"),
        (RESPONSES, {"input": "x", "background": True}, "body.background"),
        (RESPONSES, {"input": "x", "previous_response_id": "resp_1"}, "body.previous_response_id"),
        (RESPONSES, {"input": [{"role": "robot", "content": "x"}]}, "body.input.0.role"),
        (RESPONSES, {"input": "x", "temperature": 9}, "body.temperature"),
        (RESPONSES, {}, "body.input"),
        (COMPLETIONS, {"prompt": ["a", "b"]}, "body.prompt"),
        (COMPLETIONS, {"prompt": "a", "echo": True}, "body.echo"),
        (COMPLETIONS, {"prompt": "a", "suffix": "z"}, "body.suffix"),
    ],
)
def test_what_a_batch_row_cannot_do_is_a_400(
    endpoint: str, body: dict[str, Any], param: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        OpenAIBatchFormat().parse_row(line(endpoint, **body), batch(endpoint))
    assert caught.value.param == param
