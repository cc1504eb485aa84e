"""PostgreSQL's text relay over a fake notification connection: what it sends, and when.

A job nobody wants costs no statement; pieces that come while a NOTIFY is in flight join
the next one (one payload per waiter and job), and statements are spaced out but for a
want; long text is split under the payload limit; a NOTIFY that fails is logged and the
relay goes on; wants that are not inferq's are ignored; a lost connection is a gap. An
idle relay checks its connection, and ends it when the check, or a NOTIFY, fails to
answer in time (a half-open link). The real database is in
tests/contract/test_text_relay.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from inferq.store.postgres_relay import (
    MAX_PAYLOAD,
    NOTIFY,
    WANT_CHANNEL,
    PostgresRelay,
    payloads,
)

WANTER = "inferq_text_00112233aabbccdd"
OTHER = "inferq_text_ffeeddccbbaa9988"


class FakeConnection:
    """Records every NOTIFY statement; ``gate`` holds them while it is clear. Answers the
    relay's checks (or fails them: ``ping_fail``, or hangs: ``ping_hang``), and records
    ``terminate()``."""

    def __init__(self) -> None:
        self.listeners: dict[str, Any] = {}
        self.sent: list[list[tuple[str, str]]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail: Exception | None = None
        self.started = asyncio.Event()
        self.settings: list[str] = []
        self.pings = 0
        self.ping_fail: Exception | None = None
        self.ping_hang = False
        self.terminated = 0
        #: the event loop's time of each check and of each NOTIFY's end
        self.ping_times: list[float] = []
        self.sent_times: list[float] = []

    async def add_listener(self, channel: str, callback: Any) -> None:
        self.listeners[channel] = callback

    async def execute(self, sql: str, *args: Any, **kw: Any) -> str:
        if sql.startswith("SET "):
            self.settings.append(sql)
            return "SET"
        if sql == "SELECT 1":
            self.pings += 1
            self.ping_times.append(asyncio.get_running_loop().time())
            if self.ping_hang:
                await asyncio.Event().wait()  # never answered: a half-open link
            if self.ping_fail is not None:
                raise self.ping_fail
            return "SELECT 1"
        assert sql == NOTIFY
        channels, sent = args
        self.started.set()
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        self.sent.append(list(zip(channels, sent, strict=True)))
        self.sent_times.append(asyncio.get_running_loop().time())
        return "SELECT 1"

    def terminate(self) -> None:
        self.terminated += 1

    def notify(self, channel: str, payload: str) -> None:
        self.listeners[channel](self, 1, channel, payload)


@pytest.fixture
async def relay(
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[tuple[PostgresRelay, FakeConnection]]:
    # statements as often as they can go: what each carries is then decided by the gate
    monkeypatch.setattr("inferq.store.postgres_relay.SEND_SPACING", 0.0)
    conn = FakeConnection()
    the_relay = PostgresRelay()
    await the_relay.attach(conn)
    assert conn.settings == ["SET synchronous_commit TO off"]
    yield the_relay, conn
    await the_relay.close()


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def _generate(relay: PostgresRelay, job_id: str, *, seconds: float, every: float) -> None:
    """The job's text as a worker makes it: a piece "x" every ``every`` s for ``seconds``."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while loop.time() - start < seconds:
        relay.text(job_id, "x")
        await asyncio.sleep(every)


async def _until(condition: Any, timeout: float = 5.0) -> None:
    """Wait until ``condition()`` holds (a loaded machine may take its time)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "not within the time"
        await asyncio.sleep(0.01)


async def test_a_job_nobody_wants_costs_no_statement(
    relay: tuple[PostgresRelay, FakeConnection],
) -> None:
    the_relay, conn = relay
    for piece in ("a", "b", "c"):
        the_relay.text("job-1", piece)
    await _settle()
    assert conn.sent == []
    assert the_relay._generated["job-1"] == 3  # counted all the same: a want may come


async def test_pieces_sent_while_a_notify_is_in_flight_join_the_next(
    relay: tuple[PostgresRelay, FakeConnection],
) -> None:
    the_relay, conn = relay
    conn.notify(WANT_CHANNEL, f"w {WANTER} job-1")
    conn.notify(WANT_CHANNEL, f"w {OTHER} job-1")
    conn.gate.clear()
    the_relay.text("job-1", "one")
    await conn.started.wait()  # the first NOTIFY is in flight
    for piece in (" two", " three", " four"):
        the_relay.text("job-1", piece)
    the_relay.text("job-2", "unwanted")
    conn.gate.set()
    await _settle()
    assert [sorted(statement) for statement in conn.sent] == [
        [(WANTER, "job-1 0 one"), (OTHER, "job-1 0 one")],
        [(WANTER, "job-1 3  two three four"), (OTHER, "job-1 3  two three four")],
    ]


async def test_long_text_is_split_under_the_payload_limit() -> None:
    text = "é" * 3000 + "x" * 5000 + "€" * 4000
    found = payloads("job-1", 7, text)
    assert len(found) > 1
    assert all(len(p.encode()) < MAX_PAYLOAD for p in found)
    offset, joined = 7, ""
    for payload in found:
        job_id, at, piece = payload.split(" ", 2)
        assert (job_id, int(at)) == ("job-1", offset)
        offset += len(piece)
        joined += piece
    assert joined == text
    assert payloads("job-1", 0, "short") == ["job-1 0 short"]
    # what PostgreSQL cannot take is not sent (the waiter sees a gap)
    assert payloads("job-1", 0, "a\0b") == []
    assert payloads("job-1", 0, "a\udc00b") == []


async def test_a_notify_that_fails_is_logged_and_the_relay_goes_on(
    relay: tuple[PostgresRelay, FakeConnection], caplog: pytest.LogCaptureFixture
) -> None:
    the_relay, conn = relay
    conn.notify(WANT_CHANNEL, f"w {WANTER} job-1")
    conn.fail = OSError("connection reset")
    with caplog.at_level(logging.DEBUG, "inferq.store"):
        the_relay.text("job-1", "lost")
        await _settle()
        the_relay.text("job-1", " also lost")
        await _settle()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, caplog.records  # rate-limited: the second is at debug
    assert "not sent" in caplog.text
    assert not conn.terminated  # a refused NOTIFY is no sign of a broken connection
    conn.fail = None
    the_relay.text("job-1", " sent")
    await _settle()
    assert conn.sent == [[(WANTER, "job-1 14  sent")]]


async def test_wants_and_unwants(relay: tuple[PostgresRelay, FakeConnection]) -> None:
    the_relay, conn = relay
    conn.gate.clear()
    the_relay.want("job-0")  # holds the sender
    await conn.started.wait()
    the_relay.want("job-1")
    the_relay.unwant("job-1")
    the_relay.want("job-1")  # the same payload twice in one statement: PostgreSQL sends one
    the_relay.unwant("job-9")  # never wanted: nothing to say
    conn.gate.set()
    await _settle()
    me = the_relay.channel
    assert conn.sent == [[(WANT_CHANNEL, f"w {me} job-0")], [(WANT_CHANNEL, f"w {me} job-1")]]
    # its own wants come back on the broadcast channel: not a waiter elsewhere
    conn.notify(WANT_CHANNEL, f"w {me} job-1")
    # and what inferq does not send is ignored: text goes only to inferq's channels
    for forged in (f"w x{WANTER} job-2", "w inferq_text_want job-2", f"w {WANTER}", "w"):
        conn.notify(WANT_CHANNEL, forged)
    assert the_relay._wanted == {}
    conn.notify(WANT_CHANNEL, f"w {WANTER} job-2")
    conn.notify(WANT_CHANNEL, f"u {WANTER} job-2")
    assert the_relay._wanted == {}


async def test_pieces_arrive_in_order_and_a_gap_or_a_lost_connection_stops_them(
    relay: tuple[PostgresRelay, FakeConnection],
) -> None:
    the_relay, conn = relay
    got: list[tuple[str, str]] = []
    the_relay.start(lambda job_id, piece: got.append((job_id, piece)))
    the_relay.want("job-1")
    the_relay.want("job-2")
    me = the_relay.channel
    conn.notify(me, "job-1 0 Hel")
    conn.notify(me, "job-1 3 lo wörld")
    conn.notify(me, "job-3 0 not wanted")
    conn.notify(me, "job-2 0 two")
    conn.notify(me, "job-2 9 after a gap")
    conn.notify(me, "job-2 3 too late")
    assert got == [("job-1", "Hel"), ("job-1", "lo wörld"), ("job-2", "two")]
    the_relay.detach()  # the connection was lost: job-1 missed what was sent meanwhile
    await the_relay.attach(conn)
    conn.notify(me, "job-1 11 !")
    the_relay.want("job-4")  # wanted after the new connection: relayed again
    conn.notify(me, "job-4 0 fresh")
    assert got[3:] == [("job-4", "fresh")]


async def test_a_piece_past_the_pending_limit_is_a_gap(
    relay: tuple[PostgresRelay, FakeConnection], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sender stuck on a NOTIFY does not pile up text without bound."""
    monkeypatch.setattr("inferq.store.postgres_relay.MAX_PENDING", 8)
    the_relay, conn = relay
    conn.notify(WANT_CHANNEL, f"w {WANTER} job-1")
    conn.gate.clear()
    the_relay.text("job-1", "first")
    await conn.started.wait()
    the_relay.text("job-1", "12345")
    the_relay.text("job-1", "67890")  # past the limit: dropped
    the_relay.text("job-1", "after")
    conn.gate.set()
    await _settle()
    assert conn.sent == [[(WANTER, "job-1 0 first")], [(WANTER, "job-1 15 after")]]


async def test_statements_are_spaced_out_but_a_want_goes_at_once(
    relay: tuple[PostgresRelay, FakeConnection], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each NOTIFY takes an XID and the database's lock for notifying commits: a token
    stream makes at most one statement every SEND_SPACING, and a want, which must reach
    the worker before the job's first piece, does not wait for it."""
    monkeypatch.setattr("inferq.store.postgres_relay.SEND_SPACING", 0.2)
    the_relay, conn = relay
    conn.notify(WANT_CHANNEL, f"w {WANTER} job-1")
    await _generate(the_relay, "job-1", seconds=0.3, every=0.005)
    assert len(conn.sent) == 2, conn.sent  # at once, then 0.2 s later
    assert conn.sent[0] == [(WANTER, "job-1 0 x")]
    the_relay.want("job-2")
    await _settle()
    assert len(conn.sent) == 3  # not 0.2 s after the last: at once, with the text pending
    assert conn.sent[2][0] == (WANT_CHANNEL, f"w {the_relay.channel} job-2")
    [(_, second)], [(_, third)] = conn.sent[1], conn.sent[2][1:]
    assert int(third.split(" ")[1]) == 1 + len(second.split(" ")[2])  # no gap


@pytest.fixture
async def checking(
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[tuple[PostgresRelay, FakeConnection]]:
    """A relay that checks its idle connection every 0.1 s (set before its sender starts)."""
    monkeypatch.setattr("inferq.store.postgres_relay.SEND_SPACING", 0.0)
    monkeypatch.setattr("inferq.store.postgres_relay.PING_EVERY", 0.1)
    monkeypatch.setattr("inferq.store.postgres_relay.PING_TIMEOUT", 0.1)
    conn = FakeConnection()
    the_relay = PostgresRelay()
    await the_relay.attach(conn)
    yield the_relay, conn
    await the_relay.close()


async def test_an_idle_relay_checks_its_connection(
    checking: tuple[PostgresRelay, FakeConnection],
) -> None:
    """A half-open connection is never reported lost: only a statement finds it out."""
    _, conn = checking
    await _until(lambda: conn.pings >= 2)
    assert not conn.terminated


async def test_a_relay_checks_only_after_an_idle_spell(
    checking: tuple[PostgresRelay, FakeConnection],
) -> None:
    """A relay that keeps sending has no need to check: a check comes only PING_EVERY
    after the last statement (a loaded machine may leave such a gap between sends)."""
    the_relay, conn = checking
    conn.notify(WANT_CHANNEL, f"w {WANTER} job-1")
    await _generate(the_relay, "job-1", seconds=0.35, every=0.01)
    assert len(conn.sent_times) > 5
    for ping in conn.ping_times:
        before = [t for t in conn.sent_times if t <= ping]
        if before:
            assert ping - before[-1] >= 0.09, (ping - before[-1], conn.sent_times)


@pytest.mark.parametrize("broken", ["fails", "hangs"])
async def test_a_check_that_fails_or_hangs_ends_the_connection(
    checking: tuple[PostgresRelay, FakeConnection],
    broken: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Ended, asyncpg tells the store's listener, which connects again."""
    the_relay, conn = checking
    if broken == "fails":
        conn.ping_fail = OSError("no route to host")
    else:
        conn.ping_hang = True
    with caplog.at_level(logging.WARNING, "inferq.store"):
        # a check after 0.1 s, given up 0.1 s later at most; then none on that connection
        await _until(lambda: conn.terminated > 0)
        await asyncio.sleep(0.25)
    assert conn.terminated == 1
    assert the_relay._conn is None  # nothing more goes to it, checks included
    assert conn.pings == 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, caplog.records


async def test_a_notify_that_times_out_ends_the_connection(
    checking: tuple[PostgresRelay, FakeConnection],
) -> None:
    the_relay, conn = checking
    conn.notify(WANT_CHANNEL, f"w {WANTER} job-1")
    conn.fail = TimeoutError()  # what asyncpg raises past SEND_TIMEOUT
    the_relay.text("job-1", "lost")
    await _settle()
    assert conn.terminated == 1
    assert the_relay._conn is None
