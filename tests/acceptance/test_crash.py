"""Crash safety: ``kill -9`` the server mid-work and every acknowledged job still runs.

Scenario (one test per engine):

1. Start ``inferq serve`` on a data directory with a short worker lease.
2. Submit jobs through Together's queue API; once jobs run, a background submitter
   keeps submitting while the server is killed, so some submits race the kill.
   Every ``requestId`` that came back with a 200 is *acknowledged*.
3. Once jobs are running and many are queued, ``kill -9`` the server.
   A copy of the database, taken while no process has it open, tells exactly
   which jobs were running at the kill, and proves each acknowledged job was
   committed before it was acknowledged.
4. Restart on the same data directory; kill it again mid-recovery, while a
   re-claimed job runs; restart again.
5. Wait until every acknowledged job is terminal, then check: each is ``done``
   with exactly one completion; ``retries`` >= 1 for jobs that were running at a
   kill and 0 for the others; the status a client saw never left ``done`` and
   the completion never changed once seen; the server logs record at most one
   success per job, and the database holds no job beyond the ones submitted.
"""

from __future__ import annotations

import shutil
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.server import DEFAULT_MODEL, Server, fake_models_file

pytestmark = pytest.mark.integration

#: worker lease; a job whose server died is re-claimed this long after its last heartbeat
LEASE_SECONDS = 2
TERMINAL = frozenset({"done", "failed", "canceled"})
#: submits the background submitter has answered before the first kill (it goes on
#: submitting, so later ones race the kill)
TRICKLE_BEFORE_KILL = 5


@dataclass(frozen=True)
class Workload:
    model: str
    models_file: Callable[[Path], Path | None]
    #: the Together ``payload`` of the i-th job
    payload: Callable[[int], dict[str, Any]]
    #: the completion text the i-th job must produce; None: any non-empty text
    expected_text: Callable[[int], str | None]
    upfront: int
    #: pause between the background submitter's requests (seconds)
    trickle: float
    #: the whole scenario must finish within this many seconds
    budget: float


def _words(i: int) -> str:
    return f"job {i} " + " ".join(f"w{k}" for k in range(18))


FAKE = Workload(
    model="fake",
    # 3 slots: the worker keeps one slot for sync requests, so 2 queued jobs run at
    # once; 20 words at 20 ms a word keep each job running for ~0.4 s.
    models_file=lambda d: fake_models_file(d / "models.toml", token_delay=0.02, slots=3),
    payload=lambda i: {
        "messages": [{"role": "user", "content": _words(i)}],
        "max_tokens": 64,
    },
    expected_text=lambda i: "echo: " + _words(i),
    upfront=40,
    trickle=0.02,
    budget=60,
)

LLAMA = Workload(
    model=DEFAULT_MODEL,
    # The embedded default runs several queued jobs at once (8 on 2 cores), 16 tokens
    # each; 30 upfront leave more than 10 queued at the first kill.
    models_file=lambda d: None,
    payload=lambda i: {
        "messages": [{"role": "user", "content": f"Count from {i} to 100, separated by commas."}],
        "max_tokens": 16,
        "temperature": 0,
    },
    expected_text=lambda i: None,
    upfront=30,
    trickle=0.1,
    budget=75,
)


@dataclass
class Observer:
    """Every status body the client saw, per job, checked as it arrives."""

    seen: dict[str, list[str]] = field(default_factory=dict)
    first_done: dict[str, dict[str, Any]] = field(default_factory=dict)
    last: dict[str, dict[str, Any]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def record(self, rid: str, body: dict[str, Any]) -> None:
        status = body["status"]
        history = self.seen.setdefault(rid, [])
        if history and history[-1] == "done" and status != "done":
            self.problems.append(f"{rid}: status went from done back to {status}")
        history.append(status)
        self.last[rid] = body
        if status == "done":
            first = self.first_done.setdefault(rid, body)
            if body["outputs"] != first["outputs"]:
                self.problems.append(f"{rid}: the completion changed after it was done")

    def counts(self, ids: list[str]) -> Counter[str]:
        return Counter(self.last[r]["status"] if r in self.last else "unseen" for r in ids)


class Scenario:
    def __init__(self, tmp_path: Path, workload: Workload) -> None:
        self.w = workload
        self.root = tmp_path
        self.data_dir = tmp_path / "data"
        self.models_file = workload.models_file(tmp_path)
        self.env = {"INFERQ_LEASE_SECONDS": str(LEASE_SECONDS)}
        self.servers: list[Server] = []
        self.acked: list[str] = []
        self.acked_lock = threading.Lock()
        self.index: dict[str, int] = {}
        self.unanswered = 0  # submits that got no answer (raced a kill)
        self.trickle_error: BaseException | None = None
        self.observer = Observer()
        self.started = time.monotonic()
        self.key = ""

    # -- plumbing ---------------------------------------------------------------

    @property
    def server(self) -> Server:
        return self.servers[-1]

    def remaining(self) -> float:
        return self.w.budget - (time.monotonic() - self.started)

    def start_server(self) -> Server:
        server = Server(self.data_dir, models_file=self.models_file, env=self.env)
        self.servers.append(server)
        server.start(timeout=max(5.0, min(60.0, self.remaining())))
        return server

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.server.url,
            headers={"Authorization": f"Bearer {self.key}"},
            timeout=10,
        )

    def fail(self, message: str) -> None:
        logs = "\n".join(s.log()[-3000:] for s in self.servers[-2:])
        pytest.fail(
            f"{message}\n[{time.monotonic() - self.started:.1f}s into the scenario; "
            f"{len(self.acked)} acknowledged jobs: {dict(self.observer.counts(self.acked))}]\n"
            f"--- server log tail ---\n{logs}",
            pytrace=False,
        )

    def submit(self, client: httpx.Client, i: int) -> None:
        response = client.post(
            "/v1/queue/submit", json={"model": self.w.model, "payload": self.w.payload(i)}
        )
        if response.status_code != 200:
            self.fail(f"submit {i} answered {response.status_code}: {response.text}")
        rid = response.json()["requestId"]
        with self.acked_lock:
            self.acked.append(rid)
            self.index[rid] = i

    def poll(self, client: httpx.Client) -> None:
        """One status read of every acknowledged job."""
        with self.acked_lock:
            ids = list(self.acked)
        for rid in ids:
            response = client.get(
                "/v1/queue/status", params={"request_id": rid, "model": self.w.model}
            )
            if response.status_code != 200:
                self.fail(f"status of {rid} answered {response.status_code}: {response.text}")
            self.observer.record(rid, response.json())

    def wait_for(self, phase: str, condition: Callable[[], bool], limit: float) -> None:
        """Poll until ``condition`` holds; fail naming ``phase`` when time runs out."""
        deadline = time.monotonic() + min(limit, self.remaining())
        with self.client() as client:
            while True:
                self.poll(client)
                if condition():
                    return
                if time.monotonic() > deadline:
                    self.fail(f"timed out waiting for: {phase}")
                time.sleep(0.05)

    def statuses(self) -> Counter[str]:
        return self.observer.counts(self.acked)

    def kill_and_snapshot(self) -> dict[str, tuple[str, int]]:
        """kill -9, then read a copy of the database the dead server left behind."""
        self.server.kill()
        snap = self.root / f"snapshot-{len(self.servers)}"
        snap.mkdir()
        for f in self.data_dir.glob("inferq.db*"):
            shutil.copy2(f, snap / f.name)
        conn = sqlite3.connect(snap / "inferq.db")
        try:
            found = conn.execute("SELECT id, state, attempt FROM jobs").fetchall()
        finally:
            conn.close()
        return {rid: (state, attempt) for rid, state, attempt in found}

    # -- the scenario -----------------------------------------------------------

    def run(self) -> None:
        self.start_server()
        self.key = self.server.create_key("crash-test")

        # Phase 1: a backlog, then, once jobs run, a trickle of submits that races the
        # kill. The trickle starts only then, and the kill comes after a few of its
        # submits, so the work to finish does not grow with the time the server takes
        # to start (a slow machine would otherwise queue more than the budget runs).
        with self.client() as client:
            for i in range(self.w.upfront):
                self.submit(client, i)
        self.wait_for(
            "a job done and a job running before the first kill",
            lambda: self.statuses()["done"] >= 1 and self.statuses()["running"] >= 1,
            limit=30,
        )
        stop = threading.Event()
        submitter = threading.Thread(target=self._trickle, args=(stop,), daemon=True)
        submitter.start()
        self.wait_for(
            "the background submitter's first submits",
            lambda: len(self.acked) >= self.w.upfront + TRICKLE_BEFORE_KILL,
            limit=30,
        )
        first = self.kill_and_snapshot()
        stop.set()
        submitter.join(timeout=15)
        if submitter.is_alive():
            self.fail("the background submitter did not stop after the kill")
        if self.trickle_error is not None:
            raise self.trickle_error
        self.check_snapshot(first, "first")
        running_1 = {r for r, (state, _) in first.items() if state == "running"}

        # Phase 2: restart; kill again while a job re-claimed after the first kill runs.
        self.start_server()

        def reclaimed_running() -> bool:
            last = self.observer.last
            if any(last[r]["status"] == "running" and last[r]["retries"] >= 1 for r in running_1):
                return True
            # Every re-claimed job already finished: settle for any running job.
            return all(last[r]["status"] == "done" for r in running_1) and any(
                b["status"] == "running" for b in last.values()
            )

        self.wait_for(
            "a re-claimed job running after the restart",
            reclaimed_running,
            limit=LEASE_SECONDS * 5 + 15,
        )
        second = self.kill_and_snapshot()
        self.check_snapshot(second, "second")
        running_2 = {r for r, (state, _) in second.items() if state == "running"}

        # Phase 3: restart and let everything finish.
        self.start_server()
        self.wait_for(
            "every acknowledged job to finish",
            lambda: all(
                r in self.observer.last and self.observer.last[r]["status"] in TERMINAL
                for r in self.acked
            ),
            limit=self.remaining(),
        )
        self.server.stop()
        retries = Counter(self.observer.last[r]["retries"] for r in self.acked)
        print(  # shown with -s: what the scenario exercised
            f"\n{len(self.acked)} acknowledged, {self.unanswered} unanswered; running at the "
            f"kills: {len(running_1)} and {len(running_2)}; queued at the first kill: "
            f"{sum(s == 'queued' for s, _ in first.values())}; retries: {dict(retries)}; "
            f"{time.monotonic() - self.started:.1f}s"
        )
        self.check_outcome(running_1 | running_2)

    def _trickle(self, stop: threading.Event) -> None:
        i = self.w.upfront
        with self.client() as client:
            while not stop.is_set():
                try:
                    self.submit(client, i)
                except httpx.TransportError:
                    # The kill cut this submit: it may or may not have been stored.
                    self.unanswered += 1
                    return
                except BaseException as exc:  # re-raised by the main thread
                    self.trickle_error = exc
                    return
                i += 1
                time.sleep(self.w.trickle)

    def check_snapshot(self, snapshot: dict[str, tuple[str, int]], which: str) -> None:
        lost = [r for r in self.acked if r not in snapshot]
        if lost:
            self.fail(
                f"{len(lost)} acknowledged jobs are not in the database after the "
                f"{which} kill (acknowledged before commit?): {lost[:5]}"
            )
        states = Counter(state for state, _ in snapshot.values())
        if states["running"] < 1:
            self.fail(f"no job was running at the {which} kill: {dict(states)}")
        if which == "first" and states["queued"] < 10:
            self.fail(f"fewer than 10 jobs were queued at the first kill: {dict(states)}")

    def check_outcome(self, running_at_a_kill: set[str]) -> None:
        obs = self.observer
        assert not obs.problems, "the client saw a job go backwards:\n" + "\n".join(obs.problems)

        not_done = {r: obs.last[r]["status"] for r in self.acked if obs.last[r]["status"] != "done"}
        assert not not_done, f"acknowledged jobs that did not end done: {not_done}"

        for rid in self.acked:
            body = obs.last[rid]
            outputs = body["outputs"]
            assert outputs is not None, f"{rid} is done without outputs"
            assert outputs["id"] == f"chatcmpl-{rid}", f"{rid}: outputs of another job"
            assert len(outputs["choices"]) == 1, f"{rid}: {len(outputs['choices'])} completions"
            text = outputs["choices"][0]["message"]["content"]
            expected = self.w.expected_text(self.index[rid])
            if expected is None:
                assert text, f"{rid}: empty completion"
            else:
                assert text == expected, f"{rid}: completion {text!r}, expected {expected!r}"
            assert outputs["choices"][0]["finish_reason"] in ("stop", "length")
            if rid in running_at_a_kill:
                assert body["retries"] >= 1, f"{rid} was running at a kill but has retries=0"
            else:
                assert body["retries"] == 0, (
                    f"{rid} was never running at a kill but ran {body['retries'] + 1} times"
                )

        # At most one committed success per job, across every server's log.
        logs = "".join(s.log() for s in self.servers)
        twice = [r for r in self.acked if logs.count(f"job {r} succeeded") > 1]
        assert not twice, f"jobs that succeeded more than once: {twice}"

        # No duplicate or phantom jobs: only submits that raced a kill may add rows.
        conn = sqlite3.connect(self.data_dir / "inferq.db")
        try:
            rows = dict(conn.execute("SELECT id, state FROM jobs").fetchall())
        finally:
            conn.close()
        extra = set(rows) - set(self.acked)
        assert len(extra) <= self.unanswered, (
            f"{len(extra)} jobs in the database were never acknowledged, but only "
            f"{self.unanswered} submits went unanswered"
        )
        assert all(rows[r] == "succeeded" for r in self.acked)


@pytest.mark.parametrize(
    "workload",
    [
        pytest.param(FAKE, id="fake-engine"),
        pytest.param(LLAMA, id="smollm2", marks=pytest.mark.slow),
    ],
)
def test_kill_9_loses_no_acknowledged_job(tmp_path: Path, workload: Workload) -> None:
    scenario = Scenario(tmp_path, workload)
    try:
        scenario.run()
    finally:
        for server in scenario.servers:
            server.kill()
    # Sanity: the scenario exercised what it claims to.
    assert len(scenario.acked) >= workload.upfront
    assert len(scenario.servers) == 3
