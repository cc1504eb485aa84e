"""Wake-ups between the processes that share one SQLite file: SQLite's LISTEN/NOTIFY.

PostgreSQL tells every process when a job is submitted or ends (the tables' NOTIFY
triggers). SQLite has no such channel, so without one a process learns of another's
work only when it next polls. Every process on a SQLite file is on one machine, so a
local datagram is enough:

* Each :class:`Bus` binds a Unix datagram socket in Linux's abstract namespace (no
  file, no path-length limit) and leaves an empty marker file named after it in
  ``<database>.events/``, which is how the others find it.
* TEMP triggers on this process's writer connection call :meth:`Bus.collect` for each
  inserted job (``submitted``) and each job that reaches a final state (``ended``,
  with its id), as PostgreSQL's triggers do; after the transaction commits,
  :meth:`Bus.flush` sends what was collected to every other process's socket, and a
  rollback drops it (:meth:`Bus.discard`).
* A process that listens reads its socket on the event loop and calls the store's
  ``on_submitted`` / ``on_ended`` callbacks.

Wake-ups are hints, exactly as on PostgreSQL: the store is the truth, every waiter
still polls, so a lost datagram (a full socket buffer, a process starting up) only
costs the poll interval. A marker whose process is gone is removed by the first sender
that finds nobody listening. On systems without the abstract namespace (not Linux) the
bus is off and processes fall back to polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("inferq.store")

#: the datagram that says "jobs were submitted"; ``e<id>`` says a job ended
SUBMITTED = b"s"
ENDED = b"e"
#: how many ended ids one datagram carries at most (ids are short; keeps datagrams small)
IDS_PER_DATAGRAM = 64
#: how long the peer list is trusted before the marker folder is read again (seconds)
PEERS_TTL = 1.0

TRIGGERS = (
    "CREATE TEMP TRIGGER IF NOT EXISTS inferq_bus_submitted AFTER INSERT ON main.jobs "
    "BEGIN SELECT inferq_bus('s', NULL); END",
    "CREATE TEMP TRIGGER IF NOT EXISTS inferq_bus_ended AFTER UPDATE OF state ON main.jobs "
    "WHEN NEW.state IN ('succeeded', 'failed', 'cancelled', 'expired') "
    "AND OLD.state IS NOT NEW.state "
    "BEGIN SELECT inferq_bus('e', NEW.id); END",
)


def available() -> bool:
    return sys.platform.startswith("linux")


class Bus:
    """This process's end of the wake-up channel of one SQLite database."""

    def __init__(self, database: Path) -> None:
        self.folder = Path(f"{database}.events")
        self.name = f"inferq-{secrets.token_hex(8)}"
        self._sock: socket.socket | None = None
        self._submitted = False
        self._ended: list[str] = []
        self._peers: list[str] = []
        self._peers_read = float("-inf")
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- the writer thread: collect during a transaction, send after it commits ---------

    def install(self, conn: sqlite3.Connection) -> None:
        """Add the triggers to the writer connection (TEMP: they are this connection's)."""
        conn.create_function("inferq_bus", 2, self.collect, deterministic=False)
        for sql in TRIGGERS:
            conn.execute(sql)

    def collect(self, kind: str, job_id: str | None) -> None:
        if kind == "s":
            self._submitted = True
        elif job_id is not None:
            self._ended.append(job_id)

    def mark(self) -> tuple[bool, int]:
        """Where the collection stands, for :meth:`rewind` when a savepoint rolls back."""
        return self._submitted, len(self._ended)

    def rewind(self, mark: tuple[bool, int]) -> None:
        self._submitted = mark[0]
        del self._ended[mark[1] :]

    def discard(self) -> None:
        self.rewind((False, 0))

    def flush(self) -> None:
        """Send what the committed transaction collected to every other process."""
        if not (self._submitted or self._ended):
            return
        datagrams = [SUBMITTED] if self._submitted else []
        for start in range(0, len(self._ended), IDS_PER_DATAGRAM):
            chunk = self._ended[start : start + IDS_PER_DATAGRAM]
            datagrams.append(ENDED + " ".join(chunk).encode())
        self.discard()
        peers = self._current_peers()
        if not peers:
            return
        sender = self._sock or self._sender()
        for peer in peers:
            for datagram in datagrams:
                try:
                    sender.sendto(datagram, b"\0" + peer.encode())
                except (ConnectionRefusedError, FileNotFoundError):
                    self._forget(peer)
                    break
                except BlockingIOError:
                    break  # its buffer is full: it will poll
                except OSError as exc:
                    log.debug("wake-up to %s not sent: %s", peer, exc)
                    break

    def _sender(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.setblocking(False)
        self._sock = sock
        return sock

    def _current_peers(self) -> list[str]:
        now = time.monotonic()
        if now - self._peers_read > PEERS_TTL:
            self._peers_read = now
            try:
                self._peers = [p.name for p in self.folder.iterdir() if p.name != self.name]
            except FileNotFoundError:
                self._peers = []
        return self._peers

    def _forget(self, peer: str) -> None:
        """A marker nobody listens behind: its process is gone."""
        with contextlib.suppress(OSError):
            (self.folder / peer).unlink()
        with contextlib.suppress(ValueError):
            self._peers.remove(peer)

    # -- the event loop: receive -----------------------------------------------------

    def listen(self, on_submitted: Callable[[], None], on_ended: Callable[[str], None]) -> None:
        """Bind this process's socket, announce it, and dispatch what arrives."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(b"\0" + self.name.encode())
        sock.setblocking(False)
        self.folder.mkdir(mode=0o700, exist_ok=True)
        (self.folder / self.name).touch(mode=0o600)
        old, self._sock = self._sock, sock
        if old is not None:
            old.close()
        self._loop = asyncio.get_running_loop()

        def readable() -> None:
            while True:
                try:
                    data = sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError:
                    return
                if data == SUBMITTED:
                    on_submitted()
                elif data.startswith(ENDED):
                    for job_id in data[1:].decode(errors="replace").split():
                        on_ended(job_id)

        self._loop.add_reader(sock.fileno(), readable)

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(Exception):
                self._loop.remove_reader(sock.fileno())
            with contextlib.suppress(OSError):
                (self.folder / self.name).unlink()
        sock.close()
