"""Outcomes of sync requests, shared by the dialects that wait for a job."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, TypeVar

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from inferq.api.deps import Services
from inferq.core.errors import (
    Conflict,
    DeadlineExceeded,
    EngineError,
    InferqError,
    NotFound,
    PromptTooLong,
)
from inferq.core.events import Subscription
from inferq.core.models import ApiKey, Job
from inferq.core.service import JobService
from inferq.core.states import JobState, ServiceClass
from inferq.core.work import Request as CoreRequest

log = logging.getLogger("inferq.api")
T = TypeVar("T")
_background: set[asyncio.Task[None]] = set()


class SyncBody(Protocol):
    """What every dialect's sync request carries besides its payload."""

    @property
    def model(self) -> str: ...

    @property
    def priority(self) -> int: ...

    @property
    def timeout(self) -> float | None: ...


async def submit_sync(
    services: Services,
    caller: ApiKey,
    body: SyncBody,
    request: CoreRequest,
    *,
    origin: str,
    job_id: str | None = None,
) -> Job:
    """Queue a sync request (most urgent class), due by its timeout or the server's.

    With ``job_id`` (from :meth:`JobService.watch`: its events are watched already), it
    starts at once where this process's worker has a free slot for it."""
    return await services.jobs.submit(
        tenant=caller.tenant,
        model=body.model,
        request=request,
        origin=origin,
        service_class=ServiceClass.INTERACTIVE,
        priority=body.priority,
        timeout=body.timeout or services.settings.sync_timeout,
        job_id=job_id,
        start_now=job_id is not None,
    )


#: a job submitted by :func:`submit_watched`, with the subscription to its events
Watched = tuple[Job, Subscription]


async def submit_watched(
    services: Services,
    caller: ApiKey,
    body: SyncBody,
    request: CoreRequest,
    *,
    origin: str,
    stream: bool,
) -> Watched:
    """:func:`submit_sync`, subscribed to the job's events before it is inserted, so the
    wait for it (:func:`wait_for_client` with ``watching``) starts without reading the
    store back. The wait closes the subscription; so does a failed submit. ``stream``:
    the caller streams the job's text (see :meth:`JobService.watch`)."""
    return await watched(
        services.jobs,
        lambda job_id: submit_sync(services, caller, body, request, origin=origin, job_id=job_id),
        stream=stream,
    )


async def watched(
    jobs: JobService, submit: Callable[[str], Awaitable[Job]], *, stream: bool
) -> Watched:
    """``submit`` of a job under a new id, subscribed to that job's events first (see
    :func:`submit_watched`); the subscription is closed if the submit fails."""
    job_id, sub = jobs.watch(text=stream)
    try:
        job = await submit(job_id)
    except BaseException:
        sub.close()
        raise
    return job, sub


class JobText:
    """A watched job's text as it is generated (iterate it; :meth:`JobService.stream`),
    then :meth:`ended`: the job as it ended, once the iteration is over."""

    def __init__(self, jobs: JobService, watched: Watched) -> None:
        self.jobs = jobs
        self.job, self._sub = watched
        self._ended: Job | None = None

    async def __aiter__(self) -> AsyncIterator[str]:
        job = self.job
        pieces = self.jobs.stream(
            job.id, tenant=job.tenant, deadline=job.deadline_at or 0, watching=self._sub
        )
        async for piece in pieces:
            if isinstance(piece, Job):
                self._ended = piece
            else:
                yield piece

    def ended(self) -> Job:
        """The job as it ended (its stream's last item)."""
        if self._ended is None:
            raise RuntimeError(f"the text of job {self.job.id} has not ended")
        return self._ended


#: a stream that has sent nothing for this long sends an SSE comment, so that clients and
#: proxies with a read timeout (the SDKs': 60 s or more) do not drop a stream that waits
#: for its job, e.g. a resumed background response queued behind others
KEEPALIVE_SECONDS = 15.0
KEEPALIVE = ": keepalive\n\n"


def event_stream(
    events: AsyncIterator[str],
    *,
    keepalive: float | None = None,
    closes: Subscription | None = None,
) -> StreamingResponse:
    """Server-sent events, unbuffered by the server and any proxy in between; with
    ``keepalive``, a comment after each that many seconds without an event.

    ``closes``: a subscription that ``events`` reads (opened before its job was
    submitted), closed once the response is over even if ``events`` never started: a
    client gone before the first byte leaves a generator that nothing runs, whose own
    ``finally`` would never close it."""
    body = events if keepalive is None else with_keepalive(events, keepalive)
    return _EventStream(body, closes)


class _EventStream(StreamingResponse):
    def __init__(self, body: AsyncIterator[str], closes: Subscription | None) -> None:
        super().__init__(
            body,
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )
        self.closes = closes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            if self.closes is not None:
                self.closes.close()


async def with_keepalive(events: AsyncIterator[str], every: float) -> AsyncIterator[str]:
    """``events``, with :data:`KEEPALIVE` whenever ``every`` seconds pass without one.

    The next event is awaited in a task of its own that is never cancelled while it
    waits, so the stream's generator is not interrupted by a keepalive."""
    source = aiter(events)
    pending: asyncio.Task[str] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(source))
            done, _ = await asyncio.wait({pending}, timeout=every)
            if not done:
                yield KEEPALIVE
                continue
            try:
                item = pending.result()
            except StopAsyncIteration:
                return
            pending = None
            yield item
    finally:
        if pending is not None:
            pending.cancel()
        aclose = getattr(source, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()


def finished_or_raise(job: Job) -> Job:
    """The job when it succeeded; otherwise the error its client should see."""
    if job.state is JobState.SUCCEEDED:
        return job
    message = job.error.message if job.error else f"the job ended {job.state.value}"
    if job.state is JobState.EXPIRED:
        raise DeadlineExceeded(message)
    if job.state is JobState.CANCELLED:
        raise Conflict(f"the request was cancelled: {message}")
    if job.error is not None and job.error.code == PromptTooLong.code:
        raise PromptTooLong(message, param="messages")
    raise EngineError(message)


class ClientGone(Exception):
    """The client closed the connection before its sync request finished."""


async def wait_for_client(
    request: Request, jobs: JobService, job: Job, *, sub: Subscription | None = None
) -> Job:
    """Wait for a sync job; cancel it if the client disconnects first.

    Nothing cancels a plain handler when its client leaves, so a second task listens
    for ``http.disconnect`` (the body is already read, so nothing else arrives).
    ``sub``: the job's subscription from :func:`submit_watched`, closed here.
    """
    deadline = job.deadline_at or 0
    waiter = asyncio.ensure_future(
        jobs.wait(job.id, tenant=job.tenant, deadline=deadline)
        if sub is None
        else jobs.wait(job.id, tenant=job.tenant, deadline=deadline, watching=(sub, job))
    )
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({waiter, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if waiter not in done and watcher.exception() is not None:
            # watching for a disconnect failed: the client is still there, so wait on
            log.warning("cannot watch for job %s's client leaving: %r", job.id, watcher.exception())
            await waiter
    finally:
        watcher.cancel()
        if not waiter.done():
            waiter.cancel()
            abandon(jobs, job)
        if sub is not None:
            # the wait closes it too, unless it was cancelled before it began
            sub.close()
    if not waiter.done() or waiter.cancelled():  # cancelled above: it ends on its own
        raise ClientGone
    return waiter.result()


async def answer_when_finished(
    request: Request,
    jobs: JobService,
    job: Job | Watched,
    render: Callable[[Job], T],
) -> T | Response:
    """The answer to a sync request: ``render`` of its job once that succeeded (the error
    its client should see otherwise), or 499 when the client leaves first. ``job`` may
    come from :func:`submit_sync` or :func:`submit_watched`. A rendered dict is sent
    as JSON at once (:func:`json_answer`)."""
    sub = None
    if isinstance(job, tuple):
        job, sub = job
    try:
        done = await wait_for_client(request, jobs, job, sub=sub)
    except ClientGone:
        return Response(status_code=499)
    answer = render(finished_or_raise(done))
    if isinstance(answer, dict):
        return json_answer(answer)
    return answer


def json_answer(content: dict[str, Any]) -> Response:
    """``content`` as the JSON response FastAPI would send for it, without FastAPI's walk
    of the whole answer (``jsonable_encoder``) when it holds only JSON's own types."""
    try:
        return JSONResponse(content)
    except TypeError:  # something only FastAPI's encoder knows how to write
        return JSONResponse(jsonable_encoder(content))


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def abandon(jobs: JobService, job: Job) -> None:
    """Cancel a sync job whose client went away, without blocking the caller."""

    async def cancel() -> None:
        with contextlib.suppress(Conflict, NotFound):
            await jobs.cancel(job.id, tenant=job.tenant)
            log.info("job %s cancelled: its client disconnected", job.id)

    async def guarded() -> None:
        try:
            await cancel()
        except InferqError:
            log.exception("could not cancel abandoned job %s", job.id)

    task = asyncio.get_running_loop().create_task(guarded())
    _background.add(task)
    task.add_done_callback(_background.discard)
