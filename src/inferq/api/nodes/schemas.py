"""The node protocol's wire models (version 1; docs/nodes.md)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

#: a node process's own id, chosen at its start
Session = Field(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
#: the largest attempt number (the store's attempt column is a 32-bit integer)
MAX_ATTEMPT = 2**31 - 1


class Strict(BaseModel):
    """Unknown fields are refused: a node speaking another version hears it at once."""

    model_config = ConfigDict(extra="forbid")


class Hello(Strict):
    protocol: int = Field(ge=1)
    session: str = Session
    version: str = Field(default="", max_length=64)
    #: the models it runs, and how many jobs of each at once
    models: dict[str, int] = Field(min_length=1, max_length=256)


class Claim(Strict):
    session: str = Session
    #: free slots per model
    free: dict[str, int] = Field(max_length=256)
    #: how long to wait for work, seconds
    wait: float = Field(default=10.0, ge=0, le=60)
    #: jobs the node runs now
    running: int = Field(default=0, ge=0, le=100_000)
    #: the least urgent service class to claim (a busy node waiting for work urgent
    #: enough to preempt one of its jobs asks for the classes above that job's)
    max_class: Literal["interactive", "async", "batch"] = "batch"


class JobBeat(Strict):
    id: str = Field(min_length=1, max_length=128)
    attempt: int = Field(ge=1, le=MAX_ATTEMPT)
    info: dict[str, Any] = Field(default_factory=dict)
    progress: float | None = Field(default=None, ge=0, le=1)
    text: list[str] = Field(default_factory=list, max_length=100_000)


class Heartbeat(Strict):
    session: str = Session
    jobs: list[JobBeat] = Field(max_length=10_000)


class Complete(Strict):
    session: str = Session
    id: str = Field(min_length=1, max_length=128)
    attempt: int = Field(ge=1, le=MAX_ATTEMPT)
    result: dict[str, Any]
    #: streamed text not yet sent in a heartbeat: relayed before the job ends
    text: list[str] = Field(default_factory=list, max_length=100_000)
    #: info not yet sent in a heartbeat: merged into the job's info
    info: dict[str, Any] = Field(default_factory=dict)


class Failure(Strict):
    code: str = Field(min_length=1, max_length=64)
    message: str = Field(max_length=10_000)


class Fail(Strict):
    session: str = Session
    id: str = Field(min_length=1, max_length=128)
    attempt: int = Field(ge=1, le=MAX_ATTEMPT)
    error: Failure
    #: false: the job fails now (the handler raised JobFailed); true: it runs again while
    #: attempts remain
    retry: bool = True
    #: info not yet sent in a heartbeat: merged into the job's info
    info: dict[str, Any] = Field(default_factory=dict)


class Outcome(Strict):
    """One ended attempt: its ``result``, or its ``error``."""

    id: str = Field(min_length=1, max_length=128)
    attempt: int = Field(ge=1, le=MAX_ATTEMPT)
    result: dict[str, Any] | None = None
    error: Failure | None = None
    retry: bool = True
    text: list[str] = Field(default_factory=list, max_length=100_000)
    info: dict[str, Any] = Field(default_factory=dict)


class Results(Strict):
    session: str = Session
    results: list[Outcome] = Field(min_length=1, max_length=10_000)
    #: free slots per model to claim for in the same request (without waiting)
    free: dict[str, int] = Field(default_factory=dict, max_length=256)
    running: int = Field(default=0, ge=0, le=100_000)


class Held(Strict):
    id: str = Field(min_length=1, max_length=128)
    attempt: int = Field(ge=1, le=MAX_ATTEMPT)


class Release(Strict):
    session: str = Session
    jobs: list[Held] = Field(max_length=10_000)


class Bye(Strict):
    session: str = Session
