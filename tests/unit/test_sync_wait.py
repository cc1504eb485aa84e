"""wait_for_client: a sync request waits for its job, and gives it up when the client goes.

A fake job service stands in for the queue; the request is a stub whose ``receive``
either never returns (the client stays), returns ``http.disconnect`` (it left), or fails
(watching is impossible: the request still gets its answer).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from fastapi import Request

from inferq.api.sync import KEEPALIVE, ClientGone, wait_for_client, with_keepalive
from inferq.core.models import Job
from inferq.core.service import JobService
from tests.contract.test_store_contract import make_job


class Jobs:
    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.cancelled: list[str] = []

    async def wait(self, job_id: str, *, tenant: str | None, deadline: float) -> str:
        await asyncio.sleep(self.delay)
        return f"result of {job_id}"

    async def cancel(self, job_id: str, *, tenant: str | None) -> None:
        self.cancelled.append(job_id)


class Client:
    def __init__(self, receive: Any) -> None:
        self.receive = receive


async def stays() -> dict[str, Any]:
    await asyncio.sleep(3600)
    return {"type": "http.disconnect"}


async def leaves() -> dict[str, Any]:
    return {"type": "http.disconnect"}


async def breaks() -> dict[str, Any]:
    raise RuntimeError("receive failed")


async def wait(jobs: Jobs, receive: Any) -> tuple[object, Job]:
    job = make_job()
    answer = await wait_for_client(cast(Request, Client(receive)), cast(JobService, jobs), job)
    return answer, job


async def test_the_answer_comes_back_while_the_client_stays() -> None:
    jobs = Jobs(delay=0.01)
    answer, job = await wait(jobs, stays)
    assert answer == f"result of {job.id}" and jobs.cancelled == []


async def test_a_client_that_leaves_gives_its_job_up() -> None:
    jobs = Jobs(delay=3600)
    with pytest.raises(ClientGone):
        await wait(jobs, leaves)
    await asyncio.sleep(0.05)  # the cancel runs in the background
    assert len(jobs.cancelled) == 1


async def test_failing_to_watch_the_client_still_answers() -> None:
    jobs = Jobs(delay=0.05)
    answer, job = await wait(jobs, breaks)
    assert answer == f"result of {job.id}" and jobs.cancelled == []


async def test_a_quiet_stream_sends_keepalive_comments_and_loses_no_event() -> None:
    """A stream waiting for its job sends SSE comments meanwhile; the events themselves
    arrive whole and in order, and the generator is never interrupted by them."""
    steps: list[str] = []

    async def slow() -> AsyncIterator[str]:
        for n in range(3):
            await asyncio.sleep(0.25)
            steps.append(f"after sleep {n}")
            yield f"data: {n}\n\n"

    got = [item async for item in with_keepalive(slow(), 0.05)]
    events = [g for g in got if g != KEEPALIVE]
    assert events == ["data: 0\n\n", "data: 1\n\n", "data: 2\n\n"]
    assert got.count(KEEPALIVE) >= 6
    assert steps == ["after sleep 0", "after sleep 1", "after sleep 2"]
