"""The processes on one SQLite file take turns at writing (:class:`WriteTurns`).

SQLite's own lock leaves a process that found the file locked asleep in its busy
handler while another keeps committing: with two API processes under load, one wrote
nearly every submit. Each writer therefore holds an exclusive ``flock`` on a lock file
beside the database around each transaction; here the test holds it, as another
process's writer would.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import stat
from pathlib import Path

import pytest

from inferq.core.errors import Conflict
from inferq.store.sqlite import SQLiteStore
from tests.contract.test_store_contract import make_job


async def test_a_write_waits_for_its_turn_and_commits_as_soon_as_it_comes(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(tmp_path / "inferq.db")
    await store.open()
    try:
        lock = tmp_path / ".inferq.db.write-turns"
        assert stat.S_IMODE(lock.stat().st_mode) == 0o600
        other = os.open(lock, os.O_RDWR)  # another process's writer, holding its turn
        try:
            fcntl.flock(other, fcntl.LOCK_EX)
            job = make_job()
            write = asyncio.create_task(store.insert_job(job))
            await asyncio.sleep(0.5)
            assert not write.done()
            fcntl.flock(other, fcntl.LOCK_UN)
            await asyncio.wait_for(write, 10)
        finally:
            os.close(other)
        assert (await store.get_job(job.id, tenant=job.tenant)) is not None
    finally:
        await store.close()


async def test_the_turn_is_given_back_after_each_transaction(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "inferq.db")
    await store.open()
    try:
        job = make_job()
        await store.insert_job(job)
        with pytest.raises(Conflict):
            await store.insert_job(job)  # the same id again: refused
        other = os.open(tmp_path / ".inferq.db.write-turns", os.O_RDWR)
        try:
            # free at once: nobody holds it between transactions
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(other, fcntl.LOCK_UN)
        finally:
            os.close(other)
    finally:
        await store.close()
