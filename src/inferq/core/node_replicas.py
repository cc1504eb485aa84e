"""Redundant execution: a job of a model with ``replicas = N`` runs on N distinct nodes.

Infera's cross-check. The job a client submitted (the parent) is not handed to a node
itself: the first node that claims the model leases it (owner ``replicas:<process>``,
held until the job is decided, not renewed) and turns it into N child jobs (model
``<model>#replica``, ids ``<parent>.r<k>``, the parent's request, class, priority and
place in the queue), inserted once however often that is tried. Nodes then claim the
children like any job (fenced leases, retries, a vanished node's child claimed again),
except that a node is never handed a second child of one parent: the node that runs a
child is written on it (``info.replica_node``) and read back from its siblings.

When the last child has ended, the answers that succeeded are embedded with the model's
``agree_model`` (an embedding model this process runs) and compared
(:mod:`inferq.core.agreement`): the largest group of answers that agree with each other
wins, the parent completes (fenced, so once) with the answer of that group closest to
the others, its info records the agreement (pairwise similarities, who disagreed), and
each node's record counts the comparison and, outside the group, a disagreement
(``inferq nodes list``). A decision lost to a crash (or children failed by the store
after their last attempt) is taken up by a sweep of the model's running parents.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from inferq.core.agreement import similarities, verdict
from inferq.core.errors import Conflict
from inferq.core.models import Job, JobError, JobFilter, Lease
from inferq.core.ports import Ending
from inferq.core.states import JobState, ServiceClass
from inferq.core.work import ChatResult

if TYPE_CHECKING:
    from inferq.core.node_work import NodeWork
    from inferq.core.nodes import Node

log = logging.getLogger("inferq.nodes")

SUFFIX = "#replica"
#: how long the parent's lease is held while its children run (it is not renewed: the
#: decision ends it, and the sweep finds a parent whose decision was lost)
HOLD_SECONDS = 30 * 24 * 3600.0
#: the running parents one sweep looks at, per model
SWEEP_LIMIT = 200
#: embeds texts with the named embedding model: one vector per text
Embedder = Callable[[str, list[str]], Awaitable[Sequence[Sequence[float]]]]


@dataclass(frozen=True, slots=True)
class Replication:
    """How a model's jobs are cross-checked."""

    replicas: int
    #: the embedding model that compares the answers
    agree_model: str
    #: two answers less similar than this disagree
    threshold: float = 0.9


@dataclass(frozen=True, slots=True)
class Ask:
    """A node's claim for one replicated model."""

    node: Node
    #: the node's lease owner
    owner: str
    #: the model (the node's name for it)
    name: str
    max_class: ServiceClass
    plan: Replication


def child_ids(parent_id: str, replicas: int) -> list[str]:
    return [f"{parent_id}.r{k}" for k in range(replicas)]


def parent_of(child_id: str) -> str:
    return child_id.rsplit(".r", 1)[0]


class Replicas:
    def __init__(
        self,
        work: NodeWork,
        *,
        plans: Callable[[str], Replication | None],
        embed: Embedder | None,
        owner: str,
    ) -> None:
        self.work = work
        self.plans = plans
        self.embed = embed
        self.owner = owner
        #: parent id -> the nodes this process handed one of its children (the store's
        #: ``replica_node`` answers for the others)
        self._ran: dict[str, set[str]] = {}
        self._deciding: set[str] = set()
        #: model -> when this process last swept its running parents
        self._swept: dict[str, float] = {}

    async def claim(self, ask: Ask, count: int) -> list[Job]:
        """Up to ``count`` children of the model's jobs for the node (never two of one
        parent), turning a waiting job into its children when none is left; each as the
        job of the model the node runs."""
        await self._sweep(ask)
        jobs = await self._children(ask, count)
        if len(jobs) < count and await self._expand(ask):
            jobs += await self._children(ask, count - len(jobs))
        return [job.evolve(model=ask.name) for job in jobs]

    async def _claim(
        self, owner: str, model: str, limit: int, max_class: ServiceClass
    ) -> list[Job]:
        order = self.work.order(owner, model, limit)
        return await self.work.store.claim(order, now=self.work.clock(), max_class=max_class)

    async def _children(self, ask: Ask, count: int) -> list[Job]:
        mine: list[Job] = []
        owner, node = ask.owner, ask.node
        limit = count + ask.plan.replicas
        for job in await self._claim(owner, ask.name + SUFFIX, limit, ask.max_class):
            lease = Lease(job.id, owner, job.attempt)
            if await self._orphan(job):
                continue
            ran = self._ran.setdefault(parent_of(job.id), set())
            if len(mine) >= count or node.id in ran or await self._ran_sibling(job, node):
                await self.work.store.requeue(lease)
                continue
            ran.add(node.id)
            # which node answers, kept on the child (its owner is cleared when it ends)
            await self.work.store.set_progress(lease, {"replica_node": node.id})
            mine.append(job)
        return mine

    async def _orphan(self, child: Job) -> bool:
        """Whether the child's job already ended (cancelled, expired): the child is then
        cancelled instead of run."""
        store = self.work.store
        parent = await store.get_job(parent_of(child.id), tenant=None)
        if parent is not None and not parent.state.terminal:
            return False
        error = JobError("replica_not_needed", "the job ended before this replica ran")
        await store.finish(
            child.id, Ending(JobState.CANCELLED, error), tenant=None, now=self.work.clock()
        )
        self.work.events.job_ended(child.id)
        return True

    async def _ran_sibling(self, child: Job, node: Node) -> bool:
        """Whether the node was handed another child of the same parent (by any process,
        before any restart)."""
        store, plan = self.work.store, self.plans(child.model.removesuffix(SUFFIX))
        siblings = child_ids(parent_of(child.id), plan.replicas if plan else 0)
        for sibling_id in siblings:
            if sibling_id == child.id:
                continue
            sibling = await store.get_job(sibling_id, tenant=None)
            if sibling is not None and sibling.info.get("replica_node") == node.id:
                return True
        return False

    async def _expand(self, ask: Ask) -> bool:
        """Lease one waiting job of the model (held until decided) and insert its
        children."""
        parents = await self._claim(self.owner, ask.name, 1, ask.max_class)
        if not parents:
            return False
        parent = parents[0]
        lease = Lease(parent.id, self.owner, parent.attempt)
        await self.work.store.renew_leases([lease], until=self.work.clock() + HOLD_SECONDS)
        await self._insert_children(parent, ask.name, ask.plan)
        return True

    async def _insert_children(self, parent: Job, name: str, plan: Replication) -> None:
        for child_id in child_ids(parent.id, plan.replicas):
            child = parent.evolve(
                id=child_id,
                model=name + SUFFIX,
                state=JobState.QUEUED,
                inputs={"replica_of": parent.id},
                info={},
                attempt=0,
                owner=None,
                lease_expires_at=None,
                claimed_at=None,
            )
            with contextlib.suppress(Conflict):  # tried before: its children exist
                await self.work.store.insert_job(child)
        self.work.events.job_submitted()

    async def _sweep(self, ask: Ask) -> None:
        """Now and then (each lease period), decide the model's running parents whose
        children have all ended, and insert the children a crash left out."""
        now = self.work.clock()
        if now - self._swept.get(ask.name, 0.0) < self.work.limits.lease_seconds:
            return
        self._swept[ask.name] = now
        running = frozenset({JobState.RUNNING})
        flt = JobFilter(model=ask.name, states=running, limit=SWEEP_LIMIT)
        for parent in await self.work.store.list_jobs(flt):
            if (parent.owner or "").startswith("replicas:"):
                await self._settle(parent.id, ask.plan, repair=ask.name)

    async def ended(self, child: Job) -> None:
        """A child ended: once all have, decide the parent. A failure here is logged:
        the sweep decides later."""
        parent_id = (child.inputs or {}).get("replica_of")
        plan = self.plans(child.model.removesuffix(SUFFIX))
        if not isinstance(parent_id, str) or plan is None:
            return
        try:
            await self._settle(parent_id, plan)
        except Exception:
            log.exception("deciding the replicated job %s failed; the sweep retries", parent_id)

    async def _settle(self, parent_id: str, plan: Replication, *, repair: str = "") -> None:
        """Decide the parent once all its children have ended; with ``repair`` (the
        model's name), first insert the children a crash left out."""
        if parent_id in self._deciding:
            return
        store = self.work.store
        parent = await store.get_job(parent_id, tenant=None)
        if parent is None or parent.state is not JobState.RUNNING:
            return
        kids = [await store.get_job(c, tenant=None) for c in child_ids(parent_id, plan.replicas)]
        if repair and None in kids:
            await self._insert_children(parent, repair, plan)
            return
        ended = [kid for kid in kids if kid is not None and kid.state.terminal]
        if len(ended) < plan.replicas:
            return
        self._deciding.add(parent_id)
        try:
            await self._decide(parent, ended, plan)
        finally:
            self._deciding.discard(parent_id)
            self._ran.pop(parent_id, None)

    async def _decide(self, parent: Job, kids: list[Job], plan: Replication) -> None:
        store, now = self.work.store, self.work.clock()
        lease = Lease(parent.id, parent.owner or "", parent.attempt)
        done = [
            k for k in kids if k.state is JobState.SUCCEEDED and isinstance(k.result, ChatResult)
        ]
        if not done:
            error = JobError("replicas_failed", "no replica of the job succeeded")
            await store.fail(lease, error, now=now, retry=False)
            self.work.events.job_ended(parent.id)
            return
        answers = [k.result.text for k in done if isinstance(k.result, ChatResult)]
        sims = similarities(await self._vectors(plan, answers))
        found = verdict(sims, threshold=plan.threshold, replicas=plan.replicas)
        nodes = [str(k.info.get("replica_node", "")) for k in done]
        names = {n.id: n.name for n in await self.work.nodes.list()}
        label = [names.get(n, n) for n in nodes]
        disagreed = [nodes[i] for i in found.disagreed]
        agreement: dict[str, Any] = {
            "replicas": plan.replicas,
            "answers": len(done),
            "winner": label[found.winner],
            "agreed": [label[i] for i in found.group],
            "disagreed": [label[i] for i in found.disagreed],
            "majority": found.majority,
            "threshold": plan.threshold,
            "similarity": {label[i]: round(sims[found.winner][i], 4) for i in range(len(done))},
            "pairs": [
                [label[i], label[j], round(sims[i][j], 4)]
                for i in range(len(done))
                for j in range(i + 1, len(done))
            ],
        }
        await store.set_progress(lease, {"agreement": agreement})
        result = done[found.winner].result
        assert result is not None
        if await store.complete(lease, result, now=now):
            await self.work.nodes.store.count_agreement(nodes, disagreed=disagreed)
        self.work.events.job_ended(parent.id)

    async def _vectors(self, plan: Replication, answers: list[str]) -> Sequence[Sequence[float]]:
        if len(answers) < 2:
            return [[1.0] for _ in answers]
        if self.embed is None:
            raise RuntimeError("no embedding model runs in this process to compare replicas")
        return await self.embed(plan.agree_model, answers)
