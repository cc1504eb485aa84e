"""Batch memory: the server's resident memory while a large batch goes through.

A real ``inferq serve`` (SQLite) with a models file serving the fake engine
(``token_delay = 0``, 3 slots; batch rows may fill them all), so
the engine costs nothing and what is measured is inferq's own handling of the
file. For each size (default 10,000 and 100,000 rows of ~2,000 bytes: ~20 and
~200 MB), on a fresh server:

* baseline: the server's RSS once it is ready, then after a tiny 10-row batch
  (upload, run, download) has warmed every code path the big one takes;
* upload: ``POST /v1/files`` of the JSONL file, generated on disk beforehand
  and streamed by httpx from the file object (the client never holds it);
* batch: ``POST /v1/batches`` and polling ``GET /v1/batches/{id}`` every second
  until it is completed: validation and row creation, execution, finalization
  (its phases split by the batch's own timestamps);
* download: ``GET /v1/files/{output_file_id}/content`` streamed to disk.

Memory: the peak RSS of each client-side phase is the kernel's high-water mark
(``VmHWM`` in ``/proc/<pid>/status``, reset by writing 5 to
``/proc/<pid>/clear_refs`` when the phase starts), and a sampler reads
``VmRSS`` and ``RssAnon`` every 50 ms, which splits the batch's peak by its
server-side phases. Growth is the peak minus the baseline after the tiny batch.

    .venv/bin/python bench/batch_memory.py [--rows 100000] [--compare 10000]

``--database-url postgresql://…`` runs each size on PostgreSQL instead (a fresh schema,
dropped afterwards), where the files and outputs are stored in the database too.
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from _common import (
    NOISY,
    Server,
    batch_record,
    batch_row_spans,
    busy_cpu_seconds,
    cpu_seconds,
    create_batch,
    download_file,
    machine,
    machine_line,
    postgres_schema,
    table,
    update_doc,
    upload_file,
    wait_batch,
    wait_until_quiet,
)

MODEL = "fake"
SLOTS = 3
CONTEXT = 4096
MB = 1_000_000
WORDS = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
    "juliet", "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo",
    "sierra", "tango", "uniform", "victor", "whiskey", "xray", "yankee", "zulu",
]  # fmt: skip


# -- memory of a process ---------------------------------------------------------


def status_kib(pid: int, *names: str) -> dict[str, int]:
    """Fields of /proc/<pid>/status in KiB (VmRSS, VmHWM, RssAnon, RssFile...)."""
    found: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in names:
                found[key] = int(value.split()[0])
    return found


def reset_peak(pid: int) -> None:
    """Reset the process's VmHWM to its current RSS (Linux 4.0+)."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def peak_mb(pid: int) -> float:
    return status_kib(pid, "VmHWM")["VmHWM"] * 1024 / MB


def rss_mb(pid: int) -> float:
    return status_kib(pid, "VmRSS")["VmRSS"] * 1024 / MB


class Sampler:
    """VmRSS and RssAnon of a process every ``interval`` s, with wall-clock times."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, float, float]] = []  # time, rss MB, anon MB
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                kib = status_kib(self.pid, "VmRSS", "RssAnon")
            except OSError:
                return
            self.samples.append(
                (time.time(), kib["VmRSS"] * 1024 / MB, kib.get("RssAnon", 0) * 1024 / MB)
            )
            self._stop.wait(self.interval)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def at(self, when: float) -> float:
        """The RSS sampled nearest to ``when`` (MB)."""
        return min(self.samples, key=lambda s: abs(s[0] - when))[1]

    def peak(self, start: float, end: float) -> tuple[float, float]:
        """The largest RSS and RssAnon sampled in [start, end] (MB)."""
        # one interval of slack each side: a phase shorter than the interval still
        # gets the samples next to it
        slack = self.interval * 1.5
        inside = [(r, a) for t, r, a in self.samples if start - slack <= t <= end + slack]
        if not inside:
            return float("nan"), float("nan")
        return max(r for r, _ in inside), max(a for _, a in inside)


# -- the input ------------------------------------------------------------------


def write_input(path: Path, rows: int, row_bytes: int, max_tokens: int) -> int:
    """A JSONL batch file of ``rows`` chat requests of about ``row_bytes`` each."""
    with path.open("w") as f:
        for i in range(rows):
            head = (
                f'{{"custom_id":"row-{i}","method":"POST","url":"/v1/chat/completions",'
                f'"body":{{"model":"{MODEL}","max_tokens":{max_tokens},"messages":'
                '[{"role":"user","content":"'
            )
            words = [f"row{i}"]
            size = len(head) + len(words[0]) + 7
            while size < row_bytes:
                word = WORDS[(i * 31 + len(words) * 7) % len(WORDS)]
                words.append(word)
                size += len(word) + 1
            f.write(head + " ".join(words) + '"}]}}\n')
    return path.stat().st_size


# -- one size -------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    seconds: float
    peak_mb: float  # VmHWM (exact) or the sampled peak
    anon_mb: float  # sampled RssAnon peak
    exact: bool  # whether peak_mb is the kernel's high-water mark
    #: sampled RSS at 20% and at 90% of the phase: flat if memory does not grow with rows
    along: tuple[float, float] | None = None


@dataclass
class Run:
    rows: int
    file_bytes: int
    output_bytes: int
    startup_mb: float
    tiny_peak_mb: float
    baseline_mb: float
    baseline_anon_mb: float
    phases: list[Phase] = field(default_factory=list)
    other_cpu: float = 0.0
    wall: float = 0.0
    server_cpu: float = 0.0
    client_max_rss_mb: float = 0.0


def run_batch(
    client: httpx.Client, path: Path, out: Path, *, poll: float
) -> tuple[dict[str, Any], dict[str, Any], float, float, float]:
    """Upload, run and download one batch; returns the file record, the batch and
    the client-side times (upload end, batch end, download end; wall clock)."""
    record = upload_file(client, path)
    uploaded = time.time()
    created = create_batch(client, record["id"])
    batch = wait_batch(client, created["id"], interval=poll, timeout=6 * 3600)
    if batch["status"] != "completed" or not batch["output_file_id"]:
        raise RuntimeError(f"the batch ended {batch['status']}: {batch}")
    ended = time.time()
    download_file(client, batch["output_file_id"], out)
    return record, batch, uploaded, ended, time.time()


def measure(rows: int, args: argparse.Namespace, tmp: Path) -> Run:
    work = tmp / f"rows-{rows}"
    work.mkdir()
    source = work / "input.jsonl"
    print(f"\n{rows:,} rows: writing the input file", flush=True)
    file_bytes = write_input(source, rows, args.row_bytes, args.max_tokens)
    tiny = work / "tiny.jsonl"
    write_input(tiny, 10, args.row_bytes, args.max_tokens)
    models = work / "models.toml"
    models.write_text(
        f'[models.{MODEL}]\nengine = "fake"\ncontext_length = {CONTEXT}\nslots = {SLOTS}\n'
        "token_delay = 0\n"
    )
    data_dir = work / "data"
    with (
        _database(args.database_url) as url,
        Server(
            data_dir, models_file=models, env={"INFERQ_DATABASE_URL": url} if url else None
        ) as server,
    ):
        pid = server.pid
        key = server.create_key("bench")
        client = httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=600
        )
        with client:
            time.sleep(2.0)
            startup = rss_mb(pid)
            reset_peak(pid)
            run_batch(client, tiny, work / "tiny-out.jsonl", poll=0.2)
            tiny_peak = peak_mb(pid)
            time.sleep(2.0)
            wait_until_quiet()
            base = status_kib(pid, "VmRSS", "RssAnon")
            run = Run(
                rows=rows,
                file_bytes=file_bytes,
                output_bytes=0,
                startup_mb=startup,
                tiny_peak_mb=tiny_peak,
                baseline_mb=base["VmRSS"] * 1024 / MB,
                baseline_anon_mb=base["RssAnon"] * 1024 / MB,
            )
            busy0, server0, wall0 = busy_cpu_seconds(), cpu_seconds(pid), time.monotonic()
            own0 = resource.getrusage(resource.RUSAGE_SELF)
            with Sampler(pid) as sampler:
                print(f"{rows:,} rows: upload ({file_bytes / MB:.0f} MB)", flush=True)
                reset_peak(pid)
                t0 = time.time()
                record = upload_file(client, source)
                t1 = time.time()
                upload_peak = peak_mb(pid)

                print(f"{rows:,} rows: batch", flush=True)
                reset_peak(pid)
                created = create_batch(client, record["id"])
                batch = wait_batch(
                    client,
                    created["id"],
                    interval=args.poll,
                    timeout=6 * 3600,
                    on_status=lambda old, new: print(f"  {new}", flush=True),
                )
                if batch["status"] != "completed" or not batch["output_file_id"]:
                    raise RuntimeError(f"the batch ended {batch['status']}: {batch}")
                t2 = time.time()
                batch_peak = peak_mb(pid)

                print(f"{rows:,} rows: download", flush=True)
                reset_peak(pid)
                output = work / "output.jsonl"
                run.output_bytes = download_file(client, batch["output_file_id"], output)
                t3 = time.time()
                download_peak = peak_mb(pid)
            run.wall = time.monotonic() - wall0
            own1 = resource.getrusage(resource.RUSAGE_SELF)
            own = own1.ru_utime + own1.ru_stime - own0.ru_utime - own0.ru_stime
            run.server_cpu = cpu_seconds(pid) - server0
            run.other_cpu = max(0.0, (busy_cpu_seconds() - busy0 - own - run.server_cpu) / run.wall)
            run.client_max_rss_mb = own1.ru_maxrss * 1024 / MB
        if args.keep is not None:
            with (work / "samples.csv").open("w") as f:
                f.write("time,rss_mb,anon_mb\n")
                f.writelines(f"{t:.3f},{r:.2f},{a:.2f}\n" for t, r, a in sampler.samples)
        db: Path | str = url or data_dir / "inferq.db"
        stored = batch_record(db, created["id"])
        spans = batch_row_spans(db, created["id"])
    if len(spans) != rows or batch["request_counts"]["completed"] != rows:
        raise RuntimeError(f"expected {rows} rows done: {batch['request_counts']}")

    created_at = float(stored["created_at"])
    validated_at = float(stored["validated_at"])
    finalizing_at = float(stored["finalizing_at"])
    finished_at = float(stored["finished_at"])
    first_claim = spans[0][1]
    last_finish = max(f for _, _, f in spans)

    def sampled(name: str, start: float, end: float) -> Phase:
        rss, anon = sampler.peak(start, end)
        span = end - start
        along = (sampler.at(start + 0.2 * span), sampler.at(start + 0.9 * span))
        return Phase(name, span, rss, anon, exact=False, along=along)

    _, upload_anon = sampler.peak(t0, t1)
    _, batch_anon = sampler.peak(t1, t2)
    _, download_anon = sampler.peak(t2, t3)
    run.phases = [
        Phase("upload (POST /v1/files)", t1 - t0, upload_peak, upload_anon, exact=True),
        Phase("batch, created to seen completed", t2 - t1, batch_peak, batch_anon, exact=True),
        sampled("- validation and row creation", created_at, validated_at),
        sampled("- execution (first claim to last row)", first_claim, last_finish),
        sampled("- finalization (result files)", finalizing_at, finished_at),
        Phase("download (GET .../content)", t3 - t2, download_peak, download_anon, exact=True),
    ]
    return run


@contextlib.contextmanager
def _database(base: str | None) -> Iterator[str | None]:
    """None (SQLite in the data directory), or a fresh PostgreSQL schema's URL."""
    if base is None:
        yield None
        return
    with postgres_schema(base) as url:
        yield url


def report(runs: list[Run]) -> tuple[str, str]:
    header = [
        "rows",
        "input file MB",
        "phase",
        "seconds",
        "peak RSS MB",
        "growth MB",
        "peak RssAnon MB",
        "anon growth MB",
        "RSS at 20% / 90% of the phase",
    ]
    body: list[list[object]] = []
    for run in runs:
        body.append([
            f"{run.rows:,}", f"{run.file_bytes / MB:.1f}", "baseline (after a 10-row batch)",
            "", f"{run.baseline_mb:.1f}", "0.0", f"{run.baseline_anon_mb:.1f}", "0.0", "",
        ])  # fmt: skip
        for phase in run.phases:
            mark = "" if phase.exact else " (sampled)"
            body.append(
                [
                    f"{run.rows:,}",
                    f"{run.file_bytes / MB:.1f}",
                    phase.name,
                    f"{phase.seconds:.1f}",
                    f"{phase.peak_mb:.1f}{mark}",
                    f"{phase.peak_mb - run.baseline_mb:+.1f}",
                    f"{phase.anon_mb:.1f}",
                    f"{phase.anon_mb - run.baseline_anon_mb:+.1f}",
                    f"{phase.along[0]:.1f} / {phase.along[1]:.1f}" if phase.along else "",
                ]
            )
    notes = []
    for run in runs:
        worst = max(p.peak_mb for p in run.phases) - run.baseline_mb
        notes.append(
            f"{run.rows:,} rows ({run.file_bytes / MB:.0f} MB in, {run.output_bytes / MB:.0f} "
            f"MB out): RSS after start-up {run.startup_mb:.1f} MB, peak of the 10-row "
            f"batch {run.tiny_peak_mb:.1f} MB, largest growth over the baseline "
            f"{worst:+.1f} MB; {run.wall:.0f} s from upload to downloaded, server CPU "
            f"{run.server_cpu:.0f} s, client peak RSS {run.client_max_rss_mb:.0f} MB, other "
            f"processes {run.other_cpu:.2f} cores."
        )
    return table(header, body), " ".join(notes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000, help="rows of the big batch")
    parser.add_argument(
        "--compare", type=int, default=10_000, help="rows of a smaller run first (0: none)"
    )
    parser.add_argument("--row-bytes", type=int, default=2000, help="bytes per input line")
    parser.add_argument("--max-tokens", type=int, default=64, help="fake words per answer")
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between batch polls")
    parser.add_argument(
        "--quick", action="store_true", help="2,000 and 200 rows (implies --no-doc)"
    )
    parser.add_argument(
        "--keep",
        type=Path,
        default=None,
        help="work in this (new) directory and keep it: the databases, the files, "
        "samples.csv (time, RSS MB, RssAnon MB) per size",
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help="a PostgreSQL database to run on (a fresh schema per size) instead of SQLite",
    )
    parser.add_argument("--no-doc", action="store_true", help="do not update docs/benchmarks.md")
    parser.add_argument(
        "--force-doc", action="store_true", help="update the docs even from a noisy run"
    )
    args = parser.parse_args()
    if args.quick:
        args.rows, args.compare = 2000, 200
    sizes = [n for n in (args.compare, args.rows) if n > 0]
    info = machine()
    print(machine_line(info))
    started = time.monotonic()
    if args.keep is not None:
        args.keep.mkdir(parents=True)
        runs = [measure(n, args, args.keep) for n in sizes]
    else:
        with tempfile.TemporaryDirectory(prefix="inferq-bench-") as tmp:
            runs = [measure(n, args, Path(tmp)) for n in sizes]
    total = time.monotonic() - started
    result_table, notes = report(runs)
    print()
    print(result_table)
    print()
    print(notes)
    print(f"whole benchmark: {total:.0f} s")
    if args.no_doc or args.quick:
        return
    other = max(r.other_cpu for r in runs)
    if other > NOISY and not args.force_doc:
        print(f"not updating the docs: other processes used {other:.2f} cores (--force-doc)")
        return
    store = (
        "PostgreSQL (the job store and the blobs: files and outputs in its chunk rows)"
        if args.database_url
        else "SQLite"
    )
    doc = "\n".join([
        machine_line(info),
        "",
        f"Fake engine (token_delay 0, {SLOTS} slots), {store}, log level "
        f"info; input lines of ~{args.row_bytes} bytes, max_tokens {args.max_tokens}; a "
        f"fresh server per size; polls every {args.poll:g} s; the whole benchmark took "
        f"{total / 60:.0f} min. Peak RSS: the kernel's high-water mark (VmHWM, reset at each "
        "phase) for upload, batch and download; the batch's three server-side phases "
        "(from its own timestamps) are the largest of the 50 ms samples. Growth is "
        "against the baseline row.",
        "",
        result_table,
        "",
        notes,
    ])  # fmt: skip
    update_doc("batch_memory_postgres" if args.database_url else "batch_memory", doc)


if __name__ == "__main__":
    main()
