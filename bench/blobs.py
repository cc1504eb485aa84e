"""Blob stores: upload and download MB/s and peak RSS on every store, in one run.

For each store (a local directory, PostgreSQL, an S3-compatible bucket) and each size
(default 20 and 200 MB), a fresh process opens the store, streams the blob in from a
generator through ``BlobStore.writer`` (1 MiB writes, as the API's upload paths hand
them over), then reads it back through ``BlobStore.read`` and checks its SHA-256.
Throughput is bytes over wall time; memory is the process's peak RSS during each
phase (the kernel's high-water mark, ``VmHWM``, reset at the start of the phase) and its
growth over the RSS once the store is open. Memory is flat with the file size when the
growth at the large size is no larger than at the small one.

The bucket is moto's S3 server on loopback (the only S3-compatible server installable
here): a Python process that keeps objects in its own memory, so the S3 column is moto's
speed, not a real bucket's; what it shows of inferq is the client side (the growth).
PostgreSQL is the local server at 127.0.0.1:5432, each run in a fresh schema.

    .venv/bin/python bench/blobs.py [--sizes 20,200] [--stores local,postgres,s3]
                                    [--rounds N] [--no-doc]

On a small shared machine one run's throughput moves by half or more (the directory's
downloads come from the page cache, its uploads wait on the disk's writeback of what ran
before). ``--rounds N`` measures every store and size N times, the stores in turn (their
order reversed every other round, so that none always runs first), and reports each
figure's median over the rounds, the largest peak RSS, and the ratios to the local
directory of every round, each taken from stores measured a few seconds apart.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import (
    NOISY,
    PYTHON,
    ROOT,
    busy_cpu_seconds,
    machine,
    machine_line,
    postgres_schema,
    table,
    update_doc,
)

sys.path.insert(0, str(ROOT))  # tests.support: moto's server and the PostgreSQL schema

MB = 1_000_000
PIECE = 1 << 20
PG_BASE = "postgresql://postgres@127.0.0.1:5432/test"


# -- one measurement, in its own process -------------------------------------------


def _kib(name: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    raise KeyError(name)


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _pieces(size: int) -> Iterator[bytes]:
    """``size`` bytes in 1 MiB pieces that differ from each other (no store can
    shortcut repeated data)."""
    block = random.Random(size).randbytes(PIECE)  # incompressible: no store's shortcut
    sent = 0
    for i in range(size // PIECE + 1):
        piece = i.to_bytes(8, "big") + block[8:]
        piece = piece[: size - sent]
        if not piece:
            return
        sent += len(piece)
        yield piece


async def _one(url: str, size: int) -> dict[str, float]:
    from inferq.blobs import create_blobs

    store = create_blobs(url, database_url="", default_dir=Path("."))
    await store.open()
    try:
        expected = hashlib.sha256()
        base = _kib("VmRSS") / 1024
        _reset_peak()
        started = time.perf_counter()
        async with store.writer("bench/object") as out:
            for piece in _pieces(size):
                expected.update(piece)
                await out.write(piece)
        up = time.perf_counter() - started
        up_peak = _kib("VmHWM") / 1024
        _reset_peak()
        got = hashlib.sha256()
        read = 0
        started = time.perf_counter()
        async for data in store.read("bench/object"):
            got.update(data)
            read += len(data)
        down = time.perf_counter() - started
        down_peak = _kib("VmHWM") / 1024
        if read != size or got.digest() != expected.digest():
            raise RuntimeError("the blob read back differs")
        await store.delete("bench/object")
    finally:
        await store.close()
    return {"base": base, "up": up, "down": down, "up_peak": up_peak, "down_peak": down_peak}


# -- the stores --------------------------------------------------------------------


@contextlib.contextmanager
def _store_url(name: str, tmp: Path) -> Iterator[str]:
    if name == "local":
        yield f"file://{tmp}/blobs-{uuid.uuid4().hex[:8]}"
    elif name == "postgres":
        with _postgres_schema() as url:
            yield url
    else:
        from tests.support.s3 import s3_server

        with s3_server(tmp / "moto.log") as server:
            yield server.url()


@contextlib.contextmanager
def _postgres_schema() -> Iterator[str]:
    """A fresh schema with the job store's tables (its migrations), dropped afterwards."""
    from inferq.store.postgres import PostgresStore

    async def migrate(url: str) -> None:
        store = PostgresStore(url)
        await store.open()
        await store.close()

    with postgres_schema(PG_BASE) as url:
        asyncio.run(migrate(url))
        yield url


@dataclass
class Result:
    store: str
    mb: int
    up_mbs: float
    down_mbs: float
    base_mb: float
    up_peak_mb: float
    down_peak_mb: float

    @property
    def growth(self) -> float:
        return max(self.up_peak_mb, self.down_peak_mb) - self.base_mb


def measure(store: str, sizes: list[int], tmp: Path) -> list[Result]:
    results = []
    with _store_url(store, tmp) as url:
        for mb in sizes:
            print(f"{store}: {mb} MB", flush=True)
            done = subprocess.run(
                [PYTHON, __file__, "--one", url, str(mb * MB)],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                raise RuntimeError(f"{store} {mb} MB failed:\n{done.stdout}\n{done.stderr}")
            got: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
            results.append(
                Result(
                    store,
                    mb,
                    mb / got["up"],
                    mb / got["down"],
                    got["base"],
                    got["up_peak"],
                    got["down_peak"],
                )
            )
    return results


def report(results: list[Result]) -> str:
    header = [
        "store",
        "MB",
        "upload MB/s",
        "download MB/s",
        "RSS with the store open MB",
        "peak RSS upload MB",
        "peak RSS download MB",
        "growth MB",
    ]
    rows = [
        [
            r.store,
            r.mb,
            f"{r.up_mbs:.0f}",
            f"{r.down_mbs:.0f}",
            f"{r.base_mb:.0f}",
            f"{r.up_peak_mb:.0f}",
            f"{r.down_peak_mb:.0f}",
            f"{r.growth:+.0f}",
        ]
        for r in results
    ]
    return table(header, rows)


def median(rounds: list[list[Result]]) -> list[Result]:
    """One result per store and size: the medians of the rounds' throughputs and base RSS,
    the largest of their peaks."""
    by: dict[tuple[str, int], list[Result]] = {}
    for one in rounds:
        for r in one:
            by.setdefault((r.store, r.mb), []).append(r)
    return [
        Result(
            store,
            mb,
            statistics.median(r.up_mbs for r in rs),
            statistics.median(r.down_mbs for r in rs),
            statistics.median(r.base_mb for r in rs),
            max(r.up_peak_mb for r in rs),
            max(r.down_peak_mb for r in rs),
        )
        for (store, mb), rs in by.items()
    ]


def round_ratios(rounds: list[list[Result]]) -> str:
    """Each store's throughput against the local directory's of the same round, at the
    largest size, round by round."""
    parts = []
    for store in ("postgres", "s3"):
        ups, downs = [], []
        for one in rounds:
            largest = max(r.mb for r in one)
            by = {(r.store, r.mb): r for r in one}
            local, r = by.get(("local", largest)), by.get((store, largest))
            if local is not None and r is not None:
                ups.append(f"{r.up_mbs / local.up_mbs:.2f}")
                downs.append(f"{r.down_mbs / local.down_mbs:.2f}")
        if ups:
            parts.append(
                f"{store} against the local directory, round by round: upload "
                f"{', '.join(ups)}x; download {', '.join(downs)}x"
            )
    return "; ".join(parts) + "." if parts else ""


def ratios(results: list[Result]) -> str:
    """PostgreSQL's and the bucket's throughput against the local directory's, at the
    largest size; and each store's growth at the largest size against the smallest."""
    largest = max(r.mb for r in results)
    smallest = min(r.mb for r in results)
    by = {(r.store, r.mb): r for r in results}
    parts = []
    local = by.get(("local", largest))
    for store in ("postgres", "s3"):
        r = by.get((store, largest))
        if local is not None and r is not None:
            parts.append(
                f"{store} at {largest} MB: upload {r.up_mbs / local.up_mbs:.2f}x and download "
                f"{r.down_mbs / local.down_mbs:.2f}x the local directory's"
            )
    for store in ("local", "postgres", "s3"):
        big, small = by.get((store, largest)), by.get((store, smallest))
        if big is not None and small is not None and largest != smallest:
            parts.append(
                f"{store}: growth {small.growth:+.0f} MB at {smallest} MB, "
                f"{big.growth:+.0f} MB at {largest} MB"
            )
    return "; ".join(parts) + "."


def _rounds_line(rounds: int) -> str:
    if rounds == 1:
        return ""
    return (
        f"{rounds} rounds, the stores in turn (reversed every other round): medians of "
        f"the throughputs, the largest peaks; "
    )


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--one":
        print(json.dumps(asyncio.run(_one(sys.argv[2], int(sys.argv[3])))))
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="20,200", help="MB, comma-separated")
    parser.add_argument("--stores", default="local,postgres,s3")
    parser.add_argument(
        "--rounds", type=int, default=1, help="measure every store N times; report medians"
    )
    parser.add_argument("--no-doc", action="store_true", help="do not update docs/benchmarks.md")
    parser.add_argument("--section", default="blobs", help="the docs section to write")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    info = machine()
    print(machine_line(info))
    busy0, wall0 = busy_cpu_seconds(), time.monotonic()
    stores = args.stores.split(",")
    rounds: list[list[Result]] = []
    with tempfile.TemporaryDirectory(prefix="inferq-bench-") as tmp:
        for n in range(args.rounds):
            one: list[Result] = []
            for store in stores if n % 2 == 0 else stores[::-1]:
                one += measure(store, sizes, Path(tmp))
            rounds.append(one)
    results = rounds[0] if args.rounds == 1 else median(rounds)
    wall = time.monotonic() - wall0
    # cores busy on average, this benchmark's processes included (one core's worth
    # of them at most, as they take turns)
    busy = (busy_cpu_seconds() - busy0) / wall
    result_table, notes = report(results), ratios(results)
    if args.rounds > 1:
        notes += " " + round_ratios(rounds)
    print()
    print(result_table)
    print()
    print(notes)
    print(f"whole benchmark: {wall:.0f} s, cores busy on average {busy:.2f}")
    if args.no_doc:
        return
    quiet = "" if busy < 1 + NOISY else " Not a quiet machine: other work ran alongside."
    doc = "\n".join([
        machine_line(info),
        "",
        f"One process per store and size; 1 MiB writes; reads in 64 KiB chunks; "
        f"{_rounds_line(args.rounds)}the whole run took {wall:.0f} s, cores busy on "
        f"average {busy:.2f} (this benchmark and moto or PostgreSQL use up to about "
        f"1.5).{quiet}",
        "",
        result_table,
        "",
        notes,
    ])  # fmt: skip
    update_doc(args.section, doc)


if __name__ == "__main__":
    main()
