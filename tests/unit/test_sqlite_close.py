"""Closing the SQLite store while reads are in flight.

A read runs in a thread of its own; when its caller is cancelled (a request that went
away, a test's event loop torn down) the thread goes on. Closing its connection under
it is a use after free in SQLite, which killed a test run with a segmentation fault.
Close now stops new reads, interrupts the running ones and waits for them to end.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from inferq.core.errors import StoreUnavailable
from inferq.store.sqlite import SQLiteExecutor

#: a read that takes seconds unless interrupted
SLOW = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300000000) "
    "SELECT count(*) FROM c"
)


async def test_a_read_in_flight_is_interrupted_and_close_waits_for_it(tmp_path: Path) -> None:
    db = SQLiteExecutor(tmp_path / "q.db", synchronous="FULL")
    await db.open()
    read = asyncio.create_task(db._read(lambda conn: conn.execute(SLOW).fetchall()))
    await asyncio.sleep(0.2)  # the read is running in its thread
    await asyncio.wait_for(db.close(), timeout=10)  # interrupted: no need to wait seconds
    with pytest.raises(StoreUnavailable, match="interrupted"):
        await read
    with pytest.raises(StoreUnavailable, match="closing"):
        await db._read(lambda conn: conn.execute("SELECT 1").fetchall())


async def test_the_store_reads_again_after_it_is_opened_again(tmp_path: Path) -> None:
    db = SQLiteExecutor(tmp_path / "q.db", synchronous="FULL")
    await db.open()
    assert await db._read(lambda conn: conn.execute("SELECT 1").fetchone()[0]) == 1
    await db.close()
    await db.open()
    try:
        assert await db._read(lambda conn: conn.execute("SELECT 2").fetchone()[0]) == 2
    finally:
        await db.close()


def test_closing_under_cancelled_reads_does_not_crash_the_process(tmp_path: Path) -> None:
    # a process of its own: without the wait, this crashes the interpreter
    code = f"""
import asyncio
from pathlib import Path
from inferq.store.sqlite import SQLiteExecutor

SLOW = {SLOW!r}

async def once(i):
    db = SQLiteExecutor(Path({str(tmp_path)!r}) / f"q{{i}}.db", synchronous="FULL")
    await db.open()
    reads = [asyncio.create_task(db._read(lambda c: c.execute(SLOW).fetchall())) for _ in range(4)]
    await asyncio.sleep(0.05)
    for read in reads:
        read.cancel()  # the callers go away; the threads go on reading
    await db.close()
    await asyncio.gather(*reads, return_exceptions=True)

async def main():
    for i in range(10):
        await once(i)

asyncio.run(main())
print("ok")
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "ok", (run.returncode, run.stderr[-2000:])
