"""``inferq node``: a process that pulls jobs from an inferq server and runs them.

It says hello (its models and their capacity), then claims by long poll whatever its
free slots can take, runs each job in a task of its own and, while any run, sends a
heartbeat every half second: the heartbeat renews the leases and carries each job's
info, progress and streamed text, and its answer names the jobs that are no longer the
node's (cancelled, expired, re-claimed), which are stopped at once. A result goes out
with the text not yet sent, after the job's files are uploaded.

SIGTERM (or SIGINT) stops claiming; the running jobs get ``drain_seconds`` to finish,
then are stopped and handed back to the queue without using up an attempt, the process
says bye (so that sync requests for its models are refused at once, not accepted to
wait for a node that is gone) and exits 0. A token the server refuses (wrong or
revoked) ends the process at once with a message and exit status 2; a server it cannot
reach at its start, with exit status 3.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from inferq.core.events import cancel_and_wait, wait_event
from inferq.worker.client import NodeClient, ServerRefused
from inferq.worker.handler import FileOutput, JobFailed
from inferq.worker.runners import CLASSES, Runner, Running, Stopped

log = logging.getLogger("inferq.node")

#: how long one claim waits on the server for work
CLAIM_WAIT = 10.0
#: how long a claim waits for more slots to free when some jobs still run
CLAIM_GATHER = 0.005
#: how long a report waits for more jobs to end when some still run
RESULT_GATHER = 0.002
#: how long a busy node's claim of work urgent enough to preempt one of its jobs waits
PREEMPT_WAIT = 1.0
#: the shortest time between two heartbeats sent only to carry streamed text
TEXT_EVERY = 0.02
#: how long a stopping process tries to say bye (a server it cannot reach then counts
#: it as connected until it has not been seen for a while)
BYE_TIMEOUT = 5.0
#: exit statuses: stopped, the server refused the node, the server cannot be reached
EXIT_OK, EXIT_REFUSED, EXIT_UNREACHABLE = 0, 2, 3


class NodeStopped(Exception):
    """The server refused the node (its token is wrong or was revoked)."""


class NodeProcess:
    def __init__(
        self, client: NodeClient, runners: Mapping[str, Runner], *, drain_seconds: float = 30.0
    ) -> None:
        self.client = client
        self.runners = dict(runners)
        self.drain_seconds = drain_seconds
        self.running: dict[str, Running] = {}
        self.heartbeat_every = 0.5
        self._stopping = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._text = asyncio.Event()
        self._refused: ServerRefused | None = None
        #: ended attempts not yet reported, and whether a report is on its way
        self._outbox: list[dict[str, Any]] = []
        self._outbox_ready = asyncio.Event()
        self._reporting = False
        #: heartbeats and reports go one at a time: text a heartbeat carries reaches the
        #: server before the result of its job
        self._send = asyncio.Lock()
        #: held while a claim is on its way: the slots it asks for are not asked twice
        self._claiming = asyncio.Lock()

    def stop(self) -> None:
        """Stop claiming and drain (what SIGTERM does)."""
        self._stopping.set()

    async def run(self) -> int:
        """Serve until stopped; return the exit status."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)
        try:
            hello = await self.client.hello({m: r.capacity for m, r in self.runners.items()})
        except ServerRefused as exc:
            await self.client.close()
            return self._refused_exit(exc)
        except httpx.HTTPError as exc:
            await self.client.close()
            log.error("cannot reach the server at %s: %s", self.client.http.base_url, exc)
            return EXIT_UNREACHABLE
        self.heartbeat_every = float(hello["heartbeat_seconds"])
        log.info("node %s connected (session %s)", hello["node"], self.client.session)
        for runner in self.runners.values():
            await runner.start()
        beats = asyncio.create_task(self._heartbeats())
        reports = asyncio.create_task(self._reports())
        try:
            await self._claim_loop()
            if self._refused is None:
                await self._drain()
        finally:
            await cancel_and_wait(beats, reports)
            for run in list(self.running.values()):
                run.stop("node stopping")
            tasks = [r.task for r in self.running.values() if r.task is not None]
            await asyncio.gather(*tasks, return_exceptions=True)
            for runner in self.runners.values():
                await runner.close()
            if self._refused is None:
                await self._bye()
            await self.client.close()
        if self._refused is not None:
            return self._refused_exit(self._refused)
        log.info("node stopped")
        return EXIT_OK

    async def _bye(self) -> None:
        """Tell the server this process is gone (best effort: it is stopping anyway)."""
        try:
            async with asyncio.timeout(BYE_TIMEOUT):
                await self.client.bye()
        except (ServerRefused, httpx.HTTPError, TimeoutError) as exc:
            log.info("the server did not take the node's bye (%s)", str(exc) or "no answer")

    def _refused_exit(self, exc: ServerRefused) -> int:
        what = "refused the node token" if exc.bad_token else "refused the node"
        log.error("the server %s (%d %s): %s", what, exc.status, exc.code, exc.message)
        return EXIT_REFUSED

    # -- claiming -----------------------------------------------------------------

    def _free(self) -> dict[str, int]:
        busy: dict[str, int] = {}
        for run in self.running.values():
            busy[run.model] = busy.get(run.model, 0) + 1
        return {m: r.capacity - busy.get(m, 0) for m, r in self.runners.items()}

    async def _claim_loop(self) -> None:
        backoff = 0.5
        while not self._stopping.is_set() and self._refused is None:
            if self.running and sum(self._free().values()) > 0:
                # a slot just freed while others run: more often end together, so let
                # them free theirs and claim for all at once
                await self._until(None, CLAIM_GATHER)
            self._slot_freed.clear()
            if not any(n > 0 for n in self._free().values()):
                await self._preempt()
                continue
            if self._claiming.locked():
                # a report claims for the free slots with its results: let it, then look
                # again (queued for the lock, the loop's long poll would hold up the
                # next report's results for as long as it waits for work)
                async with self._claiming:
                    pass
                continue
            try:
                async with self._claiming:
                    free = {m: n for m, n in self._free().items() if n > 0}
                    jobs = await self._claim(free) if free else []
            except ServerRefused as exc:
                if exc.bad_token or exc.status < 500:
                    self._refused = exc
                    return
                jobs = None
            except httpx.HTTPError as exc:
                log.warning("claim failed (%s); retrying in %.1f s", exc, backoff)
                jobs = None
            if jobs is None:
                await self._until(None, backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            backoff = 0.5
            for job in jobs:
                self._start(job)

    def _victim(self) -> Running | None:
        """The least urgent running job that more urgent work may preempt (not one of the
        most urgent class): batch rows before queued jobs, then lower priority, then the
        later submitted."""
        runs = [r for r in self.running.values() if r.rank[0] > 0 and not r.preempted]
        return max(runs, key=lambda r: (r.rank, r.created_at), default=None)

    async def _preempt(self) -> None:
        """Every slot is busy: wait (briefly) for work more urgent than the least urgent
        running job; when some comes, stop that job, hand it back to the queue (no
        attempt used) and run the urgent one in its slot, as in-process workers do."""
        victim = self._victim()
        if victim is None:
            await self._until(self._slot_freed)
            return
        more_urgent = CLASSES[victim.rank[0] - 1]
        try:
            jobs = await self._claim({victim.model: 1}, max_class=more_urgent, wait=PREEMPT_WAIT)
        except (ServerRefused, httpx.HTTPError) as exc:
            log.warning("claim of urgent work failed (%s)", exc)
            await self._until(self._slot_freed, PREEMPT_WAIT)
            return
        for job in jobs or []:
            victim = self._victim()
            if victim is None and not self._free().get(job["model"], 0):
                await self.client.release([(job["id"], job["attempt"])])
                continue
            if victim is not None:
                log.info("job %s preempted by %s", victim.id, job["id"])
                victim.preempted = True
                victim.stop(f"preempted by job {job['id']}")
            self._start(job)

    async def _claim(
        self, free: dict[str, int], *, max_class: str = "batch", wait: float = CLAIM_WAIT
    ) -> list[dict[str, Any]] | None:
        """Claim, unless a stop comes first (the claim is abandoned then)."""
        claim = asyncio.ensure_future(
            self.client.claim(free, wait=wait, running=len(self.running), max_class=max_class)
        )
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({claim, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_and_wait(stop)
        if not claim.done():
            await cancel_and_wait(claim)
            return []
        return claim.result()

    async def _until(self, event: asyncio.Event | None, timeout: float | None = None) -> None:
        """Wait for ``event`` (or ``timeout``), returning early on a stop."""
        waits = [asyncio.ensure_future(self._stopping.wait())]
        if event is not None:
            waits.append(asyncio.ensure_future(event.wait()))
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_and_wait(*waits)

    # -- running ------------------------------------------------------------------

    def _start(self, job: dict[str, Any]) -> None:
        run = Running(job, on_text=self._text.set)
        self.running[run.id] = run
        log.info("job %s started (attempt %d)", run.id, run.attempt)
        run.task = asyncio.create_task(self._run(run))

    async def _run(self, run: Running) -> None:
        runner = self.runners[run.model]
        outcome: dict[str, Any] | None
        try:
            result = await runner.run(run)
            if "outputs" in result:
                result["outputs"] = await self._upload(run, result["outputs"])
            json.dumps(result)  # anything that is not JSON fails here, not on the server
            outcome = {"result": result}
        except Stopped:
            log.info("job %s stopped: %s", run.id, run.stopped or "cancelled")
            outcome = None
            if run.preempted:
                await self._hand_back(run)
        except JobFailed as exc:
            outcome = _failure(exc.code, exc.message, retry=False)
        except (TypeError, ValueError) as exc:
            outcome = _failure("bad_output", f"the outputs are not JSON: {exc}", retry=False)
        except Exception as exc:
            log.exception("job %s attempt %d failed", run.id, run.attempt)
            outcome = _failure("handler_error", f"{type(exc).__name__}: {exc}", retry=True)
        finally:
            self.running.pop(run.id, None)
            self._slot_freed.set()
        if outcome is not None and run.stopped is None:
            info, _ = run.ctx.take()
            item = {"id": run.id, "attempt": run.attempt} | outcome
            # what is empty is left out (the protocol's defaults): less for the server to
            # parse and check for each job
            if text := run.take_text():
                item["text"] = text
            if info:
                item["info"] = info
            self._outbox.append(item)
            self._outbox_ready.set()

    async def _hand_back(self, run: Running) -> None:
        try:
            await self.client.release([(run.id, run.attempt)])
        except (ServerRefused, httpx.HTTPError) as exc:
            log.warning("job %s could not be handed back (%s); its lease runs out", run.id, exc)

    async def _reports(self) -> None:
        """Send ended attempts as they come, those that gathered meanwhile together."""
        backoff = 0.5
        while True:
            await self._outbox_ready.wait()
            if self.running:
                await asyncio.sleep(RESULT_GATHER)  # others may end with it: one request
            self._outbox_ready.clear()
            items, self._outbox = self._outbox, []
            if not items:
                continue
            self._reporting = True
            try:
                async with self._send:
                    fates = await self._report(items)
            except ServerRefused as exc:
                log.warning("the server refused %d results: %s", len(items), exc)
                if exc.bad_token:
                    self._refused = exc
                    self.stop()
                continue
            except httpx.HTTPError as exc:
                log.warning("reporting failed (%s); again in %.1f s", exc, backoff)
                self._outbox[:0] = items
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                self._outbox_ready.set()
                continue
            finally:
                self._reporting = False
            backoff = 0.5
            for fate in fates:
                if fate["ok"]:
                    log.info("job %s reported", fate["id"])
                else:
                    log.warning("job %s: %s (%s)", fate["id"], fate["message"], fate["code"])

    async def _report(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Report ``items``; unless a claim is on its way, claim for the free slots in the
        same request (their jobs start at once)."""
        if self._claiming.locked() or self._stopping.is_set():
            fates, _ = await self.client.results(items)
            return fates
        async with self._claiming:
            free = {m: n for m, n in self._free().items() if n > 0}
            fates, jobs = await self.client.results(items, free=free, running=len(self.running))
            for job in jobs:
                self._start(job)
        return fates

    async def _flush(self, timeout: float) -> None:
        """Wait until every ended attempt has been reported (or ``timeout``)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while (self._outbox or self._reporting) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)

    async def _upload(self, run: Running, value: Any) -> Any:
        """``value`` with each :class:`FileOutput` uploaded and replaced by its URL."""
        if isinstance(value, FileOutput):
            return await self.client.upload(
                run.id, run.attempt, value.upload_name, Path(value.path)
            )
        if isinstance(value, dict):
            return {k: await self._upload(run, v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [await self._upload(run, v) for v in value]
        return value

    # -- heartbeats and stopping ------------------------------------------------------

    async def _heartbeats(self) -> None:
        while True:
            self._text.clear()
            if self.running:
                await self._beat()
            await wait_event(self._text, self.heartbeat_every)
            if self._text.is_set():
                await asyncio.sleep(TEXT_EVERY)  # let a few pieces gather

    async def _beat(self) -> None:
        runs = list(self.running.values())
        try:
            async with self._send:
                _, lost = await self.client.heartbeat([run.beat() for run in runs])
        except ServerRefused as exc:
            if exc.bad_token:
                self._refused = exc
                self.stop()
            log.warning("heartbeat refused: %s", exc)
            return
        except httpx.HTTPError as exc:
            log.warning("heartbeat failed (%s)", exc)
            return
        for run in runs:
            if run.id in lost and run.stopped is None:
                log.info("job %s is no longer this node's (cancelled or re-claimed)", run.id)
                run.stop("cancelled")

    async def _drain(self) -> None:
        """Let running jobs finish for ``drain_seconds``; hand back the rest."""
        tasks = [r.task for r in self.running.values() if r.task is not None]
        if tasks:
            log.info("draining %d jobs (up to %.0f s)", len(tasks), self.drain_seconds)
            await asyncio.wait(tasks, timeout=self.drain_seconds)
        await self._flush(10.0)
        left = list(self.running.values())
        for run in left:
            run.stop("node stopping")
        if left:
            with contextlib.suppress(ServerRefused, httpx.HTTPError):
                released = await self.client.release([(r.id, r.attempt) for r in left])
                log.info("handed back %d jobs", len(released))


def _failure(code: str, message: str, *, retry: bool) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}, "retry": retry}
