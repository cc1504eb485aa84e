"""Credentials looked up by the digest of their secret, each answer trusted a few seconds.

API keys (:mod:`inferq.core.keys`) and node tokens (:mod:`inferq.core.nodes`) are read
on every request; remembering each answer for ``seconds`` spares the store, and a
revocation reaches every process within that time. Misses are remembered too (a wrong
secret is not read again at once), and the count is bounded: random bad secrets cannot
grow memory without limit. Requests that miss together share one read: when an answer
expires under load, every request in flight asks at once (64 connections: 64 reads,
each a turn of a reader thread), and one read serves them all.

:class:`TimedValue` is the same for one value read as a whole: the nodes and what they
serve (:meth:`inferq.core.nodes.NodeService.serving`), which every sync request for a
model that nodes run asks about.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Generic, TypeVar

T = TypeVar("T")

#: answers remembered at most
LIMIT = 10_000


class TimedLookups(Generic[T]):
    def __init__(self, seconds: float, *, clock: Callable[[], float] = time.time) -> None:
        self.seconds = seconds
        self.clock = clock
        self._found: dict[str, tuple[T | None, float]] = {}
        # the reads under way, by digest; a caller that misses while one is joins it
        self._reading: dict[str, asyncio.Future[T | None]] = {}

    async def get(self, digest: str, load: Callable[[str], Awaitable[T | None]]) -> T | None:
        """What ``digest`` names: remembered, or ``load(digest)`` (one read for all the
        callers that miss while it runs)."""
        now = self.clock()
        cached = self._found.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]
        read = self._reading.get(digest)
        if read is None:
            read = self._reading[digest] = asyncio.ensure_future(load(digest))
            read.add_done_callback(partial(self._read, digest, now))
        # a caller that is cancelled leaves the read to the others
        return await asyncio.shield(read)

    def _read(self, digest: str, started: float, read: asyncio.Future[T | None]) -> None:
        if self._reading.get(digest) is not read:
            return  # cleared while it ran: its answer may be older than the clearing
        del self._reading[digest]
        if read.cancelled() or read.exception() is not None:
            return  # not remembered: the next caller reads again
        if len(self._found) >= LIMIT:
            self._found.clear()
        self._found[digest] = (read.result(), started + self.seconds)

    def clear(self) -> None:
        """Forget every answer, and the reads under way (they may have read what was
        just changed): the next caller of each digest reads again."""
        self._found.clear()
        self._reading.clear()


class TimedValue(Generic[T]):
    """One value, read with ``load`` at most once every ``seconds``.

    Callers that come while a read is under way share it (many requests at once cost
    one read), and a read that failed is not remembered: the next caller reads again.
    """

    def __init__(
        self,
        seconds: float,
        load: Callable[[], Awaitable[T]],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.seconds = seconds
        self.load = load
        self.clock = clock
        self._read: asyncio.Future[T] | None = None
        self._until = 0.0

    async def get(self) -> T:
        """The value: remembered, or read now."""
        now = self.clock()
        read = self._read
        if read is None or now >= self._until or _failed(read):
            read = self._read = asyncio.ensure_future(self.load())
            self._until = now + self.seconds
        # a caller that is cancelled leaves the read to the others
        return await asyncio.shield(read)

    def clear(self) -> None:
        """Forget the value: the next caller reads it again."""
        self._read = None


def _failed(read: asyncio.Future[T]) -> bool:
    return read.done() and (read.cancelled() or read.exception() is not None)
