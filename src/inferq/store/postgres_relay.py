"""PostgreSQL's text relay: generated text between the processes on one database.

:class:`PostgresRelay` is :class:`inferq.core.events.TextRelay` over LISTEN/NOTIFY, with
the semantics of SQLite's (:mod:`inferq.store.sqlite_bus`):

* Each process listens on a channel of its own, ``inferq_text_<16 hex digits>``, and on
  the broadcast channel ``inferq_text_want``, on the store's notification connection
  (:meth:`inferq.store.postgres.PostgresExecutor.listen`, which attaches the relay to
  every connection it opens).
* A process with a waiter for a job says so to every process: ``w <its channel> <job
  id>`` on ``inferq_text_want``, and ``u <its channel> <job id>`` once it has none.
* The process whose worker generates the job's text sends each piece to the channels
  that want it: ``<job id> <offset> <text>``, ``offset`` characters into the job's text,
  so a piece that was lost shows as a gap; the waiter then takes no more pieces of that
  job and gets the rest from the job's result. A job nobody wants costs no statement.
* Every notification goes through one sender task, one statement at a time (PostgreSQL
  delivers one session's notifications in commit order), on the notification
  connection: what is pending goes in one statement, and pieces that come while it is
  in flight, or within SEND_SPACING of its start, join the next one, one payload per
  waiter and job (the offset of the first, the text joined). A NOTIFY is a transaction
  that takes an XID and PostgreSQL's one lock for notifying commits, so the relay
  makes at most one statement every SEND_SPACING (50 a second), whatever the number of
  tokens and streams, and commits it without waiting for the WAL flush
  (``synchronous_commit = off`` on that connection: a notification is never durable
  anyway). Only a want goes out at once: it must reach the worker before the job's
  first piece. A payload holds under 8000 bytes: longer text is split over several.
* A lost notification connection is a gap for every job waited for here: the
  notifications sent meanwhile are lost. The new connection listens on the same
  channel, and the jobs wanted from then on are relayed again.
* A connection the network dropped without a word (half-open: no reset ever comes) is
  never reported lost, so the sender checks it: ``SELECT 1`` whenever nothing was sent
  for PING_EVERY. A check, or a NOTIFY, with no answer in time ends the connection,
  and the store listens on a new one (its termination listener sees the end).

Everything is a hint: a notification that is lost, a NOTIFY that fails, a connection
that is down never fail a job or a stream; the stream gets what it missed from the
job's result when the job ends. Channels and payloads are made here (the job ids come
from the store), and go to ``pg_notify`` as parameters, never into SQL text. Any role
that can connect to the database can LISTEN on any channel: the relayed text is as
visible to it as the jobs' results in the tables.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from inferq.core.events import wait_event

log = logging.getLogger("inferq.store")

#: the broadcast channel of wants: ``w <channel> <job id>`` / ``u <channel> <job id>``
WANT_CHANNEL = "inferq_text_want"
WANT = "w"
UNWANT = "u"
#: each process's own channel: this, then 16 hex digits
CHANNEL_PREFIX = "inferq_text_"
_CHANNEL = re.compile(r"inferq_text_[0-9a-f]{16}")
#: the bytes a payload may hold (PostgreSQL refuses 8000 or more; some left for safety)
MAX_PAYLOAD = 7900
#: the text one waiter's pending payload of a job may hold while the sender is stuck
#: (characters); past it the piece is dropped, a gap the result fills
MAX_PENDING = 1 << 18
#: the least time between the starts of two NOTIFY statements but for a want (seconds)
SEND_SPACING = 0.02
#: how long one NOTIFY statement may take before it is given up, and the connection
#: with it (seconds)
SEND_TIMEOUT = 5.0
#: the check of an idle notification connection, after this many seconds without a
#: statement, and how long its answer may take before the connection is ended (seconds)
PING_EVERY = 10.0
PING_TIMEOUT = 5.0
PING = "SELECT 1"
#: at most one warning in this many seconds about NOTIFYs that failed (the rest: debug)
WARN_EVERY = 60.0

#: every notification pending, in one statement: a transaction's notifications are
#: delivered in the order they were sent
NOTIFY = (
    "SELECT count(pg_notify(channel, payload)) FROM unnest($1::text[], $2::text[])"
    " AS sent(channel, payload)"
)


@dataclass
class _Pending:
    """Text for one waiter of one job, not sent yet: ``offset`` characters into the job's
    text."""

    offset: int
    parts: list[str] = field(default_factory=list)
    chars: int = 0

    def add(self, piece: str) -> None:
        self.parts.append(piece)
        self.chars += len(piece)


def payloads(job_id: str, offset: int, text: str) -> list[str]:
    """The notifications that carry ``text`` from ``offset``, each under the payload
    limit; none where PostgreSQL cannot take the text (a NUL, a lone surrogate): the
    waiter sees a gap."""
    if "\0" in text:
        return []
    try:
        data = text.encode()
    except UnicodeEncodeError:
        return []
    room = MAX_PAYLOAD - len(job_id.encode()) - 24  # the offset's digits, two spaces
    if room < 64:
        return []
    if len(data) <= room:
        return [f"{job_id} {offset} {text}"]
    found: list[str] = []
    start = 0
    while start < len(data):
        cut = min(start + room, len(data))
        while cut < len(data) and data[cut] & 0xC0 == 0x80:  # inside a character
            cut -= 1
        chunk = data[start:cut].decode()
        found.append(f"{job_id} {offset} {chunk}")
        offset += len(chunk)
        start = cut
    return found


class _Complaints:
    """Logs failures to send: a warning at most every WARN_EVERY seconds, debug besides."""

    def __init__(self) -> None:
        self._warned = float("-inf")

    def __call__(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._warned >= WARN_EVERY:
            self._warned = now
            log.warning(message + " (streams take it from the result)", *args)
        else:
            log.debug(message, *args)


class PostgresRelay:
    """This process's end of the text relay on one PostgreSQL database (event loop thread
    only)."""

    def __init__(self) -> None:
        self.channel = CHANNEL_PREFIX + secrets.token_hex(8)
        #: the notification connection, while it is up
        self._conn: Any = None
        self._deliver: Callable[[str, str], None] | None = None
        # which channels want which job's text, how much text each job generated here
        # has had, and, for the jobs wanted here, the offset the next piece must have
        # (-1: a piece was lost, take no more)
        self._wanted: dict[str, set[str]] = {}
        self._generated: dict[str, int] = {}
        self._expected: dict[str, int] = {}
        # what the sender sends next: the last want or unwant of each job (a want,
        # unwant and want again in one statement would be two identical payloads, which
        # PostgreSQL delivers once), and the text for each (channel, job)
        self._controls: dict[str, str] = {}
        self._pieces: dict[tuple[str, str], _Pending] = {}
        self._pending = asyncio.Event()
        self._want_pending = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        self._complain = _Complaints()

    # -- the notification connection (PostgresExecutor's listener) ---------------------

    async def attach(self, conn: Any) -> None:
        """Listen on ``conn``, a new notification connection, and send through it."""
        try:  # for the relay's NOTIFYs alone: the connection writes nothing else
            await conn.execute("SET synchronous_commit TO off")
        except Exception as exc:  # they wait for the WAL flush then, nothing worse
            log.debug("text relay: synchronous_commit stays on: %r", exc)
        await conn.add_listener(self.channel, self._received_text)
        await conn.add_listener(WANT_CHANNEL, self._received_want)
        self._conn = conn
        if self._sender is None:
            self._sender = asyncio.create_task(self._send_loop(), name="inferq-text-relay")

    def detach(self) -> None:
        """The notification connection is lost: whatever was sent meanwhile is lost too.

        Every job waited for here has a gap; wants and unwants for the jobs not generated
        here may have been missed (an ended job among them), so they are forgotten."""
        self._conn = None
        for job_id in self._expected:
            self._expected[job_id] = -1
        self._wanted = {j: w for j, w in self._wanted.items() if j in self._generated}
        self._controls.clear()
        self._pieces.clear()

    async def close(self) -> None:
        self.detach()
        sender, self._sender = self._sender, None
        if sender is not None:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender

    # -- the text relay (inferq.core.events.TextRelay) ---------------------------------

    def start(self, deliver: Callable[[str, str], None]) -> None:
        self._deliver = deliver

    def want(self, job_id: str) -> None:
        self._expected[job_id] = 0
        self._control(WANT, job_id)
        self._want_pending.set()

    def unwant(self, job_id: str) -> None:
        if self._expected.pop(job_id, None) is not None:
            self._control(UNWANT, job_id)

    def text(self, job_id: str, piece: str) -> None:
        if not piece:
            return
        offset = self._generated.get(job_id, 0)
        self._generated[job_id] = offset + len(piece)
        wanting = self._wanted.get(job_id)
        if not wanting:
            return  # nobody waits for it elsewhere: no statement
        for channel in wanting:
            key = (channel, job_id)
            pending = self._pieces.get(key)
            if pending is None or pending.offset + pending.chars != offset:
                pending = self._pieces[key] = _Pending(offset)
            if pending.chars + len(piece) > MAX_PENDING:
                del self._pieces[key]  # a gap: the waiter takes the rest from the result
                continue
            pending.add(piece)
        self._pending.set()

    def ended(self, job_id: str) -> None:
        self._generated.pop(job_id, None)
        for channel in self._wanted.pop(job_id, ()):
            self._pieces.pop((channel, job_id), None)

    # -- receiving ---------------------------------------------------------------------

    def _received_text(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        job_id, _, rest = payload.partition(" ")
        offset, space, piece = rest.partition(" ")
        expected = self._expected.get(job_id)
        if expected is None or expected < 0 or self._deliver is None:
            return
        if not space or not offset.isdigit() or int(offset) != expected:
            self._expected[job_id] = -1  # a gap: the rest comes from the result
            return
        self._expected[job_id] = expected + len(piece)
        self._deliver(job_id, piece)

    def _received_want(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        kind, _, rest = payload.partition(" ")
        channel, _, job_id = rest.partition(" ")
        if channel == self.channel or not job_id or not _CHANNEL.fullmatch(channel):
            return  # this process's own, or not one inferq sent
        if kind == WANT:
            self._wanted.setdefault(job_id, set()).add(channel)
        elif kind == UNWANT and job_id in self._wanted:
            self._wanted[job_id].discard(channel)
            self._pieces.pop((channel, job_id), None)
            if not self._wanted[job_id]:
                del self._wanted[job_id]

    # -- sending -----------------------------------------------------------------------

    def _control(self, kind: str, job_id: str) -> None:
        self._controls.pop(job_id, None)  # the latest goes last
        self._controls[job_id] = kind
        self._pending.set()

    def _take(self) -> tuple[list[str], list[str]]:
        """Every notification pending, as channels and payloads, in order."""
        channels = [WANT_CHANNEL] * len(self._controls)
        sent = [f"{kind} {self.channel} {job}" for job, kind in self._controls.items()]
        for (channel, job_id), pending in self._pieces.items():
            found = payloads(job_id, pending.offset, "".join(pending.parts))
            channels += [channel] * len(found)
            sent += found
        self._controls = {}
        self._pieces = {}
        return channels, sent

    async def _send_loop(self) -> None:
        """Sends what is pending, and checks the connection when idle: the one task that
        runs statements on it (asyncpg refuses two at once)."""
        loop = asyncio.get_running_loop()
        next_at = last = loop.time()
        while True:
            if not await wait_event(self._pending, last + PING_EVERY - loop.time()):
                await self._check()
                last = loop.time()
                continue
            spacing = next_at - loop.time()
            if spacing > 0 and not self._want_pending.is_set():
                await wait_event(self._want_pending, spacing)
            self._pending.clear()
            self._want_pending.clear()
            channels, sent = self._take()
            next_at = loop.time() + SEND_SPACING
            if channels:
                await self._send(channels, sent)
                last = loop.time()

    async def _send(self, channels: list[str], sent: list[str]) -> None:
        conn = self._conn
        if conn is None:
            log.debug("%d text notifications dropped: not connected", len(sent))
            return
        try:
            await conn.execute(NOTIFY, channels, sent, timeout=SEND_TIMEOUT)
        except TimeoutError as exc:  # no answer: the connection's end, not the payload's
            log.debug("%d text notifications not sent: %r", len(sent), exc)
            self._end(conn, f"a NOTIFY had no answer within {SEND_TIMEOUT}s")
        except Exception as exc:  # a hint that failed: never the job's or the stream's end
            self._complain("%d text notifications not sent: %r", len(sent), exc)

    async def _check(self) -> None:
        """``SELECT 1`` on the idle connection: the only way to find out that it went
        half-open, which asyncpg never reports (no reset, no end ever arrives)."""
        conn = self._conn
        if conn is None:
            return
        try:
            async with asyncio.timeout(PING_TIMEOUT):
                await conn.execute(PING)
        except Exception as exc:
            self._end(conn, f"its check, {PING_TIMEOUT}s at most, got {exc!r}")

    def _end(self, conn: Any, why: str) -> None:
        """Ends a connection that no longer answers: asyncpg then calls its termination
        listeners, and the store's (PostgresExecutor._listen) connects again."""
        log.warning("the PostgreSQL notification connection is ended (%s); reconnecting", why)
        if self._conn is conn:
            self._conn = None  # nothing more goes to it meanwhile, checks included
        conn.terminate()
