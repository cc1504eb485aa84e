"""Credentials looked up by the digest of their secret, each answer trusted a few seconds.

API keys (:mod:`inferq.core.keys`) and node tokens (:mod:`inferq.core.nodes`) are read
on every request; remembering each answer for ``seconds`` spares the store, and a
revocation reaches every process within that time. Misses are remembered too (a wrong
secret is not read again at once), and the count is bounded: random bad secrets cannot
grow memory without limit.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")

#: answers remembered at most
LIMIT = 10_000


class TimedLookups(Generic[T]):
    def __init__(self, seconds: float, *, clock: Callable[[], float] = time.time) -> None:
        self.seconds = seconds
        self.clock = clock
        self._found: dict[str, tuple[T | None, float]] = {}

    async def get(self, digest: str, load: Callable[[str], Awaitable[T | None]]) -> T | None:
        """What ``digest`` names: remembered, or ``load(digest)``."""
        now = self.clock()
        cached = self._found.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]
        found = await load(digest)
        if len(self._found) >= LIMIT:
            self._found.clear()
        self._found[digest] = (found, now + self.seconds)
        return found

    def clear(self) -> None:
        self._found.clear()
