"""Domain objects: immutable snapshots, changed with :func:`dataclasses.replace`.

The dialects translate their wire formats to and from these; the store persists
them; the engines consume :class:`ChatRequest` and produce :class:`ChatResult`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from inferq.core.states import JobState, ServiceClass

ROLES = frozenset({"system", "user", "assistant", "tool", "developer"})


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str
    content: str

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A chat completion request, free of any dialect's field names."""

    messages: tuple[ChatMessage, ...]
    #: None: as many as the context allows
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["messages"] = [m.to_dict() for m in self.messages]
        data["stop"] = list(self.stop)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChatRequest:
        values = dict(data)
        values["messages"] = tuple(ChatMessage(**m) for m in data["messages"])
        values["stop"] = tuple(data.get("stop", ()))
        return cls(**values)


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class ChatResult:
    """What an engine produced for one chat request."""

    text: str
    finish_reason: str
    usage: Usage

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "finish_reason": self.finish_reason,
            "usage": dataclasses.asdict(self.usage),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChatResult:
        return cls(
            text=data["text"],
            finish_reason=data["finish_reason"],
            usage=Usage(**data["usage"]),
        )


@dataclass(frozen=True, slots=True)
class JobError:
    code: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    """One unit of work a client submitted and a worker leases."""

    id: str
    tenant: str
    model: str
    #: the API that accepted the job ("together", "infera", "openai")
    origin: str
    service_class: ServiceClass
    priority: int
    state: JobState
    request: ChatRequest
    created_at: float
    #: client metadata (Together's ``info``); the system adds ``progress`` and ``error``
    info: dict[str, Any] = field(default_factory=dict)
    #: the request as the client sent it, for dialects that echo it back
    inputs: dict[str, Any] | None = None
    result: ChatResult | None = None
    error: JobError | None = None
    usage: Usage = Usage()
    #: number of times a worker has claimed the job
    attempt: int = 0
    max_attempts: int = 4
    owner: str | None = None
    lease_expires_at: float | None = None
    claimed_at: float | None = None
    finished_at: float | None = None
    #: wall-clock time after which the job is cancelled (sync requests)
    deadline_at: float | None = None
    #: monotonic submission order, assigned by the store
    seq: int = 0

    def evolve(self, **changes: Any) -> Job:
        return dataclasses.replace(self, **changes)

    @property
    def retries(self) -> int:
        return max(0, self.attempt - 1)


@dataclass(frozen=True, slots=True)
class Lease:
    """Proof that a worker holds a job: every fenced update carries it."""

    job_id: str
    owner: str
    attempt: int


@dataclass(frozen=True, slots=True)
class QueueMetrics:
    running: int
    waiting: int
    total: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiKey:
    id: str
    name: str
    tenant: str
    prefix: str
    created_at: float
    revoked_at: float | None = None
    admin: bool = False


@dataclass(frozen=True, slots=True)
class JobFilter:
    """What ``list_jobs`` selects; None means any."""

    tenant: str | None = None
    model: str | None = None
    states: frozenset[JobState] | None = None
    limit: int = 100
