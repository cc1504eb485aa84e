"""Nodes that pull one job at a time and never list the jobs they run.

Infera's workers ask for a job (``/worker/get_job``), post its result
(``/worker/update_result``) and ping (``/worker/ping``): no session, no attempt, no
heartbeat naming their jobs. :class:`PullNodes` gives them the node protocol's
machinery: the same claim and fenced lease (owner ``node:<node id>:<session>``, the
session fixed per node), the leases it handed out remembered in this process, so that
a ping renews them and a result finds its attempt. A node that stops pinging loses its
leases as any other does, and its jobs are claimed again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from inferq.core.models import Job, JobError
from inferq.core.node_messages import Beat, Held, Outcome, raise_refused

if TYPE_CHECKING:
    from inferq.core.node_work import NodeWork
    from inferq.core.nodes import Node


def session_of(node: Node) -> str:
    """The one session of a node that has none of its own."""
    return "pull-" + node.id.removeprefix("node_")


class PullNodes:
    def __init__(self, work: NodeWork) -> None:
        self.work = work
        #: owner -> {job id: attempt} of the leases handed out here
        self._held: dict[str, dict[str, int]] = {}

    def _mine(self, node: Node) -> dict[str, int]:
        return self._held.setdefault(self.work.owner(node, session_of(node)), {})

    async def take(self, node: Node, *, kind: str) -> Job | None:
        """One job of the node's announced models that run ``kind`` requests, if one
        waits (no waiting)."""
        mine = self._mine(node)
        for model in node.models:
            if self.work.kind_of(model) != kind:
                continue
            jobs = await self.work.claim(
                node, session=session_of(node), free={model: 1}, wait=0, running=len(mine)
            )
            if jobs:
                mine[jobs[0].id] = jobs[0].attempt
                return jobs[0]
        return None

    async def ping(self, node: Node) -> list[str]:
        """Renew the leases of the jobs the node runs; return their ids."""
        mine = self._mine(node)
        beats = [Beat(job_id, attempt) for job_id, attempt in mine.items()]
        held, lost = await self.work.heartbeat(node, session=session_of(node), beats=beats)
        for job_id in lost:
            mine.pop(job_id, None)
        return held

    async def finish(
        self, node: Node, job_id: str, *, result: dict[str, Any] | None, error: JobError | None
    ) -> None:
        """Record the job's result, or a failed attempt (retried while attempts remain)."""
        attempt = self._mine(node).pop(job_id, None)
        if attempt is None:
            job = await self.work.store.get_job(job_id, tenant=None)
            attempt = job.attempt if job is not None else 0
        outcome = Outcome(Held(session_of(node), job_id, max(attempt, 1)), result, error)
        raise_refused((await self.work.report(node, [outcome]))[0])

    async def release(self, node: Node) -> list[str]:
        """Hand every job the node runs back to the queue (it is leaving)."""
        mine = self._mine(node)
        leases = list(mine.items())
        mine.clear()
        return await self.work.release(node, session=session_of(node), leases=leases)
