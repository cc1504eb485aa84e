"""Scale-out on PostgreSQL: several API and worker processes on one database.

Every test runs real ``inferq serve --no-worker`` and ``inferq worker`` processes on a
fresh schema of the local PostgreSQL, with the fake engine logging each generation
that ran to the end, so executions can be counted per job across processes.

1. Two APIs and three workers run 5,000 jobs: each exactly once, none lost.
2. Workers are killed with ``kill -9`` again and again during a run: every job
   completes, the client never sees one done twice, and the jobs of the last killed
   worker are done within the lease plus a few seconds.
3. PostgreSQL restarts mid-run: while it is down the APIs answer 503 fast, in each
   dialect's error shape; nothing acknowledged is lost and work resumes soon after.
4. The claim query walks the ``jobs_claimable`` index over a 100,000-job backlog.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from inferq.core.states import ServiceClass
from inferq.store.postgres import Q
from tests.acceptance.cluster import (
    FINAL,
    MODEL,
    Api,
    Cluster,
    connect,
    ensure_pg_up,
    fresh_schema,
    job_states,
    pg_ctl,
    pg_ready,
    together_payload,
)

pytestmark = pytest.mark.integration


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    async with fresh_schema() as name:
        yield name


# -- clients ----------------------------------------------------------------------


def client_for(api: Api, key: str, *, in_flight: int = 32) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=api.url,
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
        # Idle connections are dropped well before uvicorn's 5 s keep-alive timeout: a
        # request sent on a connection the server is closing fails with a ReadError.
        limits=httpx.Limits(
            max_connections=in_flight, max_keepalive_connections=in_flight, keepalive_expiry=1
        ),
    )


async def pool_map(
    items: Iterable[Any], fn: Callable[[int, Any], Awaitable[None]], *, in_flight: int
) -> None:
    """``fn(i, item)`` for every item, ``in_flight`` at a time.

    The first error stops the others and is raised (no request is left running).
    """
    numbered = iter(enumerate(items))

    async def drain() -> None:
        for i, item in numbered:
            await fn(i, item)

    tasks = [asyncio.create_task(drain()) for _ in range(in_flight)]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        await stop_tasks(tasks)
    errors = [t.exception() for t in tasks if not t.cancelled() and t.exception() is not None]
    if errors:
        raise errors[0]


async def stop_tasks(tasks: Iterable[asyncio.Task[Any] | None]) -> None:
    """Cancel what still runs and wait for it, so nothing outlives the test."""
    pending = [t for t in tasks if t is not None and not t.done()]
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


async def submit_many(
    cluster: Cluster,
    clients: list[httpx.AsyncClient],
    messages: list[str],
    acked: dict[str, str],
    *,
    in_flight: int = 32,
) -> None:
    """Submit through Together's queue API, spread over ``clients``; fills ``acked``."""

    async def submit(i: int, message: str) -> None:
        response = await clients[i % len(clients)].post(
            "/v1/queue/submit", json=together_payload(message)
        )
        if response.status_code != 200:
            cluster.fail(f"submit {i} answered {response.status_code}: {response.text}")
        acked[response.json()["requestId"]] = message

    await pool_map(messages, submit, in_flight=in_flight)


@dataclass
class Observer:
    """Every Together status a client saw, per job, checked as it arrives."""

    last: dict[str, dict[str, Any]] = field(default_factory=dict)
    first_done: dict[str, dict[str, Any]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    reads: int = 0

    def record(self, rid: str, body: dict[str, Any]) -> None:
        self.reads += 1
        previous = self.last.get(rid)
        status = body["status"]
        if previous is not None and previous["status"] in FINAL and status != previous["status"]:
            self.problems.append(f"{rid}: status went from {previous['status']} to {status}")
        self.last[rid] = body
        if status == "done":
            first = self.first_done.setdefault(rid, body)
            if body["outputs"] != first["outputs"] or body["done_at"] != first["done_at"]:
                self.problems.append(
                    f"{rid}: done twice: {first['outputs']} then {body['outputs']}"
                )

    def statuses(self, ids: Iterable[str]) -> Counter[str]:
        return Counter(self.last[r]["status"] if r in self.last else "unseen" for r in ids)


async def read_statuses(
    cluster: Cluster,
    clients: list[httpx.AsyncClient],
    ids: list[str],
    observer: Observer,
    *,
    in_flight: int = 16,
) -> None:
    """One status read of each of ``ids``, spread over ``clients``."""

    async def read(i: int, rid: str) -> None:
        response = await clients[i % len(clients)].get(
            "/v1/queue/status", params={"request_id": rid, "model": MODEL}
        )
        if response.status_code != 200:
            cluster.fail(f"status of {rid} answered {response.status_code}: {response.text}")
        observer.record(rid, response.json())

    await pool_map(ids, read, in_flight=in_flight)


def check_done_once(
    acked: dict[str, str],
    observer: Observer,
    executions: Counter[str],
    *,
    exactly_once: bool,
    unacknowledged: Iterable[str] = (),
) -> None:
    """Every acknowledged job is done with its one completion, and ran (exactly) once."""
    assert not observer.problems, "the client saw a job change after it ended:\n" + "\n".join(
        observer.problems[:20]
    )
    not_done = {
        r: observer.last[r]["status"] for r in acked if observer.last[r]["status"] != "done"
    }
    assert not not_done, (
        f"{len(not_done)} acknowledged jobs did not end done: {list(not_done.items())[:10]}"
    )
    for rid, message in acked.items():
        outputs = observer.last[rid]["outputs"]
        assert outputs is not None, f"{rid} is done without outputs"
        assert outputs["id"] == f"chatcmpl-{rid}", f"{rid}: outputs of another job: {outputs['id']}"
        assert len(outputs["choices"]) == 1, f"{rid}: {len(outputs['choices'])} completions"
        text = outputs["choices"][0]["message"]["content"]
        assert text == f"echo: {message}", f"{rid}: completion {text!r} for {message!r}"
    messages = set(acked.values())
    assert len(messages) == len(acked), "test bug: messages are not unique per job"
    never = [m for m in messages if executions[m] == 0]
    assert not never, (
        f"{len(never)} done jobs never ran to the end, per the execution log: {never[:5]}"
    )
    # Only a submit that got no 200 may have left a job behind that then ran.
    maybe = set(unacknowledged)
    stray = [m for m in executions if m not in messages and m not in maybe]
    assert not stray, (
        f"the execution log names {len(stray)} messages never acknowledged: {stray[:5]}"
    )
    if exactly_once:
        twice = {m: n for m, n in executions.items() if n != 1}
        assert not twice, f"{len(twice)} jobs ran more than once: {list(twice.items())[:10]}"


# -- 1. two APIs, three workers, 5,000 jobs ------------------------------------------


@pytest.mark.slow
async def test_two_apis_three_workers_run_5000_jobs_exactly_once(
    tmp_path: Path, schema: str
) -> None:
    jobs = 5000
    # Nobody dies here: the lease only has to outlast the stalls of a loaded machine.
    cluster = Cluster(tmp_path, schema, lease_seconds=10, token_delay=0, slots=5)
    try:
        key = cluster.create_key("scale")
        procs = [cluster.spawn_api() for _ in range(2)] + [cluster.spawn_worker() for _ in range(3)]
        await cluster.wait_ready(procs)
        token = uuid.uuid4().hex[:8]
        messages = [f"s1-{token}-{i}" for i in range(jobs)]
        acked: dict[str, str] = {}
        clients = [client_for(api, key) for api in cluster.apis]
        conn = await connect(schema)
        try:
            started = time.monotonic()
            await asyncio.wait_for(submit_many(cluster, clients, messages, acked), timeout=120)
            submitted = time.monotonic() - started
            assert len(acked) == jobs

            async def all_done() -> bool:
                return (await job_states(conn))["succeeded"] >= jobs

            async def states() -> str:
                return str(dict(await job_states(conn)))

            await cluster.wait_for("every job to succeed", all_done, timeout=120, detail=states)
            finished = time.monotonic() - started
            counts = await job_states(conn)
            assert counts == Counter({"succeeded": jobs}), f"jobs in the database: {dict(counts)}"
            observer = Observer()
            await asyncio.wait_for(
                read_statuses(cluster, clients, list(acked), observer, in_flight=32), timeout=120
            )
        finally:
            await conn.close()
            for client in clients:
                await client.aclose()
        check_done_once(acked, observer, cluster.executions(), exactly_once=True)
        # every worker took part
        for worker in cluster.workers:
            assert " succeeded " in worker.log(), f"{worker.name} ran no job"
        print(
            f"\n{jobs} jobs: submitted in {submitted:.1f}s, all done after {finished:.1f}s, "
            f"checked in {time.monotonic() - started:.1f}s"
        )
    finally:
        cluster.close()


# -- 2. kill -9 workers again and again ----------------------------------------------


async def running_owners(conn: Any) -> Counter[int]:
    """Running jobs per worker pid (a worker's owner id is ``host:pid:nonce``)."""
    rows = await conn.fetch("SELECT owner FROM jobs WHERE state = 'running'")
    return Counter(int(r["owner"].split(":")[-2]) for r in rows if r["owner"])


async def observe(
    cluster: Cluster,
    clients: list[httpx.AsyncClient],
    acked: dict[str, str],
    observer: Observer,
    stop: asyncio.Event,
) -> None:
    """Read every acknowledged job's status, over and over, until ``stop``."""
    while not stop.is_set():
        await read_statuses(cluster, clients, list(acked), observer, in_flight=8)
        await asyncio.sleep(0.2)


@pytest.mark.slow
async def test_kill_9_workers_repeatedly_every_job_done_once(tmp_path: Path, schema: str) -> None:
    jobs, lease, random_kills = 1200, 2, 10
    rng = random.Random()
    # 4 slots, one kept for sync requests: 3 queued jobs run at once per worker; six
    # words at 20 ms a word keep each job running ~0.12 s, so kills hit running jobs.
    cluster = Cluster(tmp_path, schema, lease_seconds=lease, token_delay=0.02, slots=4)
    stop = asyncio.Event()
    observing: asyncio.Task[None] | None = None
    try:
        key = cluster.create_key("kills")
        await cluster.wait_ready([cluster.spawn_api() for _ in range(2)])
        token = uuid.uuid4().hex[:8]
        messages = [f"s2-{token}-{i} a b c d" for i in range(jobs)]
        acked: dict[str, str] = {}
        observer = Observer()
        clients = [client_for(api, key) for api in cluster.apis]
        conn = await connect(schema)
        try:
            # The whole queue is there before the workers start, so the run lasts as
            # long as its jobs take however fast the submissions went (~16 s on three
            # workers): time for the kills every 1-2 s.
            await asyncio.wait_for(submit_many(cluster, clients, messages, acked), timeout=60)
            await cluster.wait_ready([cluster.spawn_worker() for _ in range(3)])
            observing = asyncio.create_task(observe(cluster, clients, acked, observer, stop))
            hit: set[str] = set()  # running on a worker when it was killed

            async def running_on(pid: int) -> set[str]:
                rows = await conn.fetch(
                    "SELECT id FROM jobs WHERE state = 'running' AND owner LIKE $1", f"%:{pid}:%"
                )
                return {r["id"] for r in rows}

            killed_at: list[float] = []

            async def kill(final: bool) -> int | None:
                """kill -9 a worker; how many running jobs it held (None: none killed)."""
                by_pid = await running_owners(conn)
                busy = sorted(
                    (w for w in cluster.workers if by_pid[w.pid]), key=lambda w: by_pid[w.pid]
                )
                if final and not busy:
                    return None  # the last running jobs ended between two reads
                victim = busy[-1] if final else rng.choice(busy or cluster.workers)
                before = await running_on(victim.pid)
                victim.kill()
                killed_at.append(time.monotonic())
                # and what it claimed since: committed claims are visible once it is dead
                # (nobody re-claims them before its lease runs out)
                await asyncio.sleep(0.2)
                hit.update(before | await running_on(victim.pid))
                if not final:
                    cluster.spawn_worker()  # the replacement; it starts while others work
                return by_pid[victim.pid]

            # Random kills every 1-2 s while there is work; the last one once the queue
            # is (nearly) drained, on the busiest worker, so what follows it is recovery.
            kills: list[int] = []
            deadline = time.monotonic() + 90
            next_kill = time.monotonic() + rng.uniform(1.0, 2.0)
            while True:
                if time.monotonic() > deadline:
                    cluster.fail(f"the queue did not drain; states {dict(await job_states(conn))}")
                states = await job_states(conn)
                if states["queued"] <= 15 and states["running"] > 0:
                    held = await kill(final=True)
                    if held is not None:
                        kills.append(held)
                        break
                elif states["queued"] == 0 and states["running"] == 0:
                    cluster.fail("every job ended before the last kill; make the run longer")
                elif len(kills) < random_kills and time.monotonic() >= next_kill:
                    held = await kill(final=False)
                    assert held is not None
                    kills.append(held)
                    next_kill = time.monotonic() + rng.uniform(1.0, 2.0)
                await asyncio.sleep(0.05 if states["queued"] < 100 else 0.25)
            last_kill = killed_at[-1]

            async def all_done() -> bool:
                return (await job_states(conn))["succeeded"] >= jobs

            async def states_now() -> str:
                return str(dict(await job_states(conn)))

            await cluster.wait_for(
                "every job to succeed after the last kill",
                all_done,
                timeout=lease + 30,
                interval=0.05,
                detail=states_now,
            )
            recovery = time.monotonic() - last_kill
            counts = await job_states(conn)
            assert counts == Counter({"succeeded": jobs}), f"jobs in the database: {dict(counts)}"
            stop.set()
            await asyncio.wait_for(observing, timeout=60)
            await asyncio.wait_for(read_statuses(cluster, clients, list(acked), observer), 60)
        finally:
            stop.set()
            await stop_tasks([observing])
            await conn.close()
            for client in clients:
                await client.aclose()

        executions = cluster.executions()
        check_done_once(acked, observer, executions, exactly_once=False)
        # The run exercised what it claims: kills that hit running jobs, re-runs.
        assert len(kills) >= 5, f"only {len(kills)} kills before the queue drained"
        assert kills[-1] > 0, "the last kill hit no running job; recovery was not measured"
        retried = {r for r in acked if observer.last[r]["retries"] >= 1}
        assert retried, "no job was re-run after a kill"
        assert retried <= hit, f"jobs re-run that no kill hit: {sorted(retried - hit)[:5]}"
        # At most one committed success per job, across every worker (dead ones too).
        logs = cluster.logs()
        twice = [r for r in acked if logs.count(f"job {r} succeeded") > 1]
        assert not twice, f"jobs that succeeded more than once: {twice[:10]}"
        print(
            f"\n{len(kills)} kills (running jobs hit: {kills}); {len(hit)} jobs hit, "
            f"{len(retried)} re-run; executions > 1: "
            f"{sum(n > 1 for n in executions.values())}; {observer.reads} status reads; "
            f"recovery after the last kill {recovery:.2f}s (lease {lease}s)"
        )
        assert recovery <= lease + 4, (
            f"the last killed worker's jobs took {recovery:.1f}s to finish; lease is {lease}s"
        )
    finally:
        stop.set()
        cluster.close()


# -- 3. PostgreSQL restarts mid-run --------------------------------------------------

#: how fast an API must answer while PostgreSQL is down
FAIL_FAST = 2.0
#: how soon after PostgreSQL is back a new job must be done
RESUME_WITHIN = 10.0


@dataclass
class Submitter:
    """Submits a job every ``pause`` seconds, alternating APIs, until stopped.

    Keeps what was acknowledged (200) and what was refused (503, checked for shape
    and speed); nothing else is an acceptable answer.
    """

    cluster: Cluster
    clients: list[httpx.AsyncClient]
    token: str
    pause: float = 0.03
    acked: dict[str, str] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        for i in itertools.count():
            if self.stop.is_set():
                return
            message = f"s3-{self.token}-{i} a b c"
            started = time.monotonic()
            try:
                response = await self.clients[i % len(self.clients)].post(
                    "/v1/queue/submit", json=together_payload(message), timeout=10
                )
            except httpx.HTTPError as exc:
                self.problems.append(f"submit {i}: {type(exc).__name__}: {exc}")
                self.refused.append(message)
                continue
            took = time.monotonic() - started
            if response.status_code == 200:
                self.acked[response.json()["requestId"]] = message
            else:
                self.refused.append(message)
                problem = together_503_problem(response, took)
                if problem:
                    self.problems.append(f"submit {i}: {problem}")
            await asyncio.sleep(self.pause)


def together_503_problem(response: httpx.Response, took: float) -> str | None:
    """What is wrong with a Together-dialect answer while the store is down, if anything."""
    if response.status_code != 503:
        return f"answered {response.status_code}: {response.text}"
    body = response.json()
    if set(body) != {"code", "message", "param", "type"}:
        return f"503 not in Together's flat error shape: {body}"
    if body["type"] != "service_unavailable_error" or body["code"] != "service_unavailable":
        return f"503 with type {body['type']!r} and code {body['code']!r}: {body}"
    if took >= FAIL_FAST:
        return f"503 took {took:.2f}s"
    return None


def openai_503_problem(response: httpx.Response, took: float) -> str | None:
    if response.status_code != 503:
        return f"answered {response.status_code}: {response.text}"
    body = response.json()
    if set(body) != {"error"} or set(body["error"]) != {"message", "type", "param", "code"}:
        return f"503 not in OpenAI's error shape: {body}"
    if body["error"]["code"] != "service_unavailable" or not body["error"]["message"]:
        return f"503 with code {body['error']['code']!r}: {body}"
    if took >= FAIL_FAST:
        return f"503 took {took:.2f}s"
    return None


async def probe_while_down(
    clients: list[httpx.AsyncClient], some_job: str, token: str, round_: int
) -> list[str]:
    """One request of each kind to each API; the problems found."""
    problems: list[str] = []
    for n, client in enumerate(clients):
        where = f"api{n + 1}, round {round_}"
        started = time.monotonic()
        response = await client.post(
            "/v1/queue/submit", json=together_payload(f"s3-{token}-down-{round_}-{n}"), timeout=10
        )
        if problem := together_503_problem(response, time.monotonic() - started):
            problems.append(f"{where}: Together submit {problem}")
        started = time.monotonic()
        response = await client.get(
            "/v1/queue/status", params={"request_id": some_job, "model": MODEL}, timeout=10
        )
        if problem := together_503_problem(response, time.monotonic() - started):
            problems.append(f"{where}: Together status {problem}")
        started = time.monotonic()
        response = await client.post(
            "/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
            timeout=10,
        )
        if problem := openai_503_problem(response, time.monotonic() - started):
            problems.append(f"{where}: OpenAI chat {problem}")
    return problems


@pytest.mark.slow
async def test_postgres_restart_fails_fast_then_resumes(tmp_path: Path, schema: str) -> None:
    lease, upfront = 2, 300
    cluster = Cluster(tmp_path, schema, lease_seconds=lease, token_delay=0.02, slots=4)
    token = uuid.uuid4().hex[:8]
    submitting: asyncio.Task[None] | None = None
    clients: list[httpx.AsyncClient] = []
    try:
        key = cluster.create_key("restart")
        procs = [cluster.spawn_api() for _ in range(2)] + [cluster.spawn_worker() for _ in range(2)]
        await cluster.wait_ready(procs)
        clients = [client_for(api, key) for api in cluster.apis]
        submitter = Submitter(cluster, clients, token)
        observer = Observer()

        # A backlog, and a steady trickle of submits that runs through the outage.
        upfront_acked: dict[str, str] = {}
        upfront_messages = [f"s3-{token}-up-{i} a b c" for i in range(upfront)]
        await asyncio.wait_for(
            submit_many(cluster, clients, upfront_messages, upfront_acked), timeout=60
        )
        submitting = asyncio.create_task(submitter.run())

        conn = await connect(schema)
        try:

            async def mid_run() -> bool:
                states = await job_states(conn)
                return states["succeeded"] >= 1 and states["running"] >= 1

            async def states() -> str:
                return str(dict(await job_states(conn)))

            await cluster.wait_for("jobs done and running", mid_run, timeout=30, detail=states)
            at_stop = await job_states(conn)
        finally:
            await conn.close()
        if at_stop["queued"] < 20:
            cluster.fail(f"the backlog drained before PostgreSQL was stopped: {dict(at_stop)}")
        await read_statuses(cluster, clients, list(upfront_acked), observer)
        some_job = next(iter(upfront_acked))

        # PostgreSQL goes down.
        try:
            await asyncio.to_thread(pg_ctl, "stop")
            down_at = time.monotonic()
            if await asyncio.to_thread(pg_ready):
                cluster.fail("PostgreSQL still accepts connections after pg_ctlcluster stop")
            problems: list[str] = []
            for round_ in range(4):  # over 2 s: the APIs' key cache runs out meanwhile
                problems += await probe_while_down(clients, some_job, token, round_)
                await asyncio.sleep(0.8)
            down_for = time.monotonic() - down_at
        finally:
            await asyncio.to_thread(ensure_pg_up)
        back_at = time.monotonic()
        assert not problems, "while PostgreSQL was down:\n" + "\n".join(problems)

        # Work resumes: a job submitted now is done soon. Its priority puts it ahead of
        # the backlog, so the time measures the recovery, not the backlog's length.
        first_new = f"s3-{token}-after a b c"
        first_rid = ""
        deadline = back_at + RESUME_WITHIN
        while not first_rid:
            if time.monotonic() > deadline:
                cluster.fail(f"no submit accepted within {RESUME_WITHIN:g}s of PostgreSQL's return")
            response = await clients[0].post(
                "/v1/queue/submit", json={**together_payload(first_new), "priority": 100}
            )
            if response.status_code == 200:
                first_rid = response.json()["requestId"]
            else:
                await asyncio.sleep(0.1)
        done_body: dict[str, Any] = {}

        async def first_new_done() -> bool:
            response = await clients[1].get(
                "/v1/queue/status", params={"request_id": first_rid, "model": MODEL}
            )
            if response.status_code == 200 and response.json()["status"] == "done":
                done_body.update(response.json())
                return True
            return False

        await cluster.wait_for(
            f"a job submitted after PostgreSQL's return to be done within {RESUME_WITHIN:g}s",
            first_new_done,
            timeout=max(0.0, deadline - time.monotonic()),
            interval=0.05,
        )
        resumed = time.monotonic() - back_at

        # The trickle goes on a little, then everything acknowledged must be done.
        acked_before_back = len(submitter.acked)
        await asyncio.sleep(2)
        submitter.stop.set()
        await asyncio.wait_for(submitting, timeout=15)
        assert len(submitter.acked) > acked_before_back, "no submit was accepted after the restart"
        assert not submitter.problems, "the trickle of submits saw:\n" + "\n".join(
            submitter.problems[:20]
        )
        acked = {**upfront_acked, **submitter.acked, first_rid: first_new}

        async def all_done() -> bool:
            pending = [r for r in acked if observer.last.get(r, {}).get("status") not in FINAL]
            await read_statuses(cluster, clients, pending, observer)
            return all(observer.last[r]["status"] in FINAL for r in acked)

        async def statuses() -> str:
            return str(dict(observer.statuses(acked)))

        await cluster.wait_for(
            "every acknowledged job to end", all_done, timeout=60, interval=0.2, detail=statuses
        )
        await read_statuses(cluster, clients, list(acked), observer)
        executions = cluster.executions()
        check_done_once(
            acked, observer, executions, exactly_once=False, unacknowledged=submitter.refused
        )
        conn = await connect(schema)
        try:
            ids = {r["id"] for r in await conn.fetch("SELECT id FROM jobs")}
        finally:
            await conn.close()
        missing = set(acked) - ids
        assert not missing, f"acknowledged jobs missing from the database: {sorted(missing)[:5]}"
        print(
            f"\n{len(acked)} acknowledged, {len(submitter.refused)} refused during the outage; "
            f"at the stop: {dict(at_stop)}; "
            f"down {down_for:.1f}s; first new job done {resumed:.2f}s after the return; "
            f"retries: {dict(Counter(observer.last[r]['retries'] for r in acked))}; "
            f"executions > 1: {sum(n > 1 for n in executions.values())}"
        )
    finally:
        await asyncio.to_thread(ensure_pg_up)
        await stop_tasks([submitting])
        for client in clients:
            await client.aclose()
        cluster.close()


# -- 4. the claim query's plan over a big backlog --------------------------------------

BACKLOG = 100_000

#: the backlog: queued jobs over the three service classes and a few priorities, a
#: tenth of another model, some with a deadline ($1 model, $2 now, $3 how many)
FILL_QUEUED = """
INSERT INTO jobs (id, tenant, model, origin, service_class, priority, state, request,
                  max_attempts, created_at, deadline_at)
SELECT 'q-' || g, 'tenant-' || (g % 7), CASE WHEN g % 10 = 0 THEN 'other' ELSE $1 END,
       'together', g % 3, g % 5, 'queued',
       jsonb_build_object('messages', jsonb_build_array(
           jsonb_build_object('role', 'user', 'content', 'job ' || g))),
       4, $2 - 3600 + g * 0.01, CASE WHEN g % 50 = 0 THEN $2 + 3600 END
FROM generate_series(1, $3::int) AS g
"""
#: the history a busy queue has beside it: finished jobs ...
FILL_DONE = """
INSERT INTO jobs (id, tenant, model, origin, service_class, priority, state, request,
                  max_attempts, created_at, finished_at, result, attempt)
SELECT 'd-' || g, 'tenant-' || (g % 7), $1, 'together', 1, 0, 'succeeded',
       '{"messages": [{"role": "user", "content": "old"}]}', 4, $2 - 7200, $2 - 7100,
       '{"text": "echo: old"}', 1
FROM generate_series(1, 20000) AS g
"""
#: ... and running ones, a few of them with an expired lease
FILL_RUNNING = """
INSERT INTO jobs (id, tenant, model, origin, service_class, priority, state, request,
                  max_attempts, created_at, claimed_at, attempt, owner, lease_expires_at)
SELECT 'r-' || g, 'tenant-' || (g % 7), $1, 'together', 1, 0, 'running',
       '{"messages": [{"role": "user", "content": "now"}]}', 4, $2 - 60, $2 - 10, 1,
       'host:' || (g % 3) || ':x', CASE WHEN g % 100 = 0 THEN $2 - 5 ELSE $2 + 25 END
FROM generate_series(1, 500) AS g
"""


def plan_nodes(plan: Any) -> list[dict[str, Any]]:
    """Every node of an ``EXPLAIN (FORMAT JSON)`` plan, init plans and CTEs included."""
    return nodes_under(plan[0]["Plan"])


def nodes_under(top: dict[str, Any]) -> list[dict[str, Any]]:
    """``top`` and every node below it."""
    found: list[dict[str, Any]] = []
    stack = [top]
    while stack:
        node = stack.pop()
        found.append(node)
        stack.extend(node.get("Plans", ()))
    return found


def describe(nodes: list[dict[str, Any]]) -> str:
    return "; ".join(
        f"{n['Node Type']}"
        + (f" on {n['Relation Name']}" if "Relation Name" in n else "")
        + (f" using {n['Index Name']}" if "Index Name" in n else "")
        for n in nodes
    )


async def test_claim_uses_the_claimable_index_over_a_100k_backlog(
    tmp_path: Path, schema: str
) -> None:
    cluster = Cluster(tmp_path, schema, lease_seconds=30)
    cluster.cli("db", "upgrade")
    conn = await connect(schema)
    try:
        now = time.time()
        async with conn.transaction():
            await conn.execute(FILL_QUEUED, MODEL, now, BACKLOG)
            await conn.execute(FILL_DONE, MODEL, now)
            await conn.execute(FILL_RUNNING, MODEL, now)
        queued = await conn.fetchval("SELECT count(*) FROM jobs WHERE state = 'queued'")
        assert queued == BACKLOG

        claim, fair = Q["claim"], Q["claim_fair"]
        # The worker's two claims: sync work first, then any class; one slot or a few.
        cases = [
            {"max_class": int(ServiceClass.INTERACTIVE), "limit": 1},
            {"max_class": int(ServiceClass.BATCH), "limit": 1},
            {"max_class": int(ServiceClass.BATCH), "limit": 8},
        ]

        async def plan(sql: str, args: list[Any]) -> list[dict[str, Any]]:
            raw = await conn.fetchval("EXPLAIN (FORMAT JSON) " + sql, *args)
            return plan_nodes(json.loads(raw) if isinstance(raw, str) else raw)

        async def check(when: str, *, ordered: bool) -> None:
            for mode in ("auto", "force_generic_plan"):
                # auto: a custom plan for these parameter values; force_generic_plan:
                # what PostgreSQL may switch a prepared statement to after five runs
                # (asyncpg prepares and caches every statement it runs).
                await conn.execute(f"SET plan_cache_mode = {mode}")
                for case in cases:
                    params = {
                        "owner": "host:1:claimer",
                        "now": now,
                        "lease_until": now + 30,
                        "models": [MODEL],
                        "queued": True,  # the plain claim; the fair one passes False
                        **case,
                    }
                    nodes = await plan(claim.sql, claim.args(params))
                    what = f"claim {case} ({when}, plan_cache_mode={mode}): {describe(nodes)}"
                    # Its first part fails the running jobs past their last attempt.
                    cte = [n for n in nodes if n.get("Subplan Name") == "CTE exhausted"]
                    assert cte, f"no exhausted CTE in the {what}"
                    exhausted = nodes_under(cte[0])
                    assert not [n for n in exhausted if n["Node Type"] == "Seq Scan"], (
                        f"a sequential scan in the claim's exhausted CTE ({when}, {mode}): "
                        f"{describe(exhausted)}"
                    )
                    seq = [n for n in nodes if n["Node Type"] == "Seq Scan"]
                    assert not seq, f"a sequential scan in the {what}"
                    on_index = [n for n in nodes if n.get("Index Name") == "jobs_claimable"]
                    assert on_index, f"jobs_claimable is not used by the {what}"
                    if ordered:
                        # An index scan returns jobs in claim order and stops at the
                        # limit; a bitmap scan would sort the whole backlog first.
                        assert any(n["Node Type"] == "Index Scan" for n in on_index), (
                            f"jobs_claimable is not walked in order by the {what}"
                        )
                    # The fair claim (the default) takes what its plan picked from
                    # jobs by primary key: a probe per job, never a pass over the table.
                    picks = {
                        "tenants": ["tenant-1", "tenant-2"],
                        "classes": [int(ServiceClass.BATCH), int(ServiceClass.INTERACTIVE)],
                        "quotas": [case["limit"], 1],
                        "per_job": [1.0, 1.0],
                        "floor": 0.0,
                    }
                    nodes = await plan(fair.sql, fair.args({**params, **picks}))
                    what = f"claim_fair {case} ({when}, plan_cache_mode={mode}): {describe(nodes)}"
                    scans = [n for n in nodes if n.get("Relation Name") == "jobs"]
                    assert not [n for n in scans if n["Node Type"] == "Seq Scan"], (
                        f"a sequential scan in the {what}"
                    )
                    assert any(
                        n.get("Index Name") == "jobs_pkey" and "ANY" in n.get("Index Cond", "")
                        for n in nodes
                    ), f"the claimed jobs are not found by primary key in the {what}"
                    # Both fair statements walk jobs_fair in order; never the tenant's
                    # whole queue found by tenant, model and state (which a planner
                    # without statistics takes for one row) and sorted.
                    waiting = Q["fair_waiting"]
                    for name, found in (
                        ("claim_fair", nodes),
                        ("fair_waiting", await plan(waiting.sql, waiting.args(params))),
                    ):
                        assert any(n.get("Index Name") == "jobs_fair" for n in found) and not [
                            n for n in found if "model" in n.get("Index Cond", "")
                        ], f"{name} {case} ({when}, {mode}): {describe(found)}"
            await conn.execute("RESET plan_cache_mode")

        # Right after the bulk insert the planner has no statistics yet ...
        await check("no statistics", ordered=False)
        # ... and once autovacuum has analyzed the table, the plan it settles on.
        await conn.execute("ANALYZE jobs")
        await check("analyzed", ordered=True)
    finally:
        await conn.close()


# -- 5. sync requests served by a worker in another process --------------------------


async def test_sync_chat_answered_by_a_worker_in_another_process(
    tmp_path: Path, schema: str
) -> None:
    cluster = Cluster(tmp_path, schema, lease_seconds=10, token_delay=0.01, slots=2)
    try:
        key = cluster.create_key("sync")
        api, worker = cluster.spawn_api(), cluster.spawn_worker()
        await cluster.wait_ready([api, worker])
        body = {"model": "fake", "messages": [{"role": "user", "content": "across processes"}]}
        async with client_for(api, key) as client:
            reply = await client.post("/v1/chat/completions", json=body)
            assert reply.status_code == 200, reply.text
            content = reply.json()["choices"][0]["message"]["content"]
            assert content == "echo: across processes"
            async with client.stream(
                "POST", "/v1/chat/completions", json={**body, "stream": True}
            ) as stream:
                lines = [line async for line in stream.aiter_lines() if line]
        pieces = [
            json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
            for line in lines[:-1]
            if json.loads(line[6:])["choices"]
        ]
        assert "".join(pieces) == "echo: across processes"
        assert lines[-1] == "data: [DONE]"
        # the API process has no worker: the worker process did the work
        assert " succeeded " in worker.log() and " succeeded " not in api.log()
    finally:
        cluster.close()
