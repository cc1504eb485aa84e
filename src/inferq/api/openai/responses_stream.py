"""The event stream of a response, numbered so that a client can resume it.

Every event carries a ``sequence_number``, and a stream of a background response can
be picked up again from any of them (``GET /v1/responses/{id}?stream=true&
starting_after=N``). For that the numbering must not depend on how a connection
happened to see the text arrive, so the events are a function of the text alone:
after the lifecycle events, one ``response.output_text.delta`` per *unit*, a unit
being a run of whitespace and the word after it (:func:`units`). While the text
grows only the units that cannot change any more are sent; the last one waits for
the next space or the end.

A :class:`Transcript` follows one running response in this process: it gathers the
text pieces the worker publishes, and any number of streams (the one that created the
response, and those that resume it) read from it. A transcript that starts while its
response already runs (a resume after this process restarted) missed the first pieces,
so it keeps none and its streams send the text once the response ended. A run that
ends here without finishing (the job was preempted, and it runs again) starts the text
over; a stream keeps its count of sent units and goes on from there. A run that ended
elsewhere shows only in the store (a new claim, seen at the next read): from then on no
piece is kept, as none can be told to belong to the new run, and the text comes at the
end.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import weakref
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

from inferq.api.openai.responses_schemas import (
    Record,
    Status,
    output_item_id,
    output_items,
    output_message,
    render_response,
    text_part,
)
from inferq.core.errors import InferqError
from inferq.core.events import JobEvents, Subscription
from inferq.core.models import Job
from inferq.core.service import POLL_INTERVAL, JobService
from inferq.core.states import JobState
from inferq.core.tool_text import may_call
from inferq.core.work import ChatRequest, ChatResult

log = logging.getLogger("inferq.api")

_UNIT = re.compile(r"\s*\S+|\s+")


def units(text: str, *, final: bool) -> list[str]:
    """``text`` cut into units; unless ``final``, only those more text cannot change."""
    found = _UNIT.findall(text)
    return found if final else found[:-1]


@dataclass(eq=False)
class Transcript:
    """What this process knows of one response while it runs."""

    job: Job
    text: str = ""
    #: a worker has started it (a streamed piece, or the running state, was seen)
    started: bool = False
    #: joined while the response ran: the pieces before were missed, so none are kept
    late: bool = False
    #: the job once it ended
    ended: Job | None = None
    #: set when the follower stopped without seeing the end (the store failed)
    lost: bool = False
    version: int = 0
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def bump(self) -> None:
        async with self.changed:
            self.version += 1
            self.changed.notify_all()

    async def wait(self, seen: int) -> None:
        async with self.changed:
            await self.changed.wait_for(lambda: self.version != seen)


class Transcripts:
    """The transcripts of one process, kept while their responses run."""

    def __init__(self, jobs: JobService) -> None:
        self.jobs = jobs
        self._open: dict[str, Transcript] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def subscribe(self, job_id: str) -> Subscription:
        """Listen to a job before it is submitted (no piece can be missed)."""
        return self.jobs.events.subscribe(job_id)

    def follow(self, job: Job, sub: Subscription | None = None) -> Transcript:
        """The transcript of ``job``: the open one, or a new one followed from now on."""
        if job.id in self._open:
            if sub is not None:
                sub.close()
            return self._open[job.id]
        transcript = Transcript(job)
        self._open[job.id] = transcript
        task = asyncio.get_running_loop().create_task(
            self._follow(transcript, sub or self.subscribe(job.id), fresh=sub is not None)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return transcript

    async def _follow(self, t: Transcript, sub: Subscription, *, fresh: bool) -> None:
        jobs = self.jobs
        clock = asyncio.get_running_loop().time
        try:
            job = await jobs.get(t.job.id, tenant=t.job.tenant)
            # subscribed before submitting: every piece is here; else only from now on
            t.late = not fresh and job.state is JobState.RUNNING
            if t.late:
                log.info("response job %s joined while it runs: its text comes at the end", job.id)
            t.started = job.state is not JobState.QUEUED
            #: the claim whose text the transcript holds (None: not seen running yet)
            run = job.claimed_at if job.state is JobState.RUNNING else None
            read_at = clock()
            while not job.state.terminal:
                await t.bump()
                event = await sub.next(POLL_INTERVAL)
                if isinstance(event, str):
                    t.started = True
                    if not t.late:
                        t.text += event
                    if clock() - read_at < POLL_INTERVAL:
                        continue
                job = await jobs.get(t.job.id, tenant=t.job.tenant)
                read_at = clock()
                if event is None and not job.state.terminal:
                    # the run ended here without finishing: the job runs again from the start
                    t.text, t.late, t.started = "", False, job.state is JobState.RUNNING
                    run = None
                elif job.state is JobState.RUNNING:
                    t.started = True
                    if run is not None and job.claimed_at != run:
                        # it ended elsewhere and runs again: the pieces cannot be told
                        # apart, so the text comes from the end
                        t.text, t.late = "", True
                    run = job.claimed_at
            t.ended = job
            if t.late:
                log.info(
                    "response job %s ended %s; its streams send the rest", job.id, job.state.value
                )
        except InferqError:
            log.warning("lost track of response job %s", t.job.id, exc_info=True)
        finally:
            # whatever stopped the follower, its streams must not wait for ever
            t.lost = t.ended is None
            sub.close()
            self._open.pop(t.job.id, None)
            await t.bump()


_registry: weakref.WeakKeyDictionary[JobEvents, Transcripts] = weakref.WeakKeyDictionary()


def transcripts(jobs: JobService) -> Transcripts:
    """The transcripts of the process whose event hub ``jobs`` uses."""
    found = _registry.get(jobs.events)
    if found is None:
        found = _registry[jobs.events] = Transcripts(jobs)
    return found


# -- the events -----------------------------------------------------------------------


class _Numbered:
    def __init__(self) -> None:
        self._seq = itertools.count()

    def __call__(self, kind: str, **fields: Any) -> dict[str, Any]:
        return {"type": kind, **fields, "sequence_number": next(self._seq)}


async def response_events(t: Transcript) -> AsyncIterator[dict[str, Any]]:
    """The events of the response ``t`` follows, from the first; each once its content
    is known. Ends after the terminal event (none for a cancelled response).

    A request that may call a function holds its output back until it ended (the text
    a model writes may turn out to be a call), then sends each output item whole.
    """
    event = _Numbered()
    job = t.job
    background = Record.of(job).background
    yield event("response.created", response=render_response(job, status=_first(job)))
    if background:
        yield event("response.queued", response=render_response(job, status="queued"))
    while not (t.started or t.ended or t.lost):
        await t.wait(t.version)
    if t.ended is not None and t.ended.state is JobState.CANCELLED and not t.started:
        return
    if t.lost:
        yield _lost(event)
        return
    yield event("response.in_progress", response=render_response(job, status="in_progress"))
    live = _message_events(t, event) if not _holds(job) else _held_events(t, event)
    async for item in live:
        yield item
    final = t.ended
    if final is None:
        yield _lost(event)
        return
    status = render_response(final)["status"]
    if status in ("failed", "completed", "incomplete"):
        yield event(f"response.{status}", response=render_response(final))


def _lost(event: _Numbered) -> dict[str, Any]:
    return event(
        "error",
        code="server_error",
        message="the stream lost track of the response; retrieve it to see how it ended",
        param=None,
    )


def _holds(job: Job) -> bool:
    request = job.request
    return isinstance(request, ChatRequest) and may_call(request.tools, request.tool_choice)


async def _message_events(t: Transcript, event: _Numbered) -> AsyncIterator[dict[str, Any]]:
    """The message, its text sent as it grows; closed if the response ended well."""
    job = t.job
    place = {"item_id": output_item_id(job), "output_index": 0, "content_index": 0}
    empty = output_message(job, "", "in_progress") | {"content": []}
    yield event("response.output_item.added", output_index=0, item=empty)
    yield event("response.content_part.added", **place, part=text_part(""))
    sent = 0
    while True:
        seen = t.version
        final = t.ended
        text = t.text
        if final is not None and isinstance(final.result, ChatResult):
            text = final.result.text
        for piece in units(text, final=final is not None or t.lost)[sent:]:
            sent += 1
            yield event("response.output_text.delta", **place, delta=piece, logprobs=[])
        if final is not None or t.lost:
            break
        await t.wait(seen)
    if final is not None and isinstance(final.result, ChatResult):
        status = render_response(final)["status"]
        for done in _closing(output_message(final, final.result.text, status), 0, event):
            yield done


async def _held_events(t: Transcript, event: _Numbered) -> AsyncIterator[dict[str, Any]]:
    """Every output item of the ended response, each sent whole."""
    while not (t.ended or t.lost):
        await t.wait(t.version)
    final = t.ended
    if final is None or not isinstance(final.result, ChatResult):
        return
    for index, item in enumerate(output_items(final, render_response(final)["status"])):
        if item["type"] == "message":
            text = item["content"][0]["text"]
            place = {"item_id": item["id"], "output_index": index, "content_index": 0}
            opened = item | {"status": "in_progress", "content": []}
            yield event("response.output_item.added", output_index=index, item=opened)
            yield event("response.content_part.added", **place, part=text_part(""))
            for piece in units(text, final=True):
                yield event("response.output_text.delta", **place, delta=piece, logprobs=[])
        else:
            place = {"item_id": item["id"], "output_index": index}
            opened = item | {"status": "in_progress", "arguments": ""}
            yield event("response.output_item.added", output_index=index, item=opened)
            yield event("response.function_call_arguments.delta", **place, delta=item["arguments"])
        for done in _closing(item, index, event):
            yield done


def _closing(item: dict[str, Any], index: int, event: _Numbered) -> Iterator[dict[str, Any]]:
    """The events that close an output item."""
    if item["type"] == "message":
        part = item["content"][0]
        place = {"item_id": item["id"], "output_index": index, "content_index": 0}
        yield event(
            "response.output_text.done", **place, text=part["text"], logprobs=part["logprobs"]
        )
        yield event("response.content_part.done", **place, part=part)
    else:
        place = {"item_id": item["id"], "output_index": index}
        yield event("response.function_call_arguments.done", **place, arguments=item["arguments"])
    yield event("response.output_item.done", output_index=index, item=item)


def _first(job: Job) -> Status:
    return "queued" if Record.of(job).background else "in_progress"


async def replay(t: Transcript, *, after: int | None) -> AsyncIterator[dict[str, Any]]:
    """The events with a sequence number above ``after`` (all for None)."""
    async for item in response_events(t):
        if after is None or item["sequence_number"] > after:
            yield item


def ended_transcript(job: Job) -> Transcript:
    """A transcript of a response that has ended: its events come from the store."""
    return Transcript(job, text="", started=True, ended=job)
