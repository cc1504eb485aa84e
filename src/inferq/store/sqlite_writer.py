"""The SQLite store's writer: one connection on its own thread, committing writes in groups.

Writes from every request queue up (:class:`Write`) and the writer commits what has
queued in one ``BEGIN IMMEDIATE`` transaction (group commit): each caller's future
resolves only after the COMMIT, so an acknowledged job is on disk, and many concurrent
submits share one fsync. One failing write does not undo the others of its group: a
write of one statement fails whole by itself (SQLite's statement rollback), a write of
several runs in a SAVEPOINT. The writers of the processes on one file take turns
(:class:`WriteTurns`).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import queue
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from inferq.core.errors import Conflict, StoreError, StoreUnavailable
from inferq.core.futures import settle
from inferq.store.sqlite_bus import Bus

#: how many queued writes one transaction takes at most
MAX_GROUP = 512


class Write(NamedTuple):
    """A write for the writer thread: ``fn`` run on its connection, its outcome for
    ``future``. ``single``: ``fn`` runs one statement, which SQLite applies whole or
    not at all, so it needs no savepoint of its own."""

    fn: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any]
    single: bool


class WriteTurns:
    """Takes turns at writing with the other processes on the same file.

    SQLite lets one connection write at a time, and one that finds the file locked
    sleeps and looks again (1, 2, 5, 10 ms and longer: its busy handler). A process
    whose writer commits group after group takes the lock again within microseconds
    of each COMMIT, so another process's writer, asleep when it was free, seldom finds
    it free: with two API processes under load one wrote nearly every submit and the
    other's requests waited up to half a second. A writer therefore holds an exclusive
    ``flock`` on a lock file beside the database around each transaction; the kernel
    wakes a process waiting for it as soon as it is released, before the holder is back
    with its next group. Advisory only: SQLite's own lock still guards the data, and a
    process without it (the CLI) only waits for the lock as before.
    """

    def __init__(self, path: Path) -> None:
        name = path.with_name(f".{path.name}.write-turns")
        self.fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)

    def take(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def give(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)

    def close(self) -> None:
        os.close(self.fd)


class Writer(threading.Thread):
    """Runs write functions on one connection, committing them in groups."""

    def __init__(
        self, conn: sqlite3.Connection, bus: Bus | None = None, turns: WriteTurns | None = None
    ) -> None:
        super().__init__(name="inferq-sqlite-writer", daemon=True)
        self.conn = conn
        self.bus = bus
        self.turns = turns
        if bus is not None:
            bus.install(conn)
        self.inbox: queue.SimpleQueue[Write | None] = queue.SimpleQueue()

    def run(self) -> None:
        while True:
            first = self.inbox.get()
            if first is None:
                return
            group = [first]
            stop = False
            while len(group) < MAX_GROUP:
                try:
                    item = self.inbox.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                group.append(item)
            self._run_group(group)
            if stop:
                return

    def _run_group(self, group: list[Write]) -> None:
        # Each statement that leaves the GIL (a step, a commit) must take it back
        # afterwards, and while the event loop is busy that wait is the interpreter's
        # switch interval (5 ms): so a group runs as few statements as it can.
        outcomes: list[tuple[bool, Any]] = []
        if self.turns is not None:
            self.turns.take()
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            for write in group:
                outcomes.append(self._single(write) if write.single else self._saved(write))
            if self.bus is not None:
                self.bus.take(self.conn)
            self.conn.execute("COMMIT")
            if self.bus is not None:
                self.bus.flush()
        except sqlite3.Error as exc:
            if self.bus is not None:
                self.bus.discard()
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            failure = StoreUnavailable(f"SQLite write failed: {exc}")
            failure.__cause__ = exc
            outcomes = [(False, failure)] * len(group)
        finally:
            if self.turns is not None:
                self.turns.give()
        _deliver(group, outcomes)

    def _single(self, write: Write) -> tuple[bool, Any]:
        """Run a one-statement write: a statement that fails changes nothing, and the
        transaction goes on with the others (SQLite's statement rollback)."""
        before = self.conn.total_changes
        try:
            return True, write.fn(self.conn)
        except Exception as exc:
            if not self.conn.in_transaction or self.conn.total_changes != before:
                # the whole transaction was rolled back, or the statement failed after
                # its changes (reading what it returns): nothing of the group may commit
                raise sqlite3.OperationalError(f"a write failed past its statement: {exc}") from exc
            return False, _wrap(exc)

    def _saved(self, write: Write) -> tuple[bool, Any]:
        """Run a write of several statements in a savepoint: one that fails is undone
        whole (the bus notes it wrote included), the others in the group stay."""
        self.conn.execute("SAVEPOINT w")
        try:
            outcome = write.fn(self.conn)
        except Exception as exc:  # handed to the caller, who re-raises it
            self.conn.execute("ROLLBACK TO w")
            self.conn.execute("RELEASE w")
            return False, _wrap(exc)
        self.conn.execute("RELEASE w")
        return True, outcome


def _wrap(exc: Exception) -> Exception:
    if isinstance(exc, sqlite3.IntegrityError) and exc.sqlite_errorname in _UNIQUE:
        conflict = Conflict(f"already exists: {exc}")
        conflict.__cause__ = exc
        return conflict
    if isinstance(exc, sqlite3.Error):
        wrapped = StoreError(f"SQLite write failed: {exc}")
        wrapped.__cause__ = exc
        return wrapped
    return exc


_UNIQUE = frozenset({"SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY"})


Outcome = tuple[asyncio.Future[Any], bool, Any]


def _deliver(group: list[Write], outcomes: list[tuple[bool, Any]]) -> None:
    """Hand each write's outcome to its future: one callback for all of a loop's (each
    a callback of its own was about 3% of a submit's instructions, on the writer and on
    the event loop)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Outcome]] = {}
    for write, (ok, value) in zip(group, outcomes, strict=True):
        by_loop.setdefault(write.future.get_loop(), []).append((write.future, ok, value))
    for loop, settled in by_loop.items():
        # RuntimeError: the caller's loop has closed, so nobody is waiting.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_settle_all, settled)


def _settle_all(settled: list[Outcome]) -> None:
    for future, ok, value in settled:
        settle(future, ok, value)
