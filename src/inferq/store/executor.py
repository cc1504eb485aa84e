"""The Executor port: how :class:`~inferq.store.sql_store.SqlStore` talks to one database.

In the manner of procrastinate's connector: the store names a query (of
``sql/common.sql`` or the database's ``queries.sql``) and gives its parameters as a
mapping; the executor runs it and hands back rows (read by column name), one row or a
row count. Whatever differs between databases stays behind it: connections and
threads, turning ``:name`` parameters into the driver's, encoding list parameters (a
JSON array for SQLite, an array for PostgreSQL), and mapping driver errors onto the
store's (a unique violation is :class:`~inferq.core.errors.Conflict`, a lost database
:class:`~inferq.core.errors.StoreUnavailable`, anything else
:class:`~inferq.core.errors.StoreError`).

A few statements that must happen together are written once, as a generator of
:class:`Step` s (see :meth:`Executor.atomic`): each ``yield`` runs one statement and
gets its outcome back, and the executor runs them all in one transaction, on
whatever connection and thread its database needs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Literal, Protocol, TypeAlias, TypeVar

from inferq.core.events import TextRelay
from inferq.store.rows import Row

T = TypeVar("T")
Params: TypeAlias = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Step:
    """One statement of an atomic unit, and what it gives back: ``one`` row (or None),
    ``all`` rows, or the ``count`` of rows it changed."""

    query: str
    params: Params
    result: Literal["one", "all", "count"]


#: an atomic unit: yields steps, receives each one's outcome, returns its value
Steps: TypeAlias = Generator[Step, Any, T]


def one(query: str, params: Params) -> Step:
    return Step(query, params, "one")


def many(query: str, params: Params) -> Step:
    return Step(query, params, "all")


def count(query: str, params: Params) -> Step:
    return Step(query, params, "count")


class Executor(Protocol):
    """Runs the named queries of one database."""

    async def open(self) -> None:
        """Connect and bring the schema up to date."""

    async def close(self) -> None:
        """Release every connection."""

    async def fetch_one(self, query: str, params: Params) -> Row | None:
        """The first row the query returns, or None."""

    async def fetch_all(self, query: str, params: Params) -> list[Row]:
        """Every row the query returns."""

    async def execute(self, query: str, params: Params) -> int:
        """Run a write; return how many rows it changed."""

    async def atomic(self, steps: Steps[T]) -> T:
        """Run every step of ``steps`` in one transaction; return its value.

        Nothing of it is kept when a step raises (the error is raised here).
        """

    async def listen(
        self, *, on_submitted: Callable[[], None], on_ended: Callable[[str], None]
    ) -> bool:
        """Deliver other processes' events; False when the database has no channel."""

    @property
    def relay(self) -> TextRelay | None:
        """Generated text relayed between the processes on this database, once its
        channel is open (None: no channel)."""


@dataclass(frozen=True, slots=True)
class _Done(Generic[T]):
    value: T


def _advance(steps: Steps[T], outcome: Any) -> Step | _Done[T]:
    """Hand ``outcome`` to ``steps``; their next step, or their value once they end."""
    try:
        return steps.send(outcome)
    except StopIteration as done:
        return _Done(done.value)


def drive(steps: Steps[T], run: Callable[[Step], Any]) -> T:
    """Run ``steps`` to their end, each with ``run`` (on a thread holding a connection)."""
    with contextlib.closing(steps):
        step = _advance(steps, None)
        while isinstance(step, Step):
            step = _advance(steps, run(step))
        return step.value


async def drive_async(steps: Steps[T], run: Callable[[Step], Awaitable[Any]]) -> T:
    """:func:`drive` for a driver whose statements are awaited."""
    with contextlib.closing(steps):
        step = _advance(steps, None)
        while isinstance(step, Step):
            step = _advance(steps, await run(step))
        return step.value
