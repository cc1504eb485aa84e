"""The frame of OpenAI's server-sent event streams (chat and completions chunks)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from inferq.api.errors import status_of
from inferq.api.openai.translate import SSE_DONE, error_body, sse
from inferq.api.sync import abandon, finished_or_raise
from inferq.core.errors import InferqError, public
from inferq.core.models import Job
from inferq.core.service import JobService
from inferq.core.work import ChatResult


async def framed(jobs: JobService, job: Job, events: AsyncIterator[str]) -> AsyncIterator[str]:
    """``events``, then ``[DONE]``; an error as OpenAI's error event; the job cancelled
    when the client leaves before the end."""
    finished = False
    try:
        async for event in events:
            yield event
        finished = True
        yield SSE_DONE
    except InferqError as exc:
        finished = True
        yield sse(error_body(public(exc), status_of(exc)))
    finally:
        if not finished:
            abandon(jobs, job)


def ended(job: Job) -> tuple[Job, ChatResult]:
    """``job`` as its stream ended (:meth:`JobService.stream`'s last item), succeeded,
    with its result."""
    done = finished_or_raise(job)
    assert isinstance(done.result, ChatResult)
    return done, done.result
