"""The Engine port: run chat requests on a model.

Adapters: :mod:`inferq.engines.fake` (deterministic, for tests and queue
benchmarks) and :mod:`inferq.engines.llamacpp` (the embedded default). The
runner keeps ``slots`` requests in flight per engine; an engine may block a
thread per request, but ``generate`` itself is a coroutine.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from inferq.core.errors import InvalidRequest
from inferq.core.models import ChatRequest, ChatResult

#: called with each new piece of generated text, on the event loop
TextCallback = Callable[[str], None]

#: the finish_reason of a generation stopped by :class:`AbortSignal`
ABORTED = "aborted"


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelSpec:
    """One entry of the models file."""

    name: str
    engine: str
    context_length: int = 2048
    slots: int = 1
    #: engine-specific settings (path, threads, token delay, ...)
    options: dict[str, Any] = field(default_factory=dict)


class AbortSignal:
    """Set from any thread to stop a generation; engines check it every token."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""

    def set(self, reason: str = "cancelled") -> None:
        self.reason = reason
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()


class Engine(ABC):
    """A loaded model that generates chat completions."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec

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

    def check(self, request: ChatRequest) -> None:
        """Reject, before queueing, a request this model can never run."""
        if request.max_tokens is not None and request.max_tokens >= self.spec.context_length:
            raise InvalidRequest(
                f"max_tokens ({request.max_tokens}) must be below the context length "
                f"of {self.spec.name} ({self.spec.context_length})",
                param="max_tokens",
            )

    @abstractmethod
    async def generate(
        self,
        request: ChatRequest,
        *,
        abort: AbortSignal,
        on_text: TextCallback | None = None,
    ) -> ChatResult:
        """Run ``request``; return the whole result.

        Stops within one token once ``abort`` is set and then returns a result
        whose ``finish_reason`` is :data:`ABORTED`. Raises
        :class:`~inferq.core.errors.PromptTooLong` when the prompt does not fit.
        """
