"""Real inferq processes sharing one PostgreSQL schema, for the scale-out tests.

A :class:`Cluster` starts ``inferq serve --no-worker`` API processes and ``inferq
worker`` processes on one schema, with the fake engine writing an execution log,
and keeps every process's log for failure messages. Nothing here waits without a
bound: every wait names what it waited for when it gives up.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar
from urllib.parse import quote

import asyncpg
import httpx

from tests.support.postgres import database_url
from tests.support.server import free_port

T = TypeVar("T")

MODEL = "fake"
#: the Together statuses a job never leaves
FINAL = frozenset({"done", "failed", "canceled"})


@contextlib.asynccontextmanager
async def fresh_schema() -> AsyncIterator[str]:
    """A new empty schema, dropped afterwards; yields its name.

    Unlike ``tests.support.postgres.fresh_schema`` it holds no connection meanwhile,
    so it survives a test that restarts PostgreSQL.
    """
    name = "t_" + uuid.uuid4().hex[:12]
    conn = await asyncpg.connect(database_url())
    try:
        await conn.execute(f"CREATE SCHEMA {name}")
    finally:
        await conn.close()
    try:
        yield name
    finally:
        conn = await asyncpg.connect(database_url())
        try:
            await conn.execute(f"DROP SCHEMA {name} CASCADE")
        finally:
            await conn.close()


def schema_url(schema: str) -> str:
    """The test database URL, pointed at ``schema`` (what inferq processes get)."""
    base = database_url()
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options={quote(f'-csearch_path={schema}')}"


async def connect(schema: str) -> asyncpg.Connection:
    """A connection of the test itself, on ``schema``."""
    return await asyncpg.connect(database_url(), server_settings={"search_path": schema})


async def job_states(conn: asyncpg.Connection) -> Counter[str]:
    rows = await conn.fetch("SELECT state, count(*) AS n FROM jobs GROUP BY state")
    return Counter({r["state"]: r["n"] for r in rows})


class Proc:
    """One inferq process with its own log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def spawn(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "inferq", *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """kill -9: no shutdown code runs."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc.wait(timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def is_ready(self) -> bool:  # pragma: no cover - overridden
        raise NotImplementedError


class Api(Proc):
    def __init__(self, name: str, env: dict[str, str], log_path: Path, data_dir: Path) -> None:
        self.port = free_port()
        args = ["serve", "--no-worker", "--port", str(self.port), "--data-dir", str(data_dir)]
        super().__init__(name, args, env, log_path)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def is_ready(self) -> bool:
        try:
            async with httpx.AsyncClient(timeout=1) as client:
                return (await client.get(f"{self.url}/readyz")).status_code == 200
        except httpx.HTTPError:
            return False


class Worker(Proc):
    def __init__(self, name: str, env: dict[str, str], log_path: Path, data_dir: Path) -> None:
        super().__init__(name, ["worker", "--data-dir", str(data_dir)], env, log_path)

    async def is_ready(self) -> bool:
        return re.search(rf"worker \S+:{self.pid}:\S+ started", self.log()) is not None


class Cluster:
    """API and worker processes on one schema, the fake engine logging its executions."""

    def __init__(
        self,
        root: Path,
        schema: str,
        *,
        lease_seconds: float,
        token_delay: float = 0.0,
        slots: int = 4,
    ) -> None:
        self.root = root
        self.schema = schema
        self.data_dir = root / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.execution_log = root / "executions.log"
        models = root / "models.toml"
        models.write_text(
            f'[models.{MODEL}]\nengine = "fake"\ncontext_length = 512\nslots = {slots}\n'
            f"token_delay = {token_delay}\nexecution_log = {str(self.execution_log)!r}\n"
        )
        self.lease_seconds = lease_seconds
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("INFERQ_")}
        self.env.update(
            {
                "PYTHONUNBUFFERED": "1",
                "INFERQ_DATABASE_URL": schema_url(schema),
                "INFERQ_MODELS_FILE": str(models),
                "INFERQ_DATA_DIR": str(self.data_dir),
                "INFERQ_LEASE_SECONDS": str(lease_seconds),
            }
        )
        self.procs: list[Proc] = []
        self.started = time.monotonic()

    # -- processes --------------------------------------------------------------

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "inferq", *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise AssertionError(f"inferq {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def create_key(self, name: str) -> str:
        """Migrate the schema (``db upgrade``) and create a key; returns its secret."""
        self.cli("db", "upgrade")
        return self.cli("keys", "create", "--name", name).strip().splitlines()[-1]

    def _log_path(self, name: str) -> Path:
        return self.root / f"{name}.log"

    def spawn_api(self) -> Api:
        name = f"api{sum(isinstance(p, Api) for p in self.procs) + 1}"
        api = Api(name, self.env, self._log_path(name), self.data_dir)
        api.spawn()
        self.procs.append(api)
        return api

    def spawn_worker(self) -> Worker:
        name = f"worker{sum(isinstance(p, Worker) for p in self.procs) + 1}"
        worker = Worker(name, self.env, self._log_path(name), self.data_dir)
        worker.spawn()
        self.procs.append(worker)
        return worker

    async def wait_ready(self, procs: list[Proc], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        pending = list(procs)
        while pending:
            for proc in list(pending):
                if not proc.alive:
                    self.fail(f"{proc.name} exited before it was ready")
                if await proc.is_ready():
                    pending.remove(proc)
            if not pending:
                return
            if time.monotonic() > deadline:
                self.fail(f"not ready within {timeout:g}s: {[p.name for p in pending]}")
            await asyncio.sleep(0.1)

    @property
    def apis(self) -> list[Api]:
        return [p for p in self.procs if isinstance(p, Api) and p.alive]

    @property
    def workers(self) -> list[Worker]:
        return [p for p in self.procs if isinstance(p, Worker) and p.alive]

    def close(self) -> None:
        for proc in self.procs:
            proc.kill()

    # -- what the processes left behind ------------------------------------------

    def executions(self) -> Counter[str]:
        """How often each message ran to the end, from the fake engine's log."""
        if not self.execution_log.exists():
            return Counter()
        return Counter(self.execution_log.read_text().splitlines())

    def logs(self) -> str:
        return "".join(p.log() for p in self.procs)

    def log_tails(self, chars: int = 2500) -> str:
        return "\n".join(
            f"--- {p.name} (pid {p.proc.pid if p.proc else '-'}, "
            f"{'alive' if p.alive else 'exited'}) ---\n{p.log()[-chars:]}"
            for p in self.procs
        )

    def fail(self, message: str) -> NoReturn:
        raise AssertionError(
            f"{message}\n[{time.monotonic() - self.started:.1f}s into the test]\n{self.log_tails()}"
        )

    async def wait_for(
        self,
        what: str,
        probe: Callable[[], Awaitable[T | None]],
        *,
        timeout: float,
        interval: float = 0.1,
        detail: Callable[[], Awaitable[str]] | None = None,
    ) -> T:
        """Await ``probe`` until it returns something truthy; fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            found = await probe()
            if found:
                return found
            if time.monotonic() > deadline:
                extra = f" ({await detail()})" if detail is not None else ""
                self.fail(f"timed out after {timeout:g}s waiting for {what}{extra}")
            await asyncio.sleep(interval)


def together_payload(message: str) -> dict[str, Any]:
    return {
        "model": MODEL,
        "payload": {"messages": [{"role": "user", "content": message}], "max_tokens": 64},
    }


# -- the local PostgreSQL server ------------------------------------------------------


def _pg_version() -> str:
    versions = sorted(Path("/etc/postgresql").iterdir()) if Path("/etc/postgresql").is_dir() else []
    if not versions:
        raise AssertionError("no local PostgreSQL cluster under /etc/postgresql to restart")
    return versions[0].name


def pg_ready() -> bool:
    done = subprocess.run(
        ["pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432"], timeout=10, check=False
    )
    return done.returncode == 0


def pg_ctl(action: str) -> None:
    """``pg_ctlcluster <version> main <action>`` (stop is fast: sessions are cut)."""
    extra = ["-m", "fast"] if action == "stop" else []
    done = subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", _pg_version(), "main", action, *extra],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"pg_ctlcluster {action} failed:\n{done.stdout}\n{done.stderr}")


def ensure_pg_up(timeout: float = 30.0) -> None:
    """Start PostgreSQL when it is down; wait until it accepts connections."""
    if pg_ready():
        return
    with contextlib.suppress(AssertionError):
        pg_ctl("start")
    deadline = time.monotonic() + timeout
    while not pg_ready():
        if time.monotonic() > deadline:
            raise AssertionError(f"PostgreSQL did not come back within {timeout:g}s")
        time.sleep(0.2)
