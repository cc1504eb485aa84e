"""Group commit for a database that commits notifying transactions one at a time.

PostgreSQL's NOTIFY triggers make it commit such transactions one after another,
each with its own WAL flush: one statement per call would cap a process at one
commit per flush. A :class:`Group` joins concurrent calls of one write into one
statement instead.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

from inferq.core.errors import Conflict, StoreError, StoreUnavailable

P = TypeVar("P")
R = TypeVar("R")

#: most calls one grouped statement takes
GROUP_LIMIT = 256


class Group(Generic[P, R]):
    """Group commit: concurrent calls of one write, run as one statement.

    A call made while none of the group's statements is in flight starts one at
    once, alone (the same statement and latency as without grouping); calls made
    while one is in flight wait for it and then go together in the next. Each call
    still returns only once the statement holding its row has committed.

    ``many`` writes the items of a batch in one statement and returns their
    outcomes (a value or an exception) in order; ``one`` writes a single item. A
    batch of one goes through ``one``; when ``many`` fails on a bad item (nothing
    was written), each item goes alone, so that only the bad one fails. ``key``
    keeps two items with the same key out of one batch.
    """

    def __init__(
        self,
        *,
        one: Callable[[P], Awaitable[R]],
        many: Callable[[list[P]], Awaitable[Sequence[R | Exception]]],
        key: Callable[[P], Hashable] | None = None,
    ) -> None:
        self._one = one
        self._many = many
        self._key = key
        self._waiting: list[tuple[P, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None

    async def __call__(self, item: P) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._task is None:
            self._task = asyncio.create_task(self._drain())
        return await future

    def _take(self) -> list[tuple[P, asyncio.Future[R]]]:
        """The next batch: waiting calls in arrival order, at most one per key."""
        batch: list[tuple[P, asyncio.Future[R]]] = []
        later: list[tuple[P, asyncio.Future[R]]] = []
        keys: set[Hashable] = set()
        for entry in self._waiting:
            if entry[1].done():  # its caller was cancelled before its turn: not written
                continue
            key = self._key(entry[0]) if self._key is not None else None
            if len(batch) >= GROUP_LIMIT or (key is not None and key in keys):
                later.append(entry)
            else:
                keys.add(key)
                batch.append(entry)
        self._waiting = later
        return batch

    async def _run(self, items: list[P]) -> Sequence[R | Exception]:
        """Each item's outcome, or the error it alone would have met."""
        if len(items) > 1:
            try:
                return await self._many(items)
            except StoreUnavailable:
                raise
            except (Conflict, StoreError):
                pass  # nothing was written; each alone below
        outcomes: list[R | Exception] = []
        for item in items:
            try:
                outcomes.append(await self._one(item))
            except (Conflict, StoreError) as exc:
                outcomes.append(exc)
        return outcomes

    async def _drain(self) -> None:
        batch: list[tuple[P, asyncio.Future[R]]] = []
        try:
            while batch := self._take():
                outcomes: Sequence[R | Exception]
                try:
                    outcomes = await self._run([item for item, _ in batch])
                except Exception as exc:
                    outcomes = _each(exc, len(batch))
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    if future.done():
                        continue
                    if isinstance(outcome, Exception):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
        except BaseException:  # cancelled: the event loop is going away
            for _, future in batch + self._waiting:
                future.cancel()
            self._waiting = []
            raise
        finally:
            self._task = None


def _each(exc: Exception, n: int) -> list[Exception]:
    """``exc`` for the first of ``n`` callers and a copy for each other (each raises its own)."""
    copies = [exc]
    for _ in range(n - 1):
        twin = copy.copy(exc)
        twin.__cause__ = exc.__cause__
        copies.append(twin)
    return copies
