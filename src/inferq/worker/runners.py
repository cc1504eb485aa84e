"""What a node runs its jobs with: a Python handler, or the engines of a models file."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import queue
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from inferq.core.errors import EngineError
from inferq.core.futures import settle
from inferq.core.work import ChatRequest, EmbedRequest, request_from_dict
from inferq.engines.base import ABORTED, AbortSignal, Engine
from inferq.worker.handler import Context, Handler, JobFailed

#: the service classes, most urgent first (as a claim names them)
CLASSES = ("interactive", "async", "batch")


class Stopped(Exception):
    """The job was stopped (cancelled, its lease lost, or the node is stopping)."""


class Running:
    """One job this node runs: what it reports at the next heartbeat, and its stop."""

    def __init__(self, job: dict[str, Any], *, on_text: Callable[[], None] = lambda: None) -> None:
        self.id: str = job["id"]
        self.attempt: int = job["attempt"]
        self.model: str = job["model"]
        self.kind: str = job["kind"]
        self.request: dict[str, Any] = job["request"]
        #: how urgent it is: service class (0 interactive, 1 async, 2 batch rows), then
        #: priority, then submission
        self.rank = (CLASSES.index(job.get("service_class", "async")), -job.get("priority", 0))
        self.created_at: float = job.get("created_at", 0.0)
        #: stopped for more urgent work: handed back to the queue, no attempt used
        self.preempted = False
        self.ctx = Context(job_id=self.id, attempt=self.attempt, model=self.model, info=job["info"])
        #: why it was stopped (None: it was not)
        self.stopped: str | None = None
        self._abort: AbortSignal | None = None
        #: streamed text not sent yet
        self.text: list[str] = []
        self.task: asyncio.Task[None] | None = None
        self._on_text = on_text

    def add_text(self, piece: str) -> None:
        self.text.append(piece)
        self._on_text()

    @property
    def abort(self) -> AbortSignal:
        """The signal an engine watches (made when one asks: a handler needs none)."""
        if self._abort is None:
            self._abort = AbortSignal()
            if self.stopped is not None:
                self._abort.set(self.stopped)
        return self._abort

    def stop(self, reason: str) -> None:
        self.stopped = reason
        self.ctx.cancel()
        if self._abort is not None:
            self._abort.set(reason)

    def take_text(self) -> list[str]:
        text, self.text = self.text, []
        return text

    def beat(self) -> dict[str, Any]:
        """This job in a heartbeat: its lease, and what it reported since the last one."""
        info, progress = self.ctx.take()
        beat: dict[str, Any] = {"id": self.id, "attempt": self.attempt}
        if info:
            beat["info"] = info
        if progress is not None:
            beat["progress"] = progress
        if self.text:
            beat["text"] = self.take_text()
        return beat


class Runner(ABC):
    """Runs the jobs of one model."""

    #: jobs of this model the node runs at once
    capacity: int

    async def start(self) -> None:
        """Load what the model needs, once, before the first claim."""
        return None

    async def close(self) -> None:
        """Free it."""
        return None

    @abstractmethod
    async def run(self, job: Running) -> dict[str, Any]:
        """Run ``job``; return its result as the protocol carries it (files not yet
        uploaded). Raises :class:`JobFailed` (no retry), :class:`Stopped`, or anything
        else (the attempt failed; retried)."""


class HandlerRunner(Runner):
    """A user's :class:`Handler`: ``predict`` on threads of the runner's own, as many as
    its capacity, so that that many jobs can block in it at once (:class:`HandlerThreads`)."""

    def __init__(self, handler: Handler, *, capacity: int) -> None:
        self.handler = handler
        self.capacity = capacity
        self._threads: HandlerThreads | None = None

    async def start(self) -> None:
        await asyncio.to_thread(self.handler.setup)

    async def close(self) -> None:
        if self._threads is not None:
            self._threads.close()
            self._threads = None

    async def run(self, job: Running) -> dict[str, Any]:
        payload = job.request.get("payload")
        if job.kind != "payload" or not isinstance(payload, dict):
            raise JobFailed(f"model {job.model} runs a handler: it takes freeform payloads only")
        if self._threads is None:
            self._threads = HandlerThreads(
                self.handler.predict, self.capacity, asyncio.get_running_loop()
            )
        outputs = await self._threads.run(payload, job.ctx)
        if job.ctx.cancelled:
            raise Stopped
        if not isinstance(outputs, dict):
            raise JobFailed(f"the handler returned {type(outputs).__name__}, not a dict")
        return {"outputs": outputs}


#: how long jobs wait behind a ``predict`` that runs on (blocks, or takes long) before
#: more threads are woken for them
SPREAD_SECONDS = 0.001

#: a job for the handler's threads: its payload and context, and the future of its outputs
_Item = tuple[dict[str, Any], Context, "asyncio.Future[Any]"]


class HandlerThreads:
    """Runs ``predict`` on up to ``size`` threads of its own, cheaply when it is quick.

    A thread pool hands each job to a thread: a thread woken, the GIL handed over and
    the event loop woken, per job, which cost a node more CPU than a no-op job's whole
    share of the server. Here jobs that come together wait in one queue, and a woken
    thread runs them one after another for as long as it finds more: quick jobs cost a
    thread's wake-up per batch. When jobs still wait :data:`SPREAD_SECONDS` later while
    none has ended meanwhile (a ``predict`` blocks, or takes long), a thread is woken
    (or started, up to ``size``) for each of them, so up to ``size`` jobs still run at
    once. Outcomes that end together go back to the loop with one wake-up.
    """

    def __init__(
        self,
        predict: Callable[[dict[str, Any], Context], Any],
        size: int,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.predict = predict
        self.size = size
        self.loop = loop
        self._pending: collections.deque[_Item] = collections.deque()
        #: a token wakes one idle thread; None ends it
        self._tokens: queue.SimpleQueue[bool | None] = queue.SimpleQueue()
        self._threads = 0
        #: threads waiting for a token (and not sent one)
        self._idle = 0
        #: jobs that entered predict, and those that left it
        self._started = 0
        self._ended = 0
        self._lock = threading.Lock()
        #: outcomes not yet handed to the loop, and whether a hand-over is on its way
        self._done: list[tuple[asyncio.Future[Any], bool, Any]] = []
        self._delivering = False
        self._spread: asyncio.TimerHandle | None = None
        self._closed = False

    async def run(self, payload: dict[str, Any], ctx: Context) -> Any:
        future: asyncio.Future[Any] = self.loop.create_future()
        with self._lock:
            self._pending.append((payload, ctx, future))
            # a thread that is awake finds the job (it looks again before it sleeps)
            wake = self._idle == self._threads and self._idle > 0
            if wake:
                self._idle -= 1
            start = self._threads == 0
            if start:
                self._threads += 1
        if wake:
            self._tokens.put(True)
        if start:
            self._start_thread()
        if self._spread is None and not self._closed:
            self._spread = self.loop.call_later(SPREAD_SECONDS, self._spread_out, self._ended)
        return await future

    def _start_thread(self) -> None:
        threading.Thread(target=self._work, name="inferq-handler", daemon=True).start()

    def _spread_out(self, ended_before: int) -> None:
        """Jobs wait: when none ended since ``ended_before`` while one runs in predict,
        wake or start a thread for each waiting job."""
        self._spread = None
        if self._closed:
            return
        with self._lock:
            waiting = len(self._pending)
            if not waiting:
                return
            stuck = self._ended == ended_before and self._started > self._ended
            woken = started = 0
            if stuck:
                woken = min(waiting, self._idle)
                self._idle -= woken
                started = min(waiting - woken, self.size - self._threads)
                self._threads += started
        for _ in range(woken):
            self._tokens.put(True)
        for _ in range(started):
            self._start_thread()
        self._spread = self.loop.call_later(SPREAD_SECONDS, self._spread_out, self._ended)

    def _work(self) -> None:
        while True:
            while True:
                with self._lock:
                    if not self._pending:
                        self._idle += 1
                        break
                    payload, ctx, future = self._pending.popleft()
                    self._started += 1
                try:
                    outcome, ok = self.predict(payload, ctx), True
                except BaseException as exc:  # handed to the job's task, which re-raises it
                    outcome, ok = exc, False
                self._deliver(future, ok, outcome)
            if self._tokens.get() is None:
                return

    def _deliver(self, future: asyncio.Future[Any], ok: bool, outcome: Any) -> None:
        with self._lock:
            self._ended += 1
            self._done.append((future, ok, outcome))
            if self._delivering:
                return
            self._delivering = True
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
            self.loop.call_soon_threadsafe(self._settle)

    def _settle(self) -> None:
        with self._lock:
            done, self._done = self._done, []
            self._delivering = False
        for future, ok, outcome in done:
            settle(future, ok, outcome)

    def close(self) -> None:
        """End the threads as their jobs end (daemons: a stuck one holds up no exit)."""
        self._closed = True
        if self._spread is not None:
            self._spread.cancel()
            self._spread = None
        for _ in range(self._threads):
            self._tokens.put(None)


class EngineRunner(Runner):
    """A configured engine (llama.cpp, upstream, fake): chat or embeddings."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.capacity = engine.slots

    async def start(self) -> None:
        await self.engine.start()

    async def close(self) -> None:
        await self.engine.close()

    async def run(self, job: Running) -> dict[str, Any]:
        request = request_from_dict(job.request)
        try:
            if isinstance(request, EmbedRequest):
                embedded = await self.engine.embed(request, abort=job.abort)
                if job.abort.is_set():
                    raise Stopped
                return embedded.to_dict()
            if not isinstance(request, ChatRequest):
                raise JobFailed(f"model {job.model} runs an engine: it takes no freeform payload")
            result = await self.engine.generate(request, abort=job.abort, on_text=job.add_text)
        except EngineError as exc:
            if exc.retryable:
                raise
            raise JobFailed(exc.message, code=exc.code) from exc
        if job.abort.is_set() or result.finish_reason == ABORTED:
            raise Stopped
        return result.to_dict()
