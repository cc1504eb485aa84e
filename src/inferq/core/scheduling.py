"""Scheduling policy: the order in which workers claim jobs.

Class first (interactive, then async, then batch), then priority (higher first),
then submission order. The SQL adapters encode the same order in their claim
query and its index; the memory store sorts with :func:`claim_order`.
"""

from __future__ import annotations

from inferq.core.models import Job, JobError


def claim_order(job: Job) -> tuple[int, int, int]:
    """Sort key: smaller sorts first."""
    return (int(job.service_class), -job.priority, job.seq)


LEASE_EXPIRED_CODE = "worker_lost"


def lease_expired_error(attempt: int, max_attempts: int) -> JobError:
    """The error kept on a job whose worker stopped renewing its lease."""
    return JobError(
        LEASE_EXPIRED_CODE,
        f"the worker running attempt {attempt} of {max_attempts} stopped renewing its lease",
    )
