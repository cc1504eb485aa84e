"""Every Fireworks endpoint: datasets (with their signed URLs) and batch inference jobs."""

from __future__ import annotations

from inferq.api.fireworks import datasets, jobs
from inferq.api.routing import Router

router = Router()
router.include_router(datasets.router)
router.include_router(jobs.router)
