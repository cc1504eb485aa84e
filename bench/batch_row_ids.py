"""A batch's rows and the store's index: name-based (version 5) against ordered (version 8) ids.

A batch's rows are stored while it is validated, 1,000 at a time through ``insert_rows``,
each under an id made from the batch and its line (:func:`inferq.core.batch_format.row_id`).
Name-based ids (a batch's :attr:`~inferq.core.models.Batch.row_ids` 1, what every batch had
before) land on random pages of the unique index on ``jobs.id``; ordered ones (2, what a
batch gets now) follow the batches' creation and their lines, so a chunk appends to the
end of the index. Each side opens a fresh store (a real :class:`SQLiteStore`, its writer
thread, ``synchronous = FULL``; a :class:`PostgresStore` on a fresh schema) and stores
``--batches`` batches of ``--rows`` rows one after the other, as validation does, timing
each batch's inserts (the rows' parameters included: the ids are made there, as in
validation). The store grows batch by batch, so the later batches show what a store that
already holds rows costs. The kinds alternate (v5, v8, v8, v5, ...), ``--rounds`` sides
of each; the table shows each kind's median side.

    .venv/bin/python bench/batch_row_ids.py [--rows 100000] [--batches 4] [--rounds 2]
        [--store sqlite] [--no-doc]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import uvloop

from _common import machine, machine_line, publish, table
from inferq.core.batch_format import CHUNK, row_id
from inferq.core.models import Batch, Job
from inferq.core.states import JobState, ServiceClass
from job_ids import DEFAULT_URL, opened
from store_busy_loop import job

SCHEMES = {"v5": 1, "v8": 2}


def batch(number: int, scheme: int) -> Batch:
    now = time.time()
    return Batch(
        id=f"batch_{number:04d}_{os.urandom(8).hex()}",
        tenant="t",
        dialect="openai",
        model=None,
        endpoint="/v1/chat/completions",
        state=JobState.VALIDATING,
        input_file_id="file-in",
        created_at=now,
        expires_at=now + 86_400,
        row_ids=scheme,
    )


def row(made: Batch, line: int) -> Job:
    """The row validation stores for ``line`` of ``made`` (a chat request)."""
    return job(
        id=row_id(made, line), state=JobState.VALIDATING, service_class=ServiceClass.BATCH,
        batch_id=made.id, custom_id=f"r{line}", batch_line=line, priority=-line,
    )  # fmt: skip


async def side(store_kind: str, id_kind: str, args: argparse.Namespace) -> list[float]:
    """Seconds to store each batch's rows, in order."""
    took = []
    async with opened(store_kind, args.database_url) as store:
        for number in range(args.batches):
            made = batch(number, SCHEMES[id_kind])
            t0 = time.perf_counter()
            for start in range(1, args.rows + 1, CHUNK):
                lines = range(start, min(start + CHUNK, args.rows + 1))
                await store.insert_rows([row(made, line) for line in lines])
            took.append(time.perf_counter() - t0)
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000, help="rows of each batch")
    parser.add_argument("--batches", type=int, default=4, help="batches stored one by one")
    parser.add_argument("--rounds", type=int, default=2, help="sides of each kind")
    parser.add_argument("--store", action="append", choices=("sqlite", "postgres"))
    parser.add_argument("--database-url", default=os.environ.get("TEST_DATABASE_URL", DEFAULT_URL))
    parser.add_argument("--no-doc", action="store_true", help="do not update docs/benchmarks.md")
    args = parser.parse_args()
    info = machine()
    print(machine_line(info), flush=True)
    results: dict[tuple[str, str], list[list[float]]] = {}
    for store_kind in args.store or ["sqlite", "postgres"]:
        for n in range(args.rounds):
            for id_kind in ("v5", "v8") if n % 2 == 0 else ("v8", "v5"):
                took = uvloop.run(side(store_kind, id_kind, args))
                results.setdefault((store_kind, id_kind), []).append(took)
                print(f"  {store_kind:8s} {id_kind}: " + ", ".join(f"{t:.2f} s" for t in took))
    header = ["store", "row ids", *(f"batch {n + 1} (s)" for n in range(args.batches)),
              "all (s), each side"]  # fmt: skip
    rows = []
    for (store_kind, id_kind), sides in results.items():
        per_batch = [statistics.median(s[n] for s in sides) for n in range(args.batches)]
        rows.append([
            store_kind, id_kind, *(f"{t:.2f}" for t in per_batch),
            ", ".join(f"{sum(s):.1f}" for s in sides),
        ])  # fmt: skip
    result = table(header, rows)
    settings = (
        f"{args.batches} batches of {args.rows:,} rows stored one after the other in a fresh "
        f"store, {CHUNK:,} rows per insert_rows; each batch's median over {args.rounds} sides."
    )
    publish("batch_row_ids", info, settings, result, doc=not args.no_doc)


if __name__ == "__main__":
    main()
