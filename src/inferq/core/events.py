"""In-process job events: wake-ups and streamed text between API and worker.

The store is the source of truth; these events only make waiting fast. A waiter
that misses an event still sees the outcome in the store on its next poll, so a
worker in another process (which cannot reach these events) works, only slower.
All methods run on the event loop thread.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from inferq.core.models import Job

#: a text piece of a streamed generation; None marks the end of the job's run, and so
#: does the job as committed at its end, for a subscription that asked for it
#: (``subscribe(..., finished=True)``) when this process's worker recorded the outcome
Event = str | Job | None


async def wait_event(event: asyncio.Event, timeout: float | None) -> bool:
    """Wait until ``event`` is set or ``timeout`` passes (None: no limit); return whether it
    was set.

    Python 3.11's ``asyncio.wait_for`` can swallow a cancellation that arrives
    just as the awaited event fires, leaving a loop that was told to stop running
    for ever (a worker that never shuts down); ``asyncio.timeout`` does not.
    """
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True


async def cancel_and_wait(*tasks: asyncio.Future[Any]) -> None:
    """Cancel ``tasks``, then wait until each has ended (their cancellation is not raised)."""
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


@dataclass
class Subscription:
    job_id: str
    queue: asyncio.Queue[Event]
    _hub: JobEvents
    #: take the job as committed at its end instead of None, where the worker has it
    finished: bool = False
    #: the job's text is wanted as it is generated (a stream): other processes are asked
    #: for it (:class:`TextRelay`); a waiter for the end alone costs them nothing
    text: bool = True

    async def next(self, timeout: float) -> Event | TimeoutError:
        """The next event, or a TimeoutError *value* when none came in time."""
        if not self.queue.empty():
            # one already queued (the pieces of a generation come in runs) is taken
            # without a loop timer, which it would not wait for
            return self.queue.get_nowait()
        try:
            async with asyncio.timeout(timeout):
                return await self.queue.get()
        except TimeoutError as exc:
            return exc

    def close(self) -> None:
        self._hub._unsubscribe(self)


class TextRelay(Protocol):
    """Carries generated text between processes: from the one whose worker generates a
    job's text to the ones whose clients stream it (the store's channel between
    processes, where it has one; see :meth:`inferq.core.ports.JobQueue.text_relay`).

    Pieces that cannot be carried are dropped, never reordered: a stream that misses
    some gets the rest of the text from the job's result when it ends.
    """

    def start(self, deliver: Callable[[str, str], None]) -> None:
        """Hand the pieces other processes relay here to ``deliver(job_id, piece)``."""

    def want(self, job_id: str) -> None:
        """This process has a waiter for ``job_id``: ask the others for its text."""

    def unwant(self, job_id: str) -> None:
        """It has none any more."""

    def text(self, job_id: str, piece: str) -> None:
        """A piece generated here: relay it where it is wanted."""

    def ended(self, job_id: str) -> None:
        """The job's run ended: forget it."""


class JobEvents:
    """A hub for one process."""

    def __init__(self) -> None:
        #: the channel to other processes' hubs, when the store has one (set by the runtime)
        self.relay: TextRelay | None = None
        self._subs: defaultdict[str, list[Subscription]] = defaultdict(list)
        #: how many of each job's subscriptions want its text
        self._texts: Counter[str] = Counter()
        self._wakers: list[asyncio.Event] = []
        self._cancel_listeners: list[Callable[[str], None]] = []
        self._ended_listeners: list[Callable[[str], None]] = []

    # -- API side ---------------------------------------------------------------

    def subscribe(self, job_id: str, *, finished: bool = False, text: bool = True) -> Subscription:
        """Events of ``job_id``; with ``finished``, its end comes as the job as committed
        when this process's worker recorded it (None otherwise). ``text``: the caller
        takes the job's text as it is generated, from another process's worker too (the
        relay is asked for it); without it, pieces generated here still come, and are
        the caller's to skip."""
        sub = Subscription(job_id, asyncio.Queue(), self, finished, text)
        if text:
            if not self._texts[job_id] and self.relay is not None:
                self.relay.want(job_id)
            self._texts[job_id] += 1
        self._subs[job_id].append(sub)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.job_id)
        if subs and sub in subs:
            subs.remove(sub)
            if not subs:
                del self._subs[sub.job_id]
            if sub.text:
                self._texts[sub.job_id] -= 1
                if not self._texts[sub.job_id]:
                    del self._texts[sub.job_id]
                    if self.relay is not None:
                        self.relay.unwant(sub.job_id)

    def job_submitted(self) -> None:
        """Wake idle workers."""
        for waker in self._wakers:
            waker.set()

    def job_cancelled(self, job_id: str) -> None:
        """Tell workers to abort ``job_id`` if they run it."""
        for listener in self._cancel_listeners:
            listener(job_id)
        self.job_ended(job_id)

    # -- worker side ------------------------------------------------------------

    def waker(self) -> asyncio.Event:
        """An event set whenever a job is submitted; the caller clears it."""
        waker = asyncio.Event()
        self._wakers.append(waker)
        return waker

    def on_cancel(self, listener: Callable[[str], None]) -> None:
        self._cancel_listeners.append(listener)

    def on_ended(self, listener: Callable[[str], None]) -> None:
        """Call ``listener`` with the id of every job whose run ended, here or (where the
        store has a channel) in another process: the batch runner wakes for its rows."""
        self._ended_listeners.append(listener)

    def text(self, job_id: str, piece: str) -> None:
        self.relayed_text(job_id, piece)
        if self.relay is not None:
            self.relay.text(job_id, piece)

    def relayed_text(self, job_id: str, piece: str) -> None:
        """A piece of the job's text, for this process's waiters only."""
        for sub in self._subs.get(job_id, ()):
            sub.queue.put_nowait(piece)

    def remote_ended(self, job_id: str) -> None:
        """Another process saw ``job_id`` end: abort it here if it runs, wake waiters."""
        for listener in self._cancel_listeners:
            listener(job_id)
        self.job_ended(job_id)

    def job_ended(self, job_id: str, finished: Job | None = None) -> None:
        """The job's run ended (any outcome): waiters should read the store, or take
        ``finished``, the job exactly as the worker committed it, when they asked for it."""
        if self.relay is not None:
            self.relay.ended(job_id)
        for sub in self._subs.get(job_id, ()):
            sub.queue.put_nowait(finished if sub.finished else None)
        for listener in self._ended_listeners:
            listener(job_id)
