"""Generated text relayed between two processes on one store, on SQLite and PostgreSQL.

Two stores on one database stand for two processes (each listens on its own channel):
the "api" one subscribes to a job, the "worker" one generates its text. The pieces
reach the api's waiter in order; a job nobody waits for sends nothing; a waiter that
closes stops the relay; a lost piece (a gap in the offsets) stops the waiter taking
pieces, so the rest comes whole from the job's result. On PostgreSQL a lost listen
connection is such a gap too, and the relay works again on the new connection; one that
went half-open (the network dropped it without a word, played by a proxy that stops
forwarding) is found out and replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from inferq.core.events import JobEvents, Subscription
from inferq.store.base import JobStore
from inferq.store.postgres import PostgresStore
from inferq.store.sqlite import SQLiteStore
from inferq.store.sqlite_bus import available
from tests.support.postgres import database_url, fresh_schema

Pair = tuple[tuple[JobStore, JobEvents], tuple[JobStore, JobEvents]]


async def _relaying(store: JobStore) -> tuple[JobStore, JobEvents]:
    await store.open()
    events = JobEvents()
    await store.listen(on_submitted=events.job_submitted, on_ended=events.remote_ended)
    relay = store.text_relay()
    assert relay is not None, f"{type(store).__name__} has no text relay"
    relay.start(events.relayed_text)
    events.relay = relay
    return store, events


@contextlib.asynccontextmanager
async def _two_processes(kind: str, tmp_path: Path) -> AsyncIterator[Pair]:
    async with contextlib.AsyncExitStack() as stack:
        if kind == "postgres":
            schema = await stack.enter_async_context(fresh_schema())
            settings = {"search_path": schema}
            stores: list[JobStore] = [
                PostgresStore(database_url(), server_settings=settings) for _ in range(2)
            ]
        else:
            if not available():
                pytest.skip("the SQLite bus needs Linux")
            stores = [SQLiteStore(tmp_path / "jobs.db") for _ in range(2)]
        opened = []
        for store in stores:
            stack.push_async_callback(store.close)
            opened.append(await _relaying(store))
        yield opened[0], opened[1]


@pytest.fixture(params=["sqlite", "postgres"])
async def pair(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Pair]:
    async with _two_processes(request.param, tmp_path) as two:
        yield two


def _job() -> str:
    # a fresh id per test: PostgreSQL's channels are the database's, shared by schemas
    return str(uuid.uuid4())


def _wanted(store: JobStore) -> dict[str, set[str]]:
    relay = store.text_relay()
    wanted: dict[str, set[str]] = relay._wanted  # type: ignore[union-attr]
    return wanted


def _generated(store: JobStore) -> dict[str, int]:
    relay = store.text_relay()
    generated: dict[str, int] = relay._generated  # type: ignore[union-attr]
    return generated


async def _until(check: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"not {what} within {timeout}s")
        await asyncio.sleep(0.01)


async def _pieces(sub: Subscription, n: int) -> list[str]:
    got: list[str] = []
    while len(got) < n:
        event = await sub.next(5.0)
        assert isinstance(event, str), event
        got.append(event)
    return got


async def _nothing_more(sub: Subscription, wait: float = 0.3) -> None:
    await asyncio.sleep(wait)
    assert sub.queue.empty(), sub.queue.get_nowait()


async def test_text_generated_in_one_process_reaches_a_waiter_in_another(pair: Pair) -> None:
    (_, api_events), (worker, worker_events) = pair
    job, other = _job(), _job()
    sub = api_events.subscribe(job)  # asks the other process for the text
    await _until(lambda: job in _wanted(worker), "the want heard")
    worker_events.text(other, "not wanted")
    pieces = ["Hel", "lo, ", "wörld", " 🙂"]
    for piece in pieces:
        worker_events.text(job, piece)
        await asyncio.sleep(0.01)
    # coalesced or not, the text arrives in order, whole, and nothing else does
    got: list[str] = []
    while "".join(got) != "".join(pieces):
        assert len("".join(got)) < len("".join(pieces)), got
        got += await _pieces(sub, 1)
    await _nothing_more(sub)
    assert other not in _wanted(worker)
    sub.close()  # no longer wanted: nothing more is sent
    await _until(lambda: job not in _wanted(worker), "the unwant heard")
    worker_events.job_ended(job)
    assert job not in _generated(worker)


async def test_text_longer_than_a_notification_arrives_whole(pair: Pair) -> None:
    """PostgreSQL's payloads hold under 8000 bytes: a longer piece goes in several."""
    (_, api_events), (worker, worker_events) = pair
    job = _job()
    sub = api_events.subscribe(job)
    await _until(lambda: job in _wanted(worker), "the want heard")
    long = "é" * 5000 + "x" * 7000 + "€" * 3000  # 26,000 bytes of UTF-8
    worker_events.text(job, "start ")
    worker_events.text(job, long)
    worker_events.text(job, " end")
    got = ""
    while len(got) < len("start " + long + " end"):
        got += "".join(await _pieces(sub, 1))
    assert got == "start " + long + " end"
    sub.close()


async def test_after_a_lost_piece_a_waiter_takes_no_more(pair: Pair) -> None:
    """A gap in the offsets stops the relay for the job: JobService.stream then takes the
    rest from the result, so the client's text is whole and in order."""
    (_, api_events), (worker, worker_events) = pair
    job = _job()
    sub = api_events.subscribe(job)
    await _until(lambda: job in _wanted(worker), "the want heard")
    worker_events.text(job, "one ")
    assert await _pieces(sub, 1) == ["one "]
    _generated(worker)[job] += 4  # as if "two " was lost
    worker_events.text(job, "three")
    await asyncio.sleep(0.05)
    worker_events.text(job, " four")
    await _nothing_more(sub)
    sub.close()


async def test_a_waiter_that_came_late_takes_nothing(pair: Pair) -> None:
    """The first piece it hears does not start at 0: the text so far comes from the result."""
    (_, api_events), (worker, worker_events) = pair
    job = _job()
    worker_events.text(job, "before the waiter ")
    sub = api_events.subscribe(job)
    await _until(lambda: job in _wanted(worker), "the want heard")
    worker_events.text(job, "after it")
    await _nothing_more(sub)
    sub.close()


async def _backend_pid(store: PostgresStore) -> int:
    relay = store.text_relay()
    assert relay is not None
    conn: Any = relay._conn  # type: ignore[attr-defined]
    assert conn is not None
    pid: int = conn.get_server_pid()
    return pid


async def test_a_lost_listen_connection_is_a_gap_and_the_relay_comes_back(
    tmp_path: Path,
) -> None:
    async with _two_processes("postgres", tmp_path) as ((api, api_events), (worker, w_events)):
        assert isinstance(api, PostgresStore)
        before, after = _job(), _job()
        sub = api_events.subscribe(before)
        await _until(lambda: before in _wanted(worker), "the want heard")
        w_events.text(before, "one ")
        assert await _pieces(sub, 1) == ["one "]
        lost = await _backend_pid(api)
        admin = await asyncpg.connect(database_url())
        try:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", lost)
        finally:
            await admin.close()
        # listening again, on a new connection (the store retries after a second)
        await _until(lambda: _reconnected(api, lost), "listening again", timeout=10)
        w_events.text(before, "two")  # it may have been sent while nobody listened
        await _nothing_more(sub)
        late = api_events.subscribe(after)
        await _until(lambda: after in _wanted(worker), "the new want heard")
        w_events.text(after, "fresh")
        assert await _pieces(late, 1) == ["fresh"]
        sub.close()
        late.close()


def _reconnected(store: PostgresStore, old_pid: int) -> bool:
    conn: Any = store.text_relay()._conn  # type: ignore[union-attr]
    return conn is not None and not conn.is_closed() and conn.get_server_pid() != old_pid


class _FreezingProxy:
    """A TCP proxy to the test database whose links can be frozen: ``freeze`` makes each
    link it has drop what either side sends, sockets kept open, as a NAT or firewall
    that forgot the link would (a half-open connection: no reset, no end). Links made
    afterwards forward as usual."""

    def __init__(self) -> None:
        parts = urlsplit(database_url())
        self._target = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self._server: asyncio.Server | None = None
        self._links: list[dict[str, Any]] = []
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> str:
        """Listen on a free port; return the database's URL through the proxy."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        parts = urlsplit(database_url())
        netloc = parts.netloc.rpartition("@")[0]
        netloc = f"{netloc}@127.0.0.1:{port}" if netloc else f"127.0.0.1:{port}"
        return urlunsplit(parts._replace(netloc=netloc))

    def freeze(self) -> None:
        for link in self._links:
            link["frozen"] = True

    async def close(self) -> None:
        """Ends every link (the store's close would wait for frozen ones), then itself."""
        if self._server is not None:
            self._server.close()
        for link in self._links:
            for writer in link["writers"]:
                writer.close()
        if self._tasks:  # their pumps end with their sockets
            await asyncio.wait(self._tasks, timeout=5.0)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        up_reader, up_writer = await asyncio.open_connection(*self._target)
        link = {"frozen": False, "writers": [writer, up_writer]}
        self._links.append(link)
        await asyncio.gather(
            self._pump(link, reader, up_writer),
            self._pump(link, up_reader, writer),
            return_exceptions=True,
        )

    @staticmethod
    async def _pump(
        link: dict[str, Any], source: asyncio.StreamReader, sink: asyncio.StreamWriter
    ) -> None:
        while data := await source.read(65536):
            if not link["frozen"]:  # frozen: dropped, and nothing is closed
                sink.write(data)
                await sink.drain()
        if not link["frozen"]:
            sink.close()


async def test_a_half_open_listen_connection_is_found_out_and_replaced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No RST ever comes, so asyncpg never reports the connection lost: the relay's
    check (SELECT 1 when idle) finds it out, and the store listens on a new one."""
    monkeypatch.setattr("inferq.store.postgres_relay.PING_EVERY", 0.3)
    monkeypatch.setattr("inferq.store.postgres_relay.PING_TIMEOUT", 0.3)
    monkeypatch.setattr("inferq.store.postgres.RELISTEN_DELAY", 0.1)
    submitted: list[float] = []
    ended: list[str] = []
    async with contextlib.AsyncExitStack() as stack:
        schema = await stack.enter_async_context(fresh_schema())
        admin = await asyncpg.connect(database_url())  # directly, never through the proxy
        stack.push_async_callback(admin.close)
        proxy = _FreezingProxy()
        url = await proxy.start()
        store = PostgresStore(url, server_settings={"search_path": schema})
        stack.push_async_callback(store.close)
        stack.push_async_callback(proxy.close)  # first: its frozen links would hold close
        await store.open()
        loop = asyncio.get_running_loop()
        await store.listen(
            on_submitted=lambda: submitted.append(loop.time()), on_ended=ended.append
        )

        async def heard(timeout: float) -> bool:
            """Whether a job's end, sent again and again, is heard within ``timeout``."""
            marker = str(uuid.uuid4())  # channels are the database's, shared by schemas
            deadline = loop.time() + timeout
            while loop.time() < deadline:
                await admin.execute("SELECT pg_notify('inferq_ended', $1)", marker)
                await asyncio.sleep(0.1)
                if marker in ended:
                    return True
            return False

        assert await heard(5.0), "not heard through the proxy before the freeze"
        proxy.freeze()
        frozen_at = loop.time()
        assert await heard(6.0), "nothing heard after the notification connection froze"
        assert any(t > frozen_at for t in submitted)  # the new connection: look again
