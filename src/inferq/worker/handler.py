"""What a node's Python handler is written against: Handler, Context, FileOutput, JobFailed.

::

    from inferq.worker import Context, FileOutput, Handler, JobFailed

    class Generator(Handler):
        def setup(self) -> None:            # once per node process: load weights
            ...

        def predict(self, payload: dict, ctx: Context) -> dict:
            ctx.progress(0.5)               # info.progress, visible in the queue status
            ctx.emit({"stage": "render"})   # merged into the job's info
            if ctx.cancelled:               # true within a second of a cancel
                ...
            return {"video": FileOutput("/tmp/out.mp4"), "frames": 48}

``predict`` runs on threads of the node's own, as many as its capacity (a node with
capacity 2 runs two jobs at once), so it may block: jobs that arrive together run one
after another on one thread while each ends quickly, and a job that blocks or takes
longer than a millisecond gets the others threads of their own. Raising
:class:`JobFailed` fails the job for good; any other exception fails this attempt, and
the job runs again while attempts remain.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class JobFailed(Exception):
    """The job cannot succeed: it fails now, without another attempt."""

    def __init__(self, message: str, *, code: str = "job_failed") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass(frozen=True, slots=True)
class FileOutput:
    """A file among a handler's outputs: the node uploads it, and the outputs the client
    reads hold, in its place, a URL that only the job's tenant can read."""

    path: str | Path
    #: the name in the URL; the file's own name when None
    name: str | None = None

    @property
    def upload_name(self) -> str:
        return self.name or Path(self.path).name


class Context:
    """One attempt of one job, as its handler sees it. Thread-safe."""

    def __init__(self, *, job_id: str, attempt: int, model: str, info: dict[str, Any]) -> None:
        self.job_id = job_id
        #: 1 on the first attempt, 2 on the first retry, ...
        self.attempt = attempt
        self.model = model
        #: the job's info when it was claimed (the client's, and what earlier attempts added)
        self.info = dict(info)
        self._lock = threading.Lock()
        self._pending: dict[str, Any] = {}
        self._progress: float | None = None
        self._cancelled = False
        #: made for the first wait_cancelled (most handlers never wait)
        self._cancel_event: threading.Event | None = None

    def progress(self, value: float) -> None:
        """Report how far the job is, from 0 to 1 (``info.progress``)."""
        with self._lock:
            self._progress = min(1.0, max(0.0, float(value)))

    def emit(self, info: dict[str, Any]) -> None:
        """Merge ``info`` into the job's info (it accumulates across attempts)."""
        with self._lock:
            self._pending.update(info)
            self.info.update(info)

    @property
    def cancelled(self) -> bool:
        """Whether the job was cancelled (or this node lost it): stop, the result is not
        wanted. True within a second of the cancel."""
        return self._cancelled

    def wait_cancelled(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds, returning early (True) once cancelled."""
        with self._lock:
            if self._cancel_event is None:
                self._cancel_event = threading.Event()
                if self._cancelled:
                    self._cancel_event.set()
            event = self._cancel_event
        return event.wait(timeout)

    # -- the node's side ------------------------------------------------------------

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            if self._cancel_event is not None:
                self._cancel_event.set()

    def take(self) -> tuple[dict[str, Any], float | None]:
        """What was reported since the last call: info to merge and progress."""
        with self._lock:
            info, self._pending = self._pending, {}
            progress, self._progress = self._progress, None
        return info, progress


class Handler(ABC):
    """A model a node serves with Python code: subclass it, and name the class to
    ``inferq node --handler package.module:Class``."""

    def setup(self) -> None:
        """Called once per node process, before the first job (load weights here)."""
        return None

    @abstractmethod
    def predict(self, payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
        """Run one job: ``payload`` as the client submitted it; return its outputs."""
