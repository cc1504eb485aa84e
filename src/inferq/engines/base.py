"""The Engine port: run chat or embedding requests on a model.

Adapters: :mod:`inferq.engines.fake` (deterministic, for tests and queue
benchmarks) and :mod:`inferq.engines.llamacpp` (the embedded default). The
runner keeps ``slots`` requests in flight per engine; an engine may block a
thread per request, but ``generate`` and ``embed`` themselves are coroutines.

A model serves either chat (``generate``) or embeddings (``embed``): a spec
whose option ``embedding`` is true is an embedding model (:func:`is_embedding`).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from inferq.core.errors import ConfigError, InvalidRequest
from inferq.core.events import cancel_and_wait, wait_event
from inferq.core.states import ServiceClass
from inferq.core.work import (
    ChatRequest,
    ChatResult,
    EmbedRequest,
    EmbedResult,
    PayloadRequest,
    Request,
)

T = TypeVar("T")

#: called with each new piece of generated text, on the event loop
TextCallback = Callable[[str], None]

#: the finish_reason of a generation stopped by :class:`AbortSignal`
ABORTED = "aborted"

#: the distance between two service classes on the :func:`urgency` scale
URGENCY_CLASS_STEP = 1_000_000


def urgency(service_class: ServiceClass, priority: int) -> int:
    """The ``priority`` engines get: one number, higher is more urgent.

    The service class comes first (interactive above async jobs above batch rows),
    then the job's own priority (higher first, clamped to stay inside its class).
    An upstream engine turns it into the convention of the server it calls.
    """
    bound = URGENCY_CLASS_STEP // 2 - 1
    rank = int(ServiceClass.BATCH) - int(service_class)
    return rank * URGENCY_CLASS_STEP + max(-bound, min(bound, priority))


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelSpec:
    """One entry of the models file."""

    name: str
    engine: str
    context_length: int = 2048
    slots: int = 1
    #: engine-specific settings (path, threads, token delay, ...)
    options: dict[str, Any] = field(default_factory=dict)


def is_embedding(spec: ModelSpec) -> bool:
    """Whether ``spec`` describes an embedding model (option ``embedding = true``)."""
    value = spec.options.get("embedding", False)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ConfigError(f"model {spec.name!r}: the option embedding is true or false, not {value!r}")


class AbortSignal:
    """Set from any thread to stop a generation; engines check it every token."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._wakers: list[Callable[[], None]] = []
        self.reason = ""

    def set(self, reason: str = "cancelled") -> None:
        self.reason = reason
        with self._lock:
            self._event.set()
            wakers, self._wakers = self._wakers, []
        for wake in wakers:
            wake()

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait without blocking the event loop until the signal is set or ``timeout``
        seconds pass; return whether it is set."""
        loop = asyncio.get_running_loop()
        woken = asyncio.Event()

        def wake() -> None:
            with contextlib.suppress(RuntimeError):  # that loop has closed
                loop.call_soon_threadsafe(woken.set)

        with self._lock:
            if self._event.is_set():
                return True
            self._wakers.append(wake)
        try:
            await wait_event(woken, timeout)
        finally:
            with self._lock, contextlib.suppress(ValueError):
                self._wakers.remove(wake)
        return self.is_set()


@dataclass(frozen=True, slots=True)
class Call:
    """One call of :meth:`Engine.generate` or :meth:`Engine.embed`, as an engine runs it:
    the signal that stops it, where its text goes, and its priority."""

    abort: AbortSignal
    on_text: TextCallback | None = None
    priority: int | None = None


class Engine(ABC):
    """A loaded model that generates chat completions or embeds texts.

    :meth:`generate` and :meth:`embed` refuse a request of the other kind; an adapter
    implements ``_generate`` (a chat model) or ``_embed`` (an embedding model).
    """

    #: whether the engine continues a plain text prompt (``ChatRequest.prompt``)
    completes_text = False

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self._embeds = is_embedding(spec)

    #: whether this process runs the model's jobs (False: nodes elsewhere claim them)
    runs_here: bool = True

    @property
    def slots(self) -> int:
        """How many requests this engine runs at once."""
        return self.spec.slots

    @abstractmethod
    async def start(self) -> None:
        """Load the model; after this, ``generate`` works."""

    @abstractmethod
    async def close(self) -> None:
        """Free the model."""

    @property
    @abstractmethod
    def ready(self) -> bool:
        """Whether the model is loaded."""

    def check(self, request: Request) -> None:
        """Reject, before queueing, a request this model can never run."""
        if isinstance(request, PayloadRequest):
            raise InvalidRequest(
                f"model {self.spec.name} takes chat or embeddings requests, not a freeform "
                "payload (only a model that nodes serve with a handler does)",
                param="model",
            )
        if isinstance(request, EmbedRequest) != self.embeds:
            raise self._wrong_kind()
        if isinstance(request, EmbedRequest):
            return
        if request.prompt is not None and not self.completes_text:
            raise InvalidRequest(
                f"model {self.spec.name} serves chat only: its engine does not continue "
                "plain text prompts",
                param="model",
            )
        if request.max_tokens is not None and request.max_tokens >= self.spec.context_length:
            raise InvalidRequest(
                f"max_tokens ({request.max_tokens}) must be below the context length "
                f"of {self.spec.name} ({self.spec.context_length})",
                param="max_tokens",
            )

    async def generate(
        self,
        request: ChatRequest,
        *,
        abort: AbortSignal,
        on_text: TextCallback | None = None,
        priority: int | None = None,
    ) -> ChatResult:
        """Run ``request``; return the whole result.

        Stops within one token once ``abort`` is set and then returns a result
        whose ``finish_reason`` is :data:`ABORTED`. Raises
        :class:`~inferq.core.errors.PromptTooLong` when the prompt does not fit.
        ``priority`` (higher is more urgent; see :func:`urgency`) is for engines
        that schedule requests themselves; the others ignore it.
        """
        if self.embeds:
            raise self._wrong_kind()
        return await self._generate(request, Call(abort, on_text, priority))

    @abstractmethod
    async def _generate(self, request: ChatRequest, call: Call) -> ChatResult:
        """:meth:`generate` on a chat model."""

    async def count_tokens(self, request: ChatRequest) -> int:
        """The prompt tokens ``request`` would take (its messages through the chat
        template and the tokenizer), without generating; InvalidRequest where the
        engine cannot count them."""
        if self.embeds:
            raise self._wrong_kind()
        raise InvalidRequest(
            f"model {self.spec.name} cannot count tokens: its engine has no tokenizer here",
            param="model",
        )

    @property
    def embeds(self) -> bool:
        """Whether this model serves embeddings (``embed``) rather than chat."""
        return self._embeds

    @property
    def dimensions(self) -> int | None:
        """The length of this embedding model's vectors; None when not known yet
        (a model that is not loaded) or for a chat model."""
        return None

    async def embed(
        self, request: EmbedRequest, *, abort: AbortSignal, priority: int | None = None
    ) -> EmbedResult:
        """Embed every input of ``request``; one L2-normalised vector each, in order.

        Checks ``abort`` between inputs; once it is set, returns at once with the
        vectors of the inputs done so far (fewer than the inputs). Raises
        :class:`~inferq.core.errors.PromptTooLong` when an input does not fit.
        ``priority``: as for :meth:`generate`.
        """
        if not self.embeds:
            raise self._wrong_kind()
        return await self._embed(request, Call(abort, priority=priority))

    @abstractmethod
    async def _embed(self, request: EmbedRequest, call: Call) -> EmbedResult:
        """:meth:`embed` on an embedding model."""

    def _wrong_kind(self) -> InvalidRequest:
        """The error for a request of the kind this model does not serve."""
        serves, other = ("embeddings", "chat") if self.embeds else ("chat", "embeddings")
        return InvalidRequest(f"model {self.spec.name} serves {serves}, not {other}", param="model")


def normalise(vector: Sequence[float]) -> tuple[float, ...]:
    """``vector`` scaled to unit L2 norm (a zero vector stays zero)."""
    norm = math.sqrt(math.fsum(x * x for x in vector))
    if norm == 0.0:
        return tuple(float(x) for x in vector)
    return tuple(float(x) / norm for x in vector)


async def unless_aborted(abort: AbortSignal, work: Awaitable[T]) -> T | None:
    """The result of ``work``, or None when ``abort`` is set first: then ``work`` is
    cancelled, which closes any upstream response it has open."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(abort.wait())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            await cancel_and_wait(task)
    if task.cancelled():
        return None
    return task.result()
