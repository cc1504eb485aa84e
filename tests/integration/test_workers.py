"""``inferq serve --workers N``: N API processes on one port and one engine worker.

A request reaches any of the API processes (the kernel spreads the connections), the
job runs in the worker process, and the answer comes back through the process that
holds the client's connection, woken by the store (SQLite's datagram bus, PostgreSQL's
NOTIFY). Every dialect answers; sync requests and streams work across processes; a
child that dies is started again, and so is one that stops running (its heartbeats
stop); SIGTERM stops them all, and a supervisor killed
outright takes its children with it.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import openai
import pytest
import together

from tests.integration.helpers import MODEL, raw, submit, wait_status
from tests.support.server import Server, fake_models_file, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def command_line(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    return state == "Z"


def wait_until(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"not {what} within {timeout}s")


#: seconds without a heartbeat after which the supervisor kills an API process
STALL_TIMEOUT = 3


@pytest.fixture(scope="module")
def sqlite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    port = free_port()
    # not the API's port: the worker would fail to listen and be started again forever
    args = ("--workers", "2", "--worker-metrics-port", str(free_port(port)))
    env = {"INFERQ_STALL_TIMEOUT": str(STALL_TIMEOUT)}
    server = Server(tmp_path_factory.mktemp("workers") / "data", args=args, env=env, port=port)
    server.start(timeout=120)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def key(sqlite_server: Server) -> str:
    return sqlite_server.create_key("workers")


def test_two_api_processes_and_one_worker_run_under_the_supervisor(
    sqlite_server: Server,
) -> None:
    assert sqlite_server.proc is not None
    kids = [command_line(pid) for pid in children(sqlite_server.proc.pid)]
    assert sum(" serve --fd " in c and "--no-worker" in c for c in kids) == 2, kids
    assert sum(" worker" in c and " serve " not in c for c in kids) == 1, kids


def test_the_worker_process_serves_its_metrics(sqlite_server: Server, key: str) -> None:
    from tests.integration.test_metrics import bearer, value
    from tests.integration.test_worker_metrics import WorkerProcess

    port = sqlite_server.args[sqlite_server.args.index("--worker-metrics-port") + 1]
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: _answers(f"{url}/healthz"), 60, "the worker's metrics up")
    assert httpx.get(f"{url}/metrics", headers=bearer(key), timeout=10).status_code == 401
    answer = httpx.get(f"{url}/metrics", headers=bearer(sqlite_server.admin_key()), timeout=10)
    samples = WorkerProcess.parse(answer)
    assert value(samples, "inferq_engine_slots", model=MODEL, state="free") >= 1


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_sync_and_streamed_chat_across_processes(sqlite_server: Server, key: str) -> None:
    client = openai.OpenAI(api_key=key, base_url=f"{sqlite_server.url}/v1", max_retries=0)
    for _ in range(6):  # new connections: both API processes take some
        with openai.OpenAI(
            api_key=key, base_url=f"{sqlite_server.url}/v1", max_retries=0
        ) as one_off:
            reply = one_off.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "Say hi."}],
                max_tokens=8,
            )
        assert reply.choices[0].message.content
    pieces = [
        chunk.choices[0].delta.content or ""
        for chunk in client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Count to five."}],
            max_tokens=16,
            stream=True,
        )
        if chunk.choices
    ]
    # relayed from the worker process as generated, not sent whole at the end
    assert len([p for p in pieces if p]) > 1, pieces
    assert "".join(pieces).strip()


def test_every_dialect_answers(sqlite_server: Server, key: str) -> None:
    message = anthropic.Anthropic(
        api_key=key, base_url=sqlite_server.url, max_retries=0
    ).messages.create(model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "Hi"}])
    assert message.content and message.stop_reason in {"end_turn", "max_tokens"}

    tq = together.Together(api_key=key, base_url=sqlite_server.url, max_retries=0)
    request_id = submit(tq, {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8})
    assert wait_status(tq, request_id, {"done"}).status == "done"

    with raw(sqlite_server, key, dialect="infera") as infera:
        answer = infera.post(
            "/chat/completions",
            json={
                "model": MODEL,
                "messages": [{"role": "user", "content": "Hi"}],
                "max_tokens": 8,
                "temperature": 0,
            },
        )
    assert answer.status_code == 200, answer.text

    with raw(sqlite_server, key) as fireworks:
        listed = fireworks.get("/v1/accounts/acme/datasets")
    assert listed.status_code == 200, listed.text


def test_a_dead_api_process_is_started_again(sqlite_server: Server, key: str) -> None:
    assert sqlite_server.proc is not None
    apis = [p for p in children(sqlite_server.proc.pid) if " serve --fd " in command_line(p)]
    os.kill(apis[0], signal.SIGKILL)
    wait_until(
        lambda: (
            sum(" serve --fd " in command_line(p) for p in children(sqlite_server.proc.pid)) == 2
            and apis[0] not in children(sqlite_server.proc.pid)
        ),
        30,
        "a new API process",
    )
    for _ in range(4):
        assert (
            httpx.get(
                f"{sqlite_server.url}/v1/models",
                headers={"Authorization": f"Bearer {key}"},
                timeout=30,
            ).status_code
            == 200
        )


def test_a_stuck_api_process_is_killed_and_started_again(sqlite_server: Server, key: str) -> None:
    """A process that is alive but does not run (SIGSTOP here; a deadlock or an endless
    loop alike) keeps its socket, and the kernel hands it its share of new connections:
    the supervisor, missing its heartbeats, kills it and starts another."""
    assert sqlite_server.proc is not None
    supervisor = sqlite_server.proc.pid
    apis = [p for p in children(supervisor) if " serve --fd " in command_line(p)]
    os.kill(apis[0], signal.SIGSTOP)
    wait_until(
        lambda: (
            apis[0] not in children(supervisor)
            and sum(" serve --fd " in command_line(p) for p in children(supervisor)) == 2
        ),
        STALL_TIMEOUT + 20,
        "the stuck API process replaced",
    )
    wait_until(lambda: gone(apis[0]), 10, "the stuck process gone")
    # each request on a new connection, which the kernel hands to either process's socket
    for _ in range(8):
        response = httpx.get(
            f"{sqlite_server.url}/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=30
        )
        assert response.status_code == 200


def test_a_stuck_worker_is_killed_and_started_again(sqlite_server: Server, key: str) -> None:
    """A worker that stops running (SIGSTOP here) once its models loaded: the supervisor,
    missing its heartbeats, kills it and starts another, which runs what was queued
    meanwhile."""
    assert sqlite_server.proc is not None
    supervisor = sqlite_server.proc.pid

    def workers() -> list[int]:
        return [p for p in children(supervisor) if " serve " not in command_line(p)]

    (stuck,) = workers()
    os.kill(stuck, signal.SIGSTOP)
    tq = together.Together(api_key=key, base_url=sqlite_server.url, max_retries=0)
    request_id = submit(tq, {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8})
    wait_until(
        lambda: stuck not in children(supervisor) and len(workers()) == 1,
        STALL_TIMEOUT + 20,
        "the stuck worker replaced",
    )
    wait_until(lambda: gone(stuck), 10, "the stuck worker gone")
    assert wait_status(tq, request_id, {"done"}).status == "done"


def test_sigterm_stops_every_process(tmp_path: Path) -> None:
    server = Server(
        tmp_path / "data",
        models_file=fake_models_file(tmp_path / "models.toml"),
        args=("--workers", "2"),
    )
    server.start()
    assert server.proc is not None
    kids = children(server.proc.pid)
    assert len(kids) == 3
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=40) == 0
    wait_until(lambda: all(gone(pid) for pid in kids), 10, "every child gone")


def test_a_killed_supervisor_takes_its_children_with_it(tmp_path: Path) -> None:
    server = Server(
        tmp_path / "data",
        models_file=fake_models_file(tmp_path / "models.toml"),
        args=("--workers", "2"),
    )
    server.start()
    assert server.proc is not None
    kids = children(server.proc.pid)
    server.kill()
    wait_until(lambda: all(gone(pid) for pid in kids), 30, "every child gone")


def test_workers_on_postgresql(tmp_path: Path) -> None:
    """Two API processes and a worker on one PostgreSQL schema named by --database-url:
    sync chat through both. The children get the URL (it may hold a password) in their
    environment, not on their command lines, which every user of the machine can read."""
    import asyncio

    from tests.acceptance.cluster import fresh_schema, schema_url

    async def run() -> None:
        async with fresh_schema() as schema:
            url = schema_url(schema)
            server = Server(
                tmp_path / "data",
                models_file=fake_models_file(tmp_path / "models.toml"),
                args=("--workers", "2", "--database-url", url),
            )
            await asyncio.to_thread(server.start)
            try:
                assert server.proc is not None
                kids = children(server.proc.pid)
                assert len(kids) == 3
                assert not any(url in command_line(pid) for pid in kids)
                # the key exists only in the PostgreSQL schema: a child on any other
                # store would refuse it
                out = await asyncio.to_thread(
                    server.cli, "keys", "create", "--name", "pg", "--database-url", url
                )
                key = out.strip().splitlines()[-1]
                for _ in range(4):
                    async with openai.AsyncOpenAI(
                        api_key=key, base_url=f"{server.url}/v1", max_retries=0
                    ) as client:
                        reply = await client.chat.completions.create(
                            model="fake",
                            messages=[{"role": "user", "content": "hello"}],
                            max_tokens=4,
                        )
                    assert reply.choices[0].message.content
            finally:
                await asyncio.to_thread(server.stop)

    asyncio.run(run())


def test_streams_on_postgresql_arrive_as_generated(tmp_path: Path) -> None:
    """A stream answered by the worker process on PostgreSQL gets its text as it is
    generated (NOTIFY relays it to the API process), not whole when the job ends."""
    import asyncio

    from tests.acceptance.cluster import fresh_schema, schema_url

    words = "one two three four five six seven eight"

    async def stream(url: str, key: str) -> list[str]:
        # a new client, so a new connection: both API processes take some
        async with openai.AsyncOpenAI(api_key=key, base_url=url, max_retries=0) as client:
            chunks = await client.chat.completions.create(
                model="fake",
                messages=[{"role": "user", "content": words}],
                max_tokens=16,
                stream=True,
            )
            return [c.choices[0].delta.content or "" async for c in chunks if c.choices]

    async def run() -> None:
        async with fresh_schema() as schema:
            server = Server(
                tmp_path / "data",
                models_file=fake_models_file(tmp_path / "models.toml", token_delay=0.05),
                env={"INFERQ_DATABASE_URL": schema_url(schema)},
                args=("--workers", "2"),
            )
            await asyncio.to_thread(server.start)
            try:
                key = await asyncio.to_thread(server.create_key, "pg")
                for _ in range(3):
                    pieces = await stream(f"{server.url}/v1", key)
                    assert "".join(pieces) == f"echo: {words}", pieces
                    # relayed from the worker process as generated, not sent whole at the end
                    assert len([p for p in pieces if p]) > 1, pieces
            finally:
                await asyncio.to_thread(server.stop)

    asyncio.run(run())
