"""The enqueued-token bound of batches (OpenAI's batch queue limit): per tenant and model,
estimated at validation, held while the rows have not ended."""

from __future__ import annotations

import asyncio
import dataclasses

from inferq.core.models import Batch
from inferq.core.states import JobState
from tests.unit.test_batches import TENANT, Rig, rig, row

__all__ = ["rig"]


async def until_queued(rig: Rig, batch_id: str) -> Batch:
    """Run the batch runner until the batch has validated."""
    for _ in range(500):
        await rig.runner.turn()
        batch = await rig.batches.get(batch_id, tenant=TENANT)
        if batch.state is not JobState.VALIDATING:
            assert batch.state is JobState.QUEUED, batch
            return batch
        await asyncio.sleep(0.01)
    raise AssertionError(f"batch {batch_id} did not validate")


async def test_a_batch_past_the_bound_fails_and_ended_rows_release_it(rig: Rig) -> None:
    await rig.worker.stop()  # the rows stay queued: they hold their tokens
    first = await rig.create(await rig.upload([row(n) for n in range(1, 6)]))
    queued = await until_queued(rig, first.id)
    held = queued.enqueued_tokens["fake"]
    assert held > 5  # estimated at validation: the rows' text and their max_tokens
    limits = rig.batches.limits
    rig.batches.limits = dataclasses.replace(limits, max_enqueued_tokens=held * 2 - 1)

    second = await rig.create(await rig.upload([row(n) for n in range(1, 6)]), batch_id="b2")
    failed = await rig.settle(second.id)
    assert failed.state is JobState.FAILED and failed.errors is not None
    assert failed.errors[0]["code"] == "token_limit_exceeded"
    assert "fake" in failed.errors[0]["message"]
    counts = await rig.store.batch_counts(tenant=TENANT, batch_id="b2")
    assert counts.active == 0  # none of its rows can run

    # the first batch's rows end (cancelled): its tokens are released
    await rig.batches.cancel(first.id, tenant=TENANT)
    await rig.settle(first.id)
    third = await rig.create(await rig.upload([row(n) for n in range(1, 6)]), batch_id="b3")
    assert (await until_queued(rig, third.id)).enqueued_tokens == {"fake": held}
