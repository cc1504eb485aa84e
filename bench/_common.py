"""Shared pieces of the benchmarks: the server process, the machine, the report.

Not a test helper: the benchmarks run the real ``inferq serve`` the way a user
would, measure, print a table and refresh their section of docs/benchmarks.md.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
PYTHON = sys.executable


# -- the machine ----------------------------------------------------------------


def machine() -> dict[str, str]:
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
                break
    return {
        "cpu": cpu,
        "cores": str(len(os.sched_getaffinity(0))),
        "ram": f"{mem_kib / 1024 / 1024:.1f} GiB",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "inferq": _git_revision(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _git_revision() -> str:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return "unknown"
    return f"{rev or 'unknown'}{' + uncommitted src changes' if dirty else ''}"


def machine_line(info: dict[str, str]) -> str:
    return (
        f"Machine: {info['cpu']}, {info['cores']} cores, {info['ram']} RAM, {info['os']}, "
        f"Python {info['python']}; inferq {info['inferq']}; run {info['date']}."
    )


# -- llama-cpp-python ---------------------------------------------------------------


def plain_cpu_buffers() -> None:
    """Make llama-cpp-python's ``Llama`` (and its server, in this process) keep the
    weights in plain CPU buffers, as inferq's engine does by default.

    llama.cpp's extra CPU buffer types repack weights for AMX or interleaved SIMD
    kernels, and its AMX matrix multiplication crashes (SIGSEGV) on some Intel CPUs
    with AMX. ``Llama`` has no argument for it, so its default parameters are wrapped.
    """
    import llama_cpp.llama_cpp as lib

    default: Any = lib.llama_model_default_params
    if getattr(default, "plain_cpu_buffers", False):
        return

    def params() -> Any:
        p = default()
        p.use_extra_bufts = False
        return p

    params.plain_cpu_buffers = True  # type: ignore[attr-defined]
    lib.llama_model_default_params = params


# -- processes ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def busy_cpu_seconds() -> float:
    """CPU time the whole machine has spent busy so far, all cores (Linux)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def wait_until_quiet(*, limit: float = 0.25, patience: float = 300.0) -> float:
    """Wait (up to ``patience`` s) until other processes use under ``limit`` cores
    for 6 s running.

    Benchmarks on a small shared machine are skewed by anything else running;
    returns the busy cores last seen, so the report can say so.
    """
    deadline = time.monotonic() + patience
    quiet = 0
    while True:
        before = busy_cpu_seconds()
        time.sleep(2.0)
        busy = (busy_cpu_seconds() - before) / 2.0
        quiet = quiet + 1 if busy < limit else 0
        if quiet >= 3:
            return busy
        if time.monotonic() > deadline:
            print(f"warning: the machine stays busy ({busy:.2f} cores); results are skewed")
            return busy
        if busy >= limit:
            print(f"waiting for a quiet machine: {busy:.2f} cores busy", flush=True)


#: above this many cores used by other processes, a run does not update the docs
NOISY = 0.25


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERQ_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def cli(*args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [PYTHON, "-m", "inferq", *args], capture_output=True, text=True, env=_env(env), check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"inferq {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


class Server:
    """``inferq serve`` in a subprocess with its own data directory."""

    def __init__(
        self,
        data_dir: Path,
        *,
        models_file: Path | None = None,
        log_level: str = "info",
        env: dict[str, str] | None = None,
        args: Sequence[str] = (),
        prefix: Sequence[str] = (),
    ) -> None:
        self.data_dir = data_dir
        #: more options of ``inferq serve``, and a command it runs under (``taskset ...``)
        self.args = tuple(args)
        self.prefix = tuple(prefix)
        #: INFERQ_* settings of the server and of its CLI calls (INFERQ_DATABASE_URL...)
        self.env = env or {}
        self.models_file = models_file
        self.log_level = log_level
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"server-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def create_key(self, name: str) -> str:
        out = cli("keys", "create", "--name", name, "--data-dir", str(self.data_dir), env=self.env)
        return out.strip().splitlines()[-1]

    def start(self, timeout: float = 120.0) -> Server:
        args = [
            *self.prefix, PYTHON, "-m", "inferq", "serve", "--port", str(self.port),
            "--data-dir", str(self.data_dir), "--log-level", self.log_level, *self.args,
        ]  # fmt: skip
        if self.models_file is not None:
            args += ["--models", str(self.models_file)]
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, env=_env(self.env)
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log_path.read_text()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server not ready in {timeout}s:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- statistics and the report ----------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile, ``q`` in [0, 100]."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table (also readable as plain text)."""
    cells = [[str(c) for c in header], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def update_doc(section: str, body: str) -> None:
    """Replace the generated block of ``section`` in docs/benchmarks.md (or append it)."""
    start = f"<!-- bench:{section}:start -->"
    end = f"<!-- bench:{section}:end -->"
    block = f"{start}\n{body.strip()}\n{end}"
    text = DOC.read_text("utf-8") if DOC.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text, "utf-8")
    print(f"\nupdated {DOC.relative_to(ROOT)} (section {section})")


def publish(section: str, info: dict[str, str], settings: str, result: str, *, doc: bool) -> None:
    """Print a benchmark's table; with ``doc``, write it with the machine and the
    settings as the section's generated block."""
    print()
    print(result)
    if doc:
        update_doc(section, "\n".join([machine_line(info), "", settings, "", result]))


# -- batches (the OpenAI dialect) --------------------------------------------------


def upload_file(client: httpx.Client, path: Path, *, purpose: str = "batch") -> dict[str, Any]:
    """``POST /v1/files`` streaming ``path`` from disk (httpx reads the file object in
    chunks: the client never holds the file)."""
    with path.open("rb") as f:
        response = client.post(
            "/v1/files",
            data={"purpose": purpose},
            files={"file": (path.name, f, "application/jsonl")},
        )
    response.raise_for_status()
    record: dict[str, Any] = response.json()
    return record


def create_batch(
    client: httpx.Client, file_id: str, *, endpoint: str = "/v1/chat/completions"
) -> dict[str, Any]:
    response = client.post(
        "/v1/batches",
        json={"input_file_id": file_id, "endpoint": endpoint, "completion_window": "24h"},
    )
    response.raise_for_status()
    batch: dict[str, Any] = response.json()
    return batch


#: OpenAI batch statuses after which nothing changes any more
BATCH_ENDED = frozenset({"completed", "failed", "expired", "cancelled"})


def wait_batch(
    client: httpx.Client,
    batch_id: str,
    *,
    interval: float = 0.5,
    timeout: float = 3600.0,
    on_status: Callable[[str, str], None] | None = None,
) -> dict[str, Any]:
    """Poll ``GET /v1/batches/{id}`` until the batch has ended; return its last object.

    ``on_status(old, new)`` is called whenever the client sees the status change.
    """
    deadline = time.monotonic() + timeout
    status = ""
    while True:
        response = client.get(f"/v1/batches/{batch_id}")
        response.raise_for_status()
        batch: dict[str, Any] = response.json()
        if batch["status"] != status:
            if on_status is not None:
                on_status(status, batch["status"])
            status = batch["status"]
        if status in BATCH_ENDED:
            return batch
        if time.monotonic() > deadline:
            raise TimeoutError(f"batch {batch_id} still {status} after {timeout:.0f} s")
        time.sleep(interval)


def download_file(client: httpx.Client, file_id: str, dest: Path) -> int:
    """``GET /v1/files/{id}/content`` streamed to ``dest``; returns the bytes written."""
    size = 0
    with client.stream("GET", f"/v1/files/{file_id}/content") as response:
        response.raise_for_status()
        with dest.open("wb") as f:
            for chunk in response.iter_bytes(1 << 16):
                f.write(chunk)
                size += len(chunk)
    return size


@contextlib.contextmanager
def postgres_schema(base: str) -> Iterator[str]:
    """A fresh, empty schema of the PostgreSQL database at ``base``, dropped afterwards;
    yields the URL that points a process at it."""
    import asyncio

    import asyncpg

    schema = "bench_" + uuid.uuid4().hex[:12]

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(base)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f"CREATE SCHEMA {schema}"))
    sep = "&" if "?" in base else "?"
    try:
        yield f"{base}{sep}options={quote(f'-csearch_path={schema}')}"
    finally:
        asyncio.run(admin(f"DROP SCHEMA {schema} CASCADE"))


def _pg_rows(url: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    import asyncio

    import asyncpg

    async def fetch() -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(url)
        try:
            return [tuple(row) for row in await conn.fetch(query, *args)]
        finally:
            await conn.close()

    return asyncio.run(fetch())


def batch_record(db: Path | str, batch_id: str) -> dict[str, Any]:
    """The stored batch (SQLite file, or PostgreSQL URL): its fields, with the exact
    (float) timestamps that the API rounds to seconds (validated_at = in_progress_at,
    finalizing_at, finished_at = completed_at)."""
    if isinstance(db, str):
        rows = _pg_rows(db, "SELECT created_at, data::text FROM batches WHERE id = $1", batch_id)
        found = rows[0] if rows else None
    else:
        conn = sqlite3.connect(db)
        try:
            found = conn.execute(
                "SELECT created_at, data FROM batches WHERE id = ?", (batch_id,)
            ).fetchone()
        finally:
            conn.close()
    if found is None:
        raise KeyError(batch_id)
    data: dict[str, Any] = json.loads(found[1])
    if data.get("created_at") is None:
        data["created_at"] = found[0]
    return data


def batch_row_spans(db: Path | str, batch_id: str) -> list[tuple[int, float, float]]:
    """(line, claimed_at, finished_at) of every row of the batch that ran, by claim
    (SQLite file, or PostgreSQL URL)."""
    query = (
        "SELECT batch_line, claimed_at, finished_at FROM jobs "
        "WHERE batch_id = ? AND claimed_at IS NOT NULL AND finished_at IS NOT NULL "
        "ORDER BY claimed_at"
    )
    if isinstance(db, str):
        return [
            (int(line), float(c), float(f))
            for line, c, f in _pg_rows(db, query.replace("?", "$1"), batch_id)
        ]
    conn = sqlite3.connect(db)
    try:
        found = conn.execute(query, (batch_id,)).fetchall()
    finally:
        conn.close()
    return [(int(line), float(c), float(f)) for line, c, f in found]
