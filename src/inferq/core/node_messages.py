"""What nodes and the server say to each other in the node protocol: its version, the
server's limits, a heartbeat's running jobs, a lease as a node names it, how an attempt
ended, and the refusal of a write whose lease is gone. The server's side of the protocol
is :mod:`inferq.core.node_work` (and :mod:`inferq.core.node_pull` for nodes that pull one
job at a time); the node's is :mod:`inferq.worker`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, runtime_checkable

from inferq.core.errors import ClientError, Conflict, InvalidRequest, NotFound, PayloadTooLarge
from inferq.core.models import Job, JobError, Lease
from inferq.core.work import Result

#: the protocol's version; a node names the one it speaks in its hello
PROTOCOL = 1


@dataclass(frozen=True, slots=True)
class NodeLimits:
    lease_seconds: float = 30.0
    #: how often a node sends heartbeats while it runs jobs (cancels reach it this fast)
    heartbeat_seconds: float = 0.5
    #: the longest a claim waits for work
    max_wait: float = 30.0
    #: the largest result (its JSON), and the largest output file
    max_output_bytes: int = 1024 * 1024
    max_file_bytes: int = 100 * 1024 * 1024

    @property
    def seen_within(self) -> float:
        """How recently a node must have been seen to count as connected.

        A live node is heard from at least every :attr:`max_wait` seconds: an idle one's
        claim waits up to that long for work and its next claim notes it, a busy one
        sends a heartbeat every :attr:`heartbeat_seconds` (each noted at most once a
        second: :data:`inferq.core.nodes.TOUCH_EVERY`). Twice that leaves a whole wait of
        margin for that second, the round trips, a node's backoff after a failed claim
        (up to 10 s) and the clocks of several API servers; the lease plays no part (a
        short one must not make a waiting node look gone).
        """
        return 2 * max(self.max_wait, self.heartbeat_seconds)


@dataclass(frozen=True, slots=True)
class Beat:
    """One running job in a heartbeat."""

    job_id: str
    attempt: int
    #: merged into the job's info
    info: dict[str, Any] = field(default_factory=dict)
    progress: float | None = None
    #: pieces of streamed text since the last heartbeat, in order
    text: tuple[str, ...] = ()


class Held(NamedTuple):
    """A lease as a node names it: its session (the owner is
    ``node:<node id>:<session>``), the job, and the attempt it claimed."""

    session: str
    job_id: str
    attempt: int


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt ended, as a node reports it: its ``result``, or its ``error``
    (retried while attempts remain when ``retry``), with the last text and info."""

    held: Held
    result: dict[str, Any] | None = None
    error: JobError | None = None
    retry: bool = True
    text: tuple[str, ...] = ()
    info: dict[str, Any] = field(default_factory=dict)


def raise_refused(fate: dict[str, Any]) -> None:
    """Raise the error a :meth:`NodeWork.report` fate names, unless it is ``ok``."""
    if not fate["ok"]:
        cls = next(
            (c for c in (LeaseLost, NotFound, PayloadTooLarge) if c.code == fate["code"]),
            InvalidRequest,
        )
        raise cls(fate["message"], param="job_id")


def refused(job_id: str, exc: ClientError) -> dict[str, Any]:
    """The fate of a result that was not taken: the error's code and message (what
    :func:`raise_refused` raises again)."""
    return {"id": job_id, "ok": False, "code": exc.code, "message": exc.message}


#: an outcome recorded with others in one write: its place in the report, the job as
#: this process handed it out, its lease, its result parsed, and its last text
Quick = tuple[int, Job, Lease, Result, Sequence[str]]


def sort_outcomes(
    outcomes: Sequence[Outcome],
    handed_to: Callable[[Held], tuple[Job, Lease] | None] | None,
    parse: Callable[[Job, dict[str, Any]], Result],
) -> tuple[list[Quick], list[int], list[dict[str, Any] | None]]:
    """Sort a node's report: the plain results of jobs this process handed out
    (``handed_to`` finds them; None when the store cannot record several in one write)
    go to the store together; the rest (failures, info to merge, leases this process
    does not know, a job named twice) are recorded one by one, listed by their places.
    Also each outcome's fate where it is known already: a result ``parse`` refused."""
    fates: list[dict[str, Any] | None] = [None] * len(outcomes)
    quick: list[Quick] = []
    rest: list[int] = []
    ids: set[str] = set()
    for i, outcome in enumerate(outcomes):
        held, result = outcome.held, outcome.result
        plain = result is not None and outcome.error is None and not outcome.info
        found = None
        if handed_to is not None and plain and held.job_id not in ids:
            found = handed_to(held)
        if found is None or result is None:
            rest.append(i)
            continue
        ids.add(held.job_id)
        job, lease = found
        try:
            quick.append((i, job, lease, parse(job, result), outcome.text))
        except ClientError as exc:
            fates[i] = refused(held.job_id, exc)
    return quick, rest, fates


@runtime_checkable
class LeaseCompletes(Protocol):
    """A store that records several results in one write (a node reports a batch)."""

    async def complete_leases(
        self, done: Sequence[tuple[Lease, Result]], *, now: float
    ) -> list[bool]:
        """Complete the job of each lease (distinct jobs) with its result, each fenced as
        :meth:`~inferq.core.ports.JobQueue.complete` is; whether each one held."""
        ...


class LeaseLost(Conflict):
    """The job is no longer running under this lease (cancelled, expired, re-claimed or
    finished); nothing was changed."""

    code = "lease_lost"
