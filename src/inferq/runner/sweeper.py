"""The retention sweeper: runs :meth:`~inferq.core.retention.RetentionService.sweep`
every ``interval`` seconds, the orphan-blob walk (which lists every blob) every
``orphan_every`` sweeps.

Every process with a worker sweeps; two sweeps at once only race to delete the same
things, which the store and the blob store take as no-ops.
"""

from __future__ import annotations

import asyncio
import logging

from inferq.core.retention import RetentionService, SweepCounts
from inferq.runner.background import Background

log = logging.getLogger("inferq.retention")


class Sweeper(Background):
    def __init__(
        self, retention: RetentionService, *, interval: float = 60.0, orphan_every: int = 10
    ) -> None:
        self.retention = retention
        self.interval = interval
        self.orphan_every = orphan_every
        self.sweeps = 0

    async def sweep(self) -> SweepCounts:
        """One sweep; the orphans too on every ``orphan_every``-th."""
        orphans = self.sweeps % self.orphan_every == 0
        self.sweeps += 1
        return await self.retention.sweep(orphans=orphans)

    async def run(self) -> None:
        while True:
            try:
                counts = await self.sweep()
            except Exception:
                log.exception("retention sweep failed; trying again in %.0f s", self.interval)
                counts = SweepCounts()
            # a full chunk: more may be waiting, so the next sweep comes at once
            full = max(counts.files, counts.jobs, counts.batches) >= self.retention.limits.chunk
            await asyncio.sleep(0 if full else self.interval)
