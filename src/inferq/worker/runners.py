"""What a node runs its jobs with: a Python handler, or the engines of a models file."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from inferq.core.errors import EngineError
from inferq.core.models import ChatRequest, EmbedRequest, request_from_dict
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
        self.abort = AbortSignal()
        #: streamed text not sent yet
        self.text: list[str] = []
        self.task: asyncio.Task[None] | None = None
        self._on_text = on_text

    def add_text(self, piece: str) -> None:
        self.text.append(piece)
        self._on_text()

    def stop(self, reason: str) -> None:
        self.ctx.cancel()
        self.abort.set(reason)

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
    """A user's :class:`Handler`: ``predict`` in a thread per job, on threads of its own
    (as many as its capacity: asyncio's shared pool has only ``cores + 4``, which would
    keep a node of higher capacity from running that many jobs at once)."""

    def __init__(self, handler: Handler, *, capacity: int) -> None:
        self.handler = handler
        self.capacity = capacity
        self._threads: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        await asyncio.to_thread(self.handler.setup)

    async def close(self) -> None:
        if self._threads is not None:
            self._threads.shutdown(wait=False, cancel_futures=True)
            self._threads = None

    async def run(self, job: Running) -> dict[str, Any]:
        payload = job.request.get("payload")
        if job.kind != "payload" or not isinstance(payload, dict):
            raise JobFailed(f"model {job.model} runs a handler: it takes freeform payloads only")
        if self._threads is None:
            self._threads = ThreadPoolExecutor(self.capacity, thread_name_prefix="inferq-handler")
        loop = asyncio.get_running_loop()
        outputs = await loop.run_in_executor(self._threads, self.handler.predict, payload, job.ctx)
        if job.ctx.cancelled:
            raise Stopped
        if not isinstance(outputs, dict):
            raise JobFailed(f"the handler returned {type(outputs).__name__}, not a dict")
        return {"outputs": outputs}


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
