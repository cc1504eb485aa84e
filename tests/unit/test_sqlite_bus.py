"""Processes on one SQLite file wake each other up, as PostgreSQL's NOTIFY does.

Two stores on one file stand for two processes (each has its own writer connection and
bus), and one test uses a real second process. A store that listens hears another's
submits and ended jobs, never its own, and a rolled-back write sends nothing. Text
generated in one process reaches the waiters of another, in order, and a lost piece
stops the relay for that job instead of leaving a hole in the text.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import struct
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from inferq.core.events import JobEvents, Subscription
from inferq.core.models import JobError
from inferq.core.ports import Ending
from inferq.core.service import _rest
from inferq.core.states import JobState
from inferq.store import rows
from inferq.store.executor import Steps, count, one
from inferq.store.sqlite import SQLiteStore
from inferq.store.sqlite_bus import available, same_user
from tests.contract.test_store_contract import RESULT, T0, claim, lease_of, make_job

pytestmark = pytest.mark.skipif(not available(), reason="the bus needs Linux")


class Heard:
    def __init__(self) -> None:
        self.submitted = 0
        self.ended: list[str] = []
        self.changed = asyncio.Event()

    def on_submitted(self) -> None:
        self.submitted += 1
        self.changed.set()

    def on_ended(self, job_id: str) -> None:
        self.ended.append(job_id)
        self.changed.set()

    async def until(self, check: object, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not check():  # type: ignore[operator]
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[SQLiteStore, SQLiteStore, Heard]]:
    listener, other = SQLiteStore(tmp_path / "jobs.db"), SQLiteStore(tmp_path / "jobs.db")
    await listener.open()
    await other.open()
    heard = Heard()
    assert await listener.listen(on_submitted=heard.on_submitted, on_ended=heard.on_ended)
    try:
        yield listener, other, heard
    finally:
        await other.close()
        await listener.close()


async def test_another_store_hears_a_submit_and_the_end_of_a_job(
    pair: tuple[SQLiteStore, SQLiteStore, Heard],
) -> None:
    _, other, heard = pair
    job = await other.insert_job(make_job())
    await heard.until(lambda: heard.submitted >= 1)
    [running] = await claim(other)
    assert await other.complete(lease_of(running), RESULT, now=T0 + 1)
    await heard.until(lambda: job.id in heard.ended)
    assert heard.ended == [job.id]


async def test_every_final_state_is_heard_and_nothing_else(
    pair: tuple[SQLiteStore, SQLiteStore, Heard],
) -> None:
    _, other, heard = pair
    done, failed, cancelled = [await other.insert_job(make_job()) for _ in range(3)]
    jobs = {j.id: j for j in await claim(other, limit=2)}
    assert set(jobs) == {done.id, failed.id}
    assert await other.complete(lease_of(jobs[done.id]), RESULT, now=T0 + 1)
    error = JobError("boom", "it broke")
    assert await other.fail(lease_of(jobs[failed.id]), error, now=T0 + 1, retry=False)
    finished = await other.finish(cancelled.id, Ending(JobState.CANCELLED), tenant=None, now=T0 + 1)
    assert finished is not None
    await heard.until(lambda: len(heard.ended) >= 3)
    assert sorted(heard.ended) == sorted([done.id, failed.id, cancelled.id])
    # a retry puts the job back in the queue: not an end
    retried = await other.insert_job(make_job())
    [running] = await claim(other, now=T0 + 2)
    assert running.id == retried.id
    assert await other.fail(lease_of(running), error, now=T0 + 2, retry=True)
    await asyncio.sleep(0.2)
    assert retried.id not in heard.ended


async def test_a_store_does_not_hear_itself(
    pair: tuple[SQLiteStore, SQLiteStore, Heard],
) -> None:
    listener, _, heard = pair
    await listener.insert_job(make_job())
    await asyncio.sleep(0.2)
    assert heard.submitted == 0


async def test_a_rolled_back_write_sends_nothing(
    pair: tuple[SQLiteStore, SQLiteStore, Heard],
) -> None:
    """A job inserted by a write that then fails (its savepoint rolls back) is not heard."""
    _, other, heard = pair
    job = make_job()
    duplicate = one("insert_job", rows.job_params(job))

    def steps() -> Steps[None]:
        yield duplicate
        yield duplicate  # the same id again: ON CONFLICT DO NOTHING, so no error yet
        yield count("no_such_table_write", {})

    with pytest.raises(KeyError):
        await other.db.atomic(steps())
    await other.insert_job(make_job())  # a later write that commits: a wake-up follows
    await heard.until(lambda: heard.submitted >= 1)
    await asyncio.sleep(0.1)
    assert heard.submitted == 1 and await other.get_job(job.id, tenant=None) is None


async def test_a_process_that_is_gone_is_forgotten(tmp_path: Path) -> None:
    """A marker left by a killed process is removed by the next sender."""
    store = SQLiteStore(tmp_path / "jobs.db")
    await store.open()
    try:
        folder = tmp_path / ".jobs.db.events"
        folder.mkdir(exist_ok=True)
        (folder / "inferq-0000000000000000").touch()
        await store.insert_job(make_job())
        assert not (folder / "inferq-0000000000000000").exists()
    finally:
        await store.close()


async def test_a_real_second_process_wakes_this_one(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "jobs.db")
    await store.open()
    heard = Heard()
    await store.listen(on_submitted=heard.on_submitted, on_ended=heard.on_ended)
    script = textwrap.dedent(
        f"""
        import asyncio
        from inferq.store.sqlite import SQLiteStore
        from tests.contract.test_store_contract import RESULT, T0, claim, lease_of, make_job

        async def main():
            store = SQLiteStore({str(tmp_path / "jobs.db")!r})
            await store.open()
            job = await store.insert_job(make_job())
            [running] = await claim(store)
            await store.complete(lease_of(running), RESULT, now=T0 + 1)
            print(job.id)
            await store.close()

        asyncio.run(main())
        """
    )
    try:
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=Path(__file__).resolve().parents[2],
        )
        assert done.returncode == 0, done.stderr
        job_id = done.stdout.strip()
        await heard.until(lambda: job_id in heard.ended)
        assert heard.submitted >= 1
    finally:
        await store.close()


async def _relaying(path: Path) -> tuple[SQLiteStore, JobEvents]:
    store = SQLiteStore(path)
    await store.open()
    events = JobEvents()
    await store.listen(on_submitted=events.job_submitted, on_ended=events.remote_ended)
    relay = store.text_relay()
    assert relay is not None
    relay.start(events.relayed_text)
    events.relay = relay
    return store, events


async def _pieces(sub: Subscription, n: int) -> list[str]:
    got: list[str] = []
    while len(got) < n:
        event = await sub.next(5.0)
        assert isinstance(event, str), event
        got.append(event)
    return got


async def test_text_generated_in_one_process_reaches_a_waiter_in_another(
    tmp_path: Path,
) -> None:
    (api, api_events), (worker, worker_events) = [
        await _relaying(tmp_path / "jobs.db") for _ in range(2)
    ]
    try:
        sub = api_events.subscribe("job-1")  # asks the other process for the text
        await asyncio.sleep(0.1)
        worker_events.text("job-2", "not wanted")
        for piece in ("Hel", "lo, ", "wörld"):
            worker_events.text("job-1", piece)
        assert await _pieces(sub, 3) == ["Hel", "lo, ", "wörld"]
        sub.close()  # no longer wanted: nothing more is sent
        await asyncio.sleep(0.1)
        assert "job-1" not in (worker.text_relay()._wanted)  # type: ignore[union-attr]
    finally:
        await worker.close()
        await api.close()


async def test_text_generated_before_the_worker_knew_of_a_waiter_keeps_its_offsets(
    tmp_path: Path,
) -> None:
    """The worker reads its list of peers once a second. Text it generated while it knew
    of none still counts towards the offsets: a waiter whose want arrives meanwhile sees
    the gap (and takes the text from the result) instead of taking later pieces as the
    text's start."""
    from inferq.store.sqlite_bus import PEERS_TTL

    worker, worker_events = await _relaying(tmp_path / "jobs.db")
    api = None
    try:
        worker_events.text("job-1", "one ")  # no peer yet, and the worker remembers that
        api, api_events = await _relaying(tmp_path / "jobs.db")
        sub = api_events.subscribe("job-1")
        await asyncio.sleep(0.1)
        worker_events.text("job-1", "two ")
        await asyncio.sleep(PEERS_TTL)  # the worker now knows of the api
        worker_events.text("job-1", "three")
        await asyncio.sleep(0.3)
        assert sub.queue.empty(), sub.queue.get_nowait()
        sub.close()
    finally:
        await worker.close()
        if api is not None:
            await api.close()


async def test_after_a_lost_piece_a_waiter_takes_no_more_and_the_stream_ends_whole(
    tmp_path: Path,
) -> None:
    """A gap in the offsets stops the relay; JobService.stream then yields the rest of the
    result, so the client's text is whole and in order."""
    (api, api_events), (worker, worker_events) = [
        await _relaying(tmp_path / "jobs.db") for _ in range(2)
    ]
    try:
        sub = api_events.subscribe("job-1")
        await asyncio.sleep(0.1)
        worker_events.text("job-1", "one ")
        assert await _pieces(sub, 1) == ["one "]
        relay = worker.text_relay()
        assert relay is not None
        relay._generated["job-1"] += 5  # type: ignore[attr-defined]  # as if "two " was lost
        worker_events.text("job-1", "three")
        await asyncio.sleep(0.2)
        assert sub.queue.empty()
        sub.close()
    finally:
        await worker.close()
        await api.close()
    assert _rest("one two three", "one ") == "two three"
    assert _rest("one two three", "") == "one two three"
    assert _rest('{"call": 1}', "other") == ""


def test_only_this_users_datagrams_are_read() -> None:
    """Credentials of another user (or none at all) make a datagram ignored."""
    ours = struct.pack("3i", os.getpid(), os.getuid(), os.getgid())
    theirs = struct.pack("3i", 1, os.getuid() + 1, 0)
    creds = (socket.SOL_SOCKET, socket.SCM_CREDENTIALS)
    assert same_user([(*creds, ours)])
    assert not same_user([(*creds, theirs)])
    assert not same_user([])


#: a Python another user may run (this one may live in a directory only its owner enters)
SYSTEM_PYTHON = shutil.which("python3", path="/usr/bin:/bin")


@pytest.mark.skipif(
    os.getuid() != 0 or SYSTEM_PYTHON is None, reason="sending as another user needs root"
)
async def test_another_users_process_can_neither_feed_text_nor_ask_for_it(
    tmp_path: Path,
) -> None:
    """A process of another user that found the abstract names (/proc/net/unix) sends a
    piece of text for a job this process waits for, and asks for a job's text: the piece
    is not delivered, and no text is sent to it."""
    (api, api_events), (worker, _) = [await _relaying(tmp_path / "jobs.db") for _ in range(2)]
    api_bus, worker_bus = api.db.relay, worker.db.relay
    assert api_bus is not None and worker_bus is not None
    try:
        sub = api_events.subscribe("job-1")
        script = (
            "import socket, sys; s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); "
            "s.bind(b'\\0inferq-intruder'); "
            "s.sendto(b'tjob-1 0 forged', b'\\0' + sys.argv[1].encode()); "
            "s.sendto(b'wjob-2', b'\\0' + sys.argv[2].encode())"
        )
        done = await asyncio.to_thread(
            subprocess.run,
            [str(SYSTEM_PYTHON), "-c", script, api_bus.name, worker_bus.name],
            preexec_fn=lambda: os.setuid(65534),
            capture_output=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
        await asyncio.sleep(0.3)
        assert sub.queue.empty()
        assert "job-2" not in worker_bus._wanted
        sub.close()
    finally:
        await worker.close()
        await api.close()
