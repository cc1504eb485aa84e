"""Every Fireworks endpoint: datasets (with their signed URLs) and batch inference jobs."""

from __future__ import annotations

from fastapi import APIRouter

from inferq.api.fireworks import datasets, jobs

router = APIRouter()
router.include_router(datasets.router)
router.include_router(jobs.router)
