"""Redundant execution: a job of a model with ``replicas = N`` runs on N distinct nodes.

Infera's cross-check. The job a client submitted (the parent) is not handed to a node
itself: the first node that claims the model leases it (owner ``replicas:<process>``)
and turns it into N child jobs (model ``<model>#replica``, ids ``<parent>.r<k>``, the
parent's request, class, priority and place in the queue), inserted once however often
the parent is leased again. Nodes then claim the children like any job, except that a
node is never handed a second child of one parent (this process remembers who ran
which). When the last child has ended, the answers that succeeded are embedded with the
model's ``agree_model`` (an embedding model this process runs), the one closest to the
others on average (cosine similarity) wins, and the parent completes with it; its info
records the agreement (each node's similarity to the winner, who disagreed: under
``agree_threshold``), and each node's record counts the comparison and, when its answer
was too far from the winner's, a disagreement (``inferq nodes list``).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from inferq.core.errors import Conflict
from inferq.core.models import ChatResult, Job, JobError, Lease
from inferq.core.states import JobState, ServiceClass

if TYPE_CHECKING:
    from inferq.core.node_work import NodeWork
    from inferq.core.nodes import Node

log = logging.getLogger("inferq.nodes")

SUFFIX = "#replica"
#: embeds texts with the named embedding model: one vector per text
Embedder = Callable[[str, list[str]], Awaitable[Sequence[Sequence[float]]]]


@dataclass(frozen=True, slots=True)
class Replication:
    """How a model's jobs are cross-checked."""

    replicas: int
    #: the embedding model that compares the answers
    agree_model: str
    #: an answer less similar than this to the winner's disagreed
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


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = math.fsum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(math.fsum(x * x for x in a)) * math.sqrt(math.fsum(y * y for y in b))
    return dot / norm if norm else 0.0


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
        #: parent id -> the nodes handed one of its children (this process)
        self._ran: dict[str, set[str]] = {}
        #: parent id -> this process's lease on it, renewed while its children run
        self._parents: dict[str, Lease] = {}
        self._deciding: set[str] = set()

    async def claim(self, ask: Ask, count: int) -> list[Job]:
        """Up to ``count`` children of the model's jobs for the node (never two of one
        parent), turning a waiting job into its children when none is left; each as the
        job of the model the node runs."""
        jobs = await self._children(ask, count)
        if len(jobs) < count and await self._expand(ask):
            jobs += await self._children(ask, count - len(jobs))
        return [job.evolve(model=ask.name) for job in jobs]

    async def _claim(
        self, owner: str, model: str, limit: int, max_class: ServiceClass
    ) -> list[Job]:
        store, limits = self.work.store, self.work.limits
        return await store.claim(
            owner=owner,
            limit=limit,
            now=self.work.clock(),
            lease_seconds=limits.lease_seconds,
            max_class=max_class,
            models=[model],
            fair=self.work.fair,
        )

    async def _children(self, ask: Ask, count: int) -> list[Job]:
        mine: list[Job] = []
        owner, node = ask.owner, ask.node
        limit = count + ask.plan.replicas
        for job in await self._claim(owner, ask.name + SUFFIX, limit, ask.max_class):
            ran = self._ran.setdefault(job.id.rsplit(".r", 1)[0], set())
            if node.id in ran or len(mine) >= count:
                await self.work.store.requeue(Lease(job.id, owner, job.attempt))
                continue
            ran.add(node.id)
            # which node answers, kept on the child (its owner is cleared when it ends)
            await self.work.store.set_progress(
                Lease(job.id, owner, job.attempt), {"replica_node": node.id}
            )
            mine.append(job)
        return mine

    async def _expand(self, ask: Ask) -> bool:
        """Lease one waiting job of the model and insert its children (once)."""
        name, plan = ask.name, ask.plan
        parents = await self._claim(self.owner, name, 1, ask.max_class)
        if not parents:
            return False
        parent = parents[0]
        self._parents[parent.id] = Lease(parent.id, self.owner, parent.attempt)
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
            with contextlib.suppress(Conflict):  # leased again: its children exist
                await self.work.store.insert_job(child)
        self.work.events.job_submitted()
        return True

    async def renew(self, held: Sequence[str], *, until: float) -> None:
        """Renew the parents of the children still held (their leases are this
        process's, not the nodes')."""
        parents = {job_id.rsplit(".r", 1)[0] for job_id in held}
        leases = [self._parents[p] for p in parents if p in self._parents]
        if leases:
            await self.work.store.renew_leases(leases, until=until)

    async def ended(self, child: Job) -> None:
        """A child ended: once all have, decide the parent."""
        parent_id = (child.inputs or {}).get("replica_of")
        if not isinstance(parent_id, str) or parent_id in self._deciding:
            return
        store = self.work.store
        parent = await store.get_job(parent_id, tenant=None)
        plan = self.plans(child.model.removesuffix(SUFFIX))
        if parent is None or parent.state.terminal or plan is None:
            return
        kids = [await store.get_job(c, tenant=None) for c in child_ids(parent_id, plan.replicas)]
        if any(kid is None or not kid.state.terminal for kid in kids):
            return
        self._deciding.add(parent_id)
        try:
            await self._decide(parent, [kid for kid in kids if kid is not None], plan)
        finally:
            self._deciding.discard(parent_id)
            self._ran.pop(parent_id, None)
            self._parents.pop(parent_id, None)

    async def _decide(self, parent: Job, kids: list[Job], plan: Replication) -> None:
        store, now = self.work.store, self.work.clock()
        lease = Lease(parent.id, parent.owner or "", parent.attempt)
        done = [
            k for k in kids if k.state is JobState.SUCCEEDED and isinstance(k.result, ChatResult)
        ]
        if not done:
            error = JobError("replicas_failed", "no replica of the job succeeded")
            await store.fail(lease, error, now=now, retry=False)
        else:
            answers = [k.result.text for k in done if isinstance(k.result, ChatResult)]
            vectors = await self._vectors(plan, answers)
            sims = [[cosine(a, b) for b in vectors] for a in vectors]
            best = max(range(len(done)), key=lambda i: math.fsum(sims[i]))
            nodes = [str(k.info.get("replica_node", "")) for k in done]
            names = {n.id: n.name for n in await self.work.nodes.list()}
            disagreed = [nodes[i] for i in range(len(done)) if sims[best][i] < plan.threshold]
            agreement = {
                "replicas": plan.replicas,
                "winner": names.get(nodes[best], nodes[best]),
                "similarity": {
                    names.get(n, n): round(sims[best][i], 4) for i, n in enumerate(nodes)
                },
                "disagreed": [names.get(n, n) for n in disagreed],
            }
            await store.set_progress(lease, {"agreement": agreement})
            result = done[best].result
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
