"""Wake-ups between the processes that share one SQLite file: SQLite's LISTEN/NOTIFY.

PostgreSQL tells every process when a job is submitted or ends (the tables' NOTIFY
triggers). SQLite has no such channel, so without one a process learns of another's
work only when it next polls. Every process on a SQLite file is on one machine, so a
local datagram is enough:

* Each :class:`Bus` binds a Unix datagram socket in Linux's abstract namespace (no
  file, no path-length limit) and leaves an empty marker file named after it in
  ``.<database>.events/`` beside the database, which is how the others find it.
* TEMP triggers on this process's writer connection note, in a TEMP table, that a job
  was inserted (``submitted``) and the id of each job that reaches a final state
  (``ended``), as PostgreSQL's triggers do. The notes are rows of the transaction, so
  a savepoint or transaction that rolls back takes its own away, and the triggers run
  no Python: a statement that changes 10,000 rows does not call back into the
  interpreter 10,000 times (each call would wait for the GIL while the event loop is
  busy). Before the COMMIT the writer takes the notes (:meth:`Bus.take`, one query);
  after it, :meth:`Bus.flush` sends them to every other process's socket, and a
  failed COMMIT drops them (:meth:`Bus.discard`).
* A process that listens reads its socket on the event loop and calls the store's
  ``on_submitted`` / ``on_ended`` callbacks.
* It also relays generated text (:class:`inferq.core.events.TextRelay`): a process
  with a waiter for a job asks the others for its text (``w<id>``), and the one whose
  worker generates it sends each piece there with its offset in the text, so a piece
  that was lost shows as a gap; the waiter then stops taking pieces and gets the rest
  from the job's result.

Only datagrams from this user's processes are read (the kernel's SO_PASSCRED
credentials): another local user could find the abstract names, but can neither wake
nor feed text to inferq, nor ask it for text.

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
import os
import secrets
import socket
import sqlite3
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("inferq.store")

#: the datagram that says "jobs were submitted"; ``e<id>`` says a job ended
SUBMITTED = b"s"
ENDED = b"e"
#: text relay: ``w<id>`` / ``u<id>``: the sender wants (no longer wants) the job's text;
#: ``t<id> <offset> <piece>``: a piece of it, ``offset`` characters into the job's text
WANT = b"w"
UNWANT = b"u"
TEXT = b"t"
#: how many ended ids one datagram carries at most (ids are short; keeps datagrams small)
IDS_PER_DATAGRAM = 64
#: how long the peer list is trusted before the marker folder is read again (seconds)
PEERS_TTL = 1.0

#: the notes (``job_id`` NULL: jobs were submitted; else the id of a job that ended),
#: and the triggers that write them; SQL only, so a trigger never waits for the GIL
TRIGGERS = (
    "CREATE TEMP TABLE IF NOT EXISTS inferq_bus (job_id TEXT)",
    "CREATE INDEX IF NOT EXISTS temp.inferq_bus_ids ON inferq_bus (job_id)",
    "CREATE TEMP TRIGGER IF NOT EXISTS inferq_bus_submitted AFTER INSERT ON main.jobs "
    "WHEN NOT EXISTS (SELECT 1 FROM inferq_bus WHERE job_id IS NULL) "
    "BEGIN INSERT INTO inferq_bus (job_id) VALUES (NULL); END",
    # comparisons, not an IN list: SQLite builds a list of more than two values as a
    # temporary index, in a trigger's condition again at every run (every state change)
    "CREATE TEMP TRIGGER IF NOT EXISTS inferq_bus_ended AFTER UPDATE OF state ON main.jobs "
    "WHEN (NEW.state = 'succeeded' OR NEW.state = 'failed' OR NEW.state = 'cancelled' "
    "OR NEW.state = 'expired') AND OLD.state IS NOT NEW.state "
    "BEGIN INSERT INTO inferq_bus (job_id) VALUES (NEW.id); END",
)
#: the notes in one row: whether jobs were submitted, the ended ids joined by spaces
TAKE = (
    "SELECT EXISTS (SELECT 1 FROM temp.inferq_bus WHERE job_id IS NULL), "
    "group_concat(job_id, ' ') FROM temp.inferq_bus"
)


def available() -> bool:
    return sys.platform.startswith("linux")


#: ``struct ucred``: the sender's pid, uid and gid, as SCM_CREDENTIALS carries them
_UCRED = struct.Struct("3i")
_CREDENTIALS_SPACE = socket.CMSG_SPACE(_UCRED.size) if available() else 0


def same_user(ancillary: list[tuple[int, int, bytes]]) -> bool:
    """Whether a datagram's credentials (SO_PASSCRED) are this process's user's."""
    for level, kind, payload in ancillary:
        if (level, kind) == (socket.SOL_SOCKET, socket.SCM_CREDENTIALS) and len(
            payload
        ) >= _UCRED.size:
            _, uid, _ = _UCRED.unpack(payload[: _UCRED.size])
            return bool(uid == os.getuid())
    return False


class Bus:
    """This process's end of the wake-up channel of one SQLite database."""

    def __init__(self, database: Path) -> None:
        # beside the database, hidden and not named like it: a copy of inferq.db* (a
        # backup while the server is stopped) takes the database files alone
        self.folder = database.parent / f".{database.name}.events"
        self.name = f"inferq-{secrets.token_hex(8)}"
        self._sock: socket.socket | None = None
        # what the transaction being committed took from the notes
        self._submitted = False
        self._ended: list[str] = []
        self._peers: list[str] = []
        self._peers_read = float("-inf")
        self._loop: asyncio.AbstractEventLoop | None = None
        # the text relay (event loop thread only): which peers want which job's text,
        # how much text each job generated here has had, and, for the jobs wanted
        # here, the offset the next piece must have (-1: a piece was lost, take no more)
        self._wanted: dict[str, set[str]] = {}
        self._generated: dict[str, int] = {}
        self._expected: dict[str, int] = {}
        self._deliver: Callable[[str, str], None] | None = None

    # -- the writer thread: take the notes of a transaction, send them once it commits --

    def install(self, conn: sqlite3.Connection) -> None:
        """Add the notes table and its triggers to the writer connection (TEMP: they are
        this connection's)."""
        for sql in TRIGGERS:
            conn.execute(sql)

    def take(self, conn: sqlite3.Connection) -> None:
        """Read and clear the notes of the transaction open on ``conn``: what
        :meth:`flush` sends once it commits. One query, and a DELETE when it found any."""
        submitted, ended = conn.execute(TAKE).fetchone()
        if not submitted and ended is None:
            return
        conn.execute("DELETE FROM temp.inferq_bus")
        self._submitted = bool(submitted)
        self._ended = ended.split(" ") if ended else []

    def discard(self) -> None:
        """Forget what :meth:`take` read: its transaction did not commit."""
        self._submitted = False
        self._ended = []

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

    def _send(self, peer: str, datagram: bytes) -> bool:
        """Send one datagram from the event loop thread; False when it was not sent."""
        if self._sock is None:
            return False
        try:
            self._sock.sendto(datagram, b"\0" + peer.encode())
        except (ConnectionRefusedError, FileNotFoundError):
            self._forget(peer)
            for wanting in self._wanted.values():
                wanting.discard(peer)
            return False
        except OSError:
            return False
        return True

    # -- the text relay (inferq.core.events.TextRelay), on the event loop thread ------

    def start(self, deliver: Callable[[str, str], None]) -> None:
        self._deliver = deliver

    def want(self, job_id: str) -> None:
        self._expected[job_id] = 0
        for peer in self._current_peers():
            self._send(peer, WANT + job_id.encode())

    def unwant(self, job_id: str) -> None:
        if self._expected.pop(job_id, None) is not None:
            for peer in self._current_peers():
                self._send(peer, UNWANT + job_id.encode())

    def text(self, job_id: str, piece: str) -> None:
        # counted even while no other process is known: the list of peers is read once a
        # second, and a want from a process that started meanwhile can come before it
        # is; its waiter must see the text it missed as a gap, not take the next piece
        # as the text's start (``ended`` forgets the count)
        offset = self._generated.get(job_id, 0)
        self._generated[job_id] = offset + len(piece)
        for peer in list(self._wanted.get(job_id, ())):
            self._send(peer, b"%s%s %d %s" % (TEXT, job_id.encode(), offset, piece.encode()))

    def ended(self, job_id: str) -> None:
        self._generated.pop(job_id, None)
        self._wanted.pop(job_id, None)

    def _received_text(self, data: bytes) -> None:
        head, _, rest = data[1:].partition(b" ")
        offset, _, piece = rest.partition(b" ")
        job_id = head.decode(errors="replace")
        expected = self._expected.get(job_id)
        if expected is None or expected < 0 or self._deliver is None:
            return
        text = piece.decode(errors="replace")
        if int(offset) != expected:
            self._expected[job_id] = -1  # a gap: the rest comes from the result
            return
        self._expected[job_id] = expected + len(text)
        self._deliver(job_id, text)

    # -- the event loop: receive -----------------------------------------------------

    def listen(self, on_submitted: Callable[[], None], on_ended: Callable[[str], None]) -> None:
        """Bind this process's socket, announce it, and dispatch what arrives."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        # the kernel attaches each sender's credentials: an abstract name can be found
        # in /proc/net/unix by any local user, so only this user's datagrams are read
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
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
                    data, ancillary, _, sender = sock.recvmsg(65536, _CREDENTIALS_SPACE)
                except OSError:  # nothing more to read (BlockingIOError), or closed
                    return
                if not same_user(ancillary):
                    continue  # another user's process: neither wake-ups nor text from it
                kind = data[:1]
                if kind == SUBMITTED:
                    on_submitted()
                elif kind == ENDED:
                    for job_id in data[1:].decode(errors="replace").split():
                        on_ended(job_id)
                elif kind == TEXT:
                    self._received_text(data)
                elif kind in (WANT, UNWANT) and isinstance(sender, bytes) and sender:
                    self._wanting(kind, data[1:].decode(errors="replace"), sender)

        self._loop.add_reader(sock.fileno(), readable)

    def _wanting(self, kind: bytes, job_id: str, sender: bytes) -> None:
        peer = sender.lstrip(b"\0").decode(errors="replace")
        if kind == WANT:
            self._wanted.setdefault(job_id, set()).add(peer)
        elif job_id in self._wanted:
            self._wanted[job_id].discard(peer)
            if not self._wanted[job_id]:
                del self._wanted[job_id]

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
