"""OpenAI's legacy ``POST /v1/completions``: a text prompt continued as it is.

Each prompt of a list is a job of its own (they run side by side); their
answers are the response's choices, prompt by prompt, ``n`` each. ``echo``
puts the prompt before each answer's text; ``logprobs`` (0 to 5) reports the
generated tokens' log probabilities in the legacy shape. Refused with a 400
naming them: ``suffix`` (the model cannot insert text), token-id prompts,
``best_of`` other than ``n``, ``logit_bias``, and ``echo`` with ``logprobs`` (the
prompt's own log probabilities are not computed).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from inferq.api import sync
from inferq.api.chat import (
    MAX_CHOICES,
    Int64,
    NonNegativeInt32,
    PositiveInt32,
    render_usage,
    sampling,
    validate_body,
)
from inferq.api.deps import CallerDep, ServicesDep
from inferq.api.openai.streaming import ended, framed
from inferq.api.openai.translate import sse
from inferq.api.routing import Router
from inferq.core.errors import InvalidRequest
from inferq.core.models import Job
from inferq.core.service import JobService
from inferq.core.work import ChatRequest, ChatResult, Usage

router = Router(tags=["openai"])

#: OpenAI's bound on the legacy ``logprobs``
MAX_LOGPROBS = 5
#: OpenAI's default ``max_tokens`` on completions
DEFAULT_MAX_TOKENS = 16


class CompletionBody(BaseModel):
    """An OpenAI completions request."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    prompt: str | list[str] | list[int] | list[list[int]]
    suffix: str | None = None
    echo: bool = False
    logprobs: int | None = Field(default=None, ge=0, le=MAX_LOGPROBS)
    max_tokens: PositiveInt32 | None = DEFAULT_MAX_TOKENS
    temperature: float = Field(default=1.0, ge=0, le=2)
    top_p: float = Field(default=1.0, gt=0, le=1)
    top_k: NonNegativeInt32 | None = None
    n: int = Field(default=1, ge=1, le=MAX_CHOICES)
    best_of: Int64 | None = None
    logit_bias: dict[str, float] | None = None
    stop: str | list[str] | None = None
    seed: Int64 | None = None
    presence_penalty: float = Field(default=0.0, ge=-2, le=2)
    frequency_penalty: float = Field(default=0.0, ge=-2, le=2)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    #: inferq extension: higher runs first among sync requests
    priority: int = 0
    #: inferq extension: seconds before the request is cancelled with a timeout error
    timeout: float | None = Field(default=None, gt=0)

    def prompts(self) -> list[str]:
        """The prompts, one job each; InvalidRequest for what cannot run."""
        if isinstance(self.prompt, str):
            return [self.prompt]
        if not self.prompt:
            raise InvalidRequest("prompt: give a string or a non-empty list", param="prompt")
        if not all(isinstance(p, str) for p in self.prompt):
            raise InvalidRequest(
                "prompt: token-id prompts are not supported; send the text", param="prompt"
            )
        return [p for p in self.prompt if isinstance(p, str)]

    def check(self) -> None:
        if self.suffix:
            raise InvalidRequest(
                "suffix: inserting text before a suffix is not supported", param="suffix"
            )
        if self.best_of is not None and self.best_of != self.n:
            raise InvalidRequest("best_of: only best_of equal to n is supported", param="best_of")
        if self.logit_bias:
            raise InvalidRequest("logit_bias: is not supported", param="logit_bias")
        if self.echo and self.logprobs is not None:
            raise InvalidRequest(
                "logprobs: the log probabilities of an echoed prompt are not computed; "
                "use echo or logprobs, not both",
                param="logprobs",
            )
        if self.stream and (self.n > 1 or len(self.prompts()) > 1):
            raise InvalidRequest(
                "stream: a stream carries one answer; send one prompt with n=1", param="stream"
            )
        if self.stream and self.logprobs is not None:
            raise InvalidRequest("logprobs: log probabilities are not streamed", param="logprobs")

    def to_request(self, prompt: str) -> ChatRequest:
        return ChatRequest(
            messages=(),
            prompt=prompt,
            max_tokens=self.max_tokens,
            **sampling(self),
            logprobs=self.logprobs is not None,
            top_logprobs=self.logprobs or 0,
            n=self.n,
        )


def parse_completion_body(data: Any, *, prefix: str = "") -> CompletionBody:
    """Validate ``data`` as a completions body and check it; InvalidRequest otherwise."""
    body = validate_body(CompletionBody, data, prefix=prefix)
    body.check()
    return body


@router.post("/completions", response_model=None)
async def completions(
    body: CompletionBody, request: Request, caller: CallerDep, services: ServicesDep
) -> dict[str, Any] | Response:
    body.check()
    requests = [body.to_request(p) for p in body.prompts()]
    if len(requests) == 1:
        watched = await sync.submit_watched(
            services, caller, body, requests[0], origin="openai", stream=body.stream
        )
        if body.stream:
            events = _stream(services.jobs, watched, body)
            return sync.event_stream(framed(services.jobs, watched[0], events), closes=watched[1])
        return await sync.answer_when_finished(
            request, services.jobs, watched, lambda job: render_text_completion([job], body)
        )
    jobs = [
        await sync.submit_sync(services, caller, body, core, origin="openai") for core in requests
    ]
    done: list[Job] = []
    try:
        for job in jobs:
            done.append(
                sync.finished_or_raise(await sync.wait_for_client(request, services.jobs, job))
            )
    except sync.ClientGone:
        for job in jobs:
            sync.abandon(services.jobs, job)
        return Response(status_code=499)
    return render_text_completion(done, body)


def render_text_completion(jobs: list[Job], body: CompletionBody) -> dict[str, Any]:
    """The text_completion object of succeeded jobs, one per prompt."""
    choices: list[dict[str, Any]] = []
    usage = Usage()
    for job in jobs:
        assert isinstance(job.result, ChatResult) and isinstance(job.request, ChatRequest)
        prompt = job.request.prompt or ""
        for answer in job.result.choices:
            text = prompt + answer.text if body.echo else answer.text
            choices.append(
                {
                    "text": text,
                    "index": len(choices),
                    "logprobs": _legacy_logprobs(answer) if body.logprobs is not None else None,
                    "finish_reason": answer.finish_reason,
                }
            )
        usage = Usage(
            prompt_tokens=usage.prompt_tokens + job.usage.prompt_tokens,
            completion_tokens=usage.completion_tokens + job.usage.completion_tokens,
            cached_tokens=usage.cached_tokens + job.usage.cached_tokens,
        )
    first = jobs[0]
    return {
        "id": "cmpl-" + first.id,
        "object": "text_completion",
        "created": int(first.created_at),
        "model": first.model,
        "choices": choices,
        "usage": render_usage(first.evolve(usage=usage)),
    }


def _legacy_logprobs(answer: ChatResult) -> dict[str, Any]:
    """The legacy shape: parallel lists of tokens, their log probabilities, the
    alternatives at each place and each token's offset in the text."""
    entries = answer.logprobs or ()
    offsets: list[int] = []
    at = 0
    for entry in entries:
        offsets.append(at)
        at += len(entry.token)
    return {
        "tokens": [e.token for e in entries],
        "token_logprobs": [e.logprob for e in entries],
        "top_logprobs": [{t.token: t.logprob for t in e.top} for e in entries],
        "text_offset": offsets,
    }


def _chunk(job: Job, text: str, finish_reason: str | None = None) -> dict[str, Any]:
    return {
        "id": "cmpl-" + job.id,
        "object": "text_completion",
        "created": int(job.created_at),
        "model": job.model,
        "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}],
    }


async def _stream(
    jobs: JobService, watched: sync.Watched, body: CompletionBody
) -> AsyncIterator[str]:
    job = watched[0]
    if body.echo and isinstance(job.request, ChatRequest) and job.request.prompt:
        yield sse(_chunk(job, job.request.prompt))
    text = sync.JobText(jobs, watched)
    async for piece in text:
        yield sse(_chunk(job, piece))
    done, result = ended(text.ended())
    yield sse(_chunk(done, "", result.finish_reason))
    if (body.stream_options or {}).get("include_usage"):
        yield sse({**_chunk(done, ""), "choices": [], "usage": render_usage(done)})
