"""One engine's claims in a worker: who claims for it, and whether looking is worth it.

Two parties claim jobs for an engine: the worker's claim loop, and a submit that stores
a sync job together with the claim the worker would make next (an :class:`Offer`, see
:meth:`inferq.runner.worker.Worker.offer`). They take turns, one claim at a time, so
that together they never claim more jobs than the engine has free slots.

The loop is woken when work is submitted and when a slot frees. A freed slot alone is
no reason to ask the store again when the last claim found nothing and nothing was
submitted since (:attr:`EngineClaims.dry`): each sync job would otherwise cost a claim
transaction after its end. The loop's poll still looks (expired leases, lost events).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from inferq.core.events import wait_event
from inferq.core.models import Job
from inferq.core.ports import ClaimOrder
from inferq.engines.base import Engine


@dataclass(eq=False, kw_only=True)
class EngineClaims:
    engine: Engine
    #: the loop's wake-up: set when work is submitted and when a slot of the engine frees
    waker: asyncio.Event
    #: set when work is submitted (here, or in another process that tells this one)
    submitted: asyncio.Event
    #: a claim for the engine is under way (the loop's or an offer's)
    claiming: bool = False
    #: set whenever a claim ends
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    #: the loop waits for an offer to end
    deferred: bool = False
    #: the last claim found nothing, and nothing was submitted since
    dry: bool = False
    #: when that claim was made (monotonic clock)
    looked_at: float = 0.0

    @property
    def name(self) -> str:
        return self.engine.spec.name

    def begin(self) -> None:
        self.claiming = True

    def over(self) -> None:
        self.claiming = False
        self.ended.set()

    def news(self) -> None:
        """Take note of work submitted since the last look: the queue may hold some."""
        if self.submitted.is_set():
            self.submitted.clear()
            self.dry = False

    async def turn(self, patience: float) -> bool:
        """Wait until no claim is under way; False after ``patience`` seconds of waiting."""
        while self.claiming:
            self.ended.clear()
            if not await wait_event(self.ended, patience):
                return False
        return True


@dataclass(frozen=True, slots=True, kw_only=True)
class Offer:
    """A worker's next claim for one engine, handed to a submit to make with its insert
    (:class:`inferq.core.service.Offer`)."""

    claims: EngineClaims
    order: ClaimOrder
    #: starts the jobs the claim took
    start: Callable[[Sequence[Job]], None]

    def done(self, claimed: Sequence[Job]) -> None:
        """Start the jobs the claim took (none when the insert failed); the offer ends, and
        the loop goes on if it waited for it."""
        self.claims.over()
        self.start(claimed)
        if self.claims.deferred:
            self.claims.deferred = False
            self.claims.waker.set()
