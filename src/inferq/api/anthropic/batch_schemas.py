"""Anthropic's message batch create body and batch object, translated to and from the
core Batch."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from inferq.core.models import Batch, BatchCounts
from inferq.core.states import JobState

#: Anthropic's limits on one batch: requests, and bytes of the create body
MAX_REQUESTS = 100_000
MAX_BODY_BYTES = 256 * 1000 * 1000
#: Anthropic's list page sizes
MAX_PAGE = 1000
#: the number of requests a batch holds (set at creation)
REQUESTS_META = "requests"

#: the core state -> Anthropic's processing_status (finalizing is still in progress:
#: the results are not written yet)
PROCESSING_STATUS: dict[JobState, str] = {
    JobState.VALIDATING: "in_progress",
    JobState.QUEUED: "in_progress",
    JobState.RUNNING: "in_progress",
    JobState.FINALIZING: "in_progress",
    JobState.CANCELLING: "canceling",
    JobState.SUCCEEDED: "ended",
    JobState.FAILED: "ended",
    JobState.CANCELLED: "ended",
    JobState.EXPIRED: "ended",
}


class BatchRequestParam(BaseModel):
    """One request of a batch; its ``params`` are checked as a Messages request."""

    model_config = ConfigDict(extra="forbid")

    custom_id: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    params: dict[str, Any]


class BatchCreate(BaseModel):
    """The body of ``POST /v1/messages/batches``."""

    model_config = ConfigDict(extra="allow")

    requests: list[BatchRequestParam] = Field(min_length=1, max_length=MAX_REQUESTS)


def rfc3339(value: float | None) -> str | None:
    if value is None:
        return None
    return datetime.fromtimestamp(value, UTC).isoformat().replace("+00:00", "Z")


def requests_of(batch: Batch) -> int:
    """How many requests the batch was created with."""
    stored = batch.meta.get(REQUESTS_META)
    return stored if isinstance(stored, int) else batch.total


def request_counts(batch: Batch, counts: BatchCounts) -> dict[str, int]:
    """Anthropic's tallies: every request is ``processing`` until the batch has ended.

    Then a request that did not run is ``canceled`` or ``expired`` as the batch ended,
    and ``errored`` when the batch failed as a whole; requests no row was made for (a
    batch cancelled before its requests were read) count with those that did not run.
    """
    total = requests_of(batch)
    tally = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
    if not batch.state.terminal:
        tally["processing"] = total
        return tally
    not_run = counts.cancelled + max(0, total - counts.total)
    tally["succeeded"] = counts.succeeded
    tally["errored"] = counts.failed
    if batch.state is JobState.EXPIRED:
        tally["expired"] = not_run
    elif batch.state is JobState.FAILED:
        tally["errored"] += not_run
    else:
        tally["canceled"] = not_run
    return tally


def render_batch(batch: Batch, counts: BatchCounts, results_url: str) -> dict[str, Any]:
    """Anthropic's ``message_batch`` object; ``results_url`` is given once it has ended."""
    ended = batch.state.terminal
    return {
        "id": batch.id,
        "type": "message_batch",
        "processing_status": PROCESSING_STATUS[batch.state],
        "request_counts": request_counts(batch, counts),
        "ended_at": rfc3339(batch.finished_at if ended else None),
        "created_at": rfc3339(batch.created_at),
        "expires_at": rfc3339(batch.expires_at),
        "archived_at": None,
        "cancel_initiated_at": rfc3339(batch.cancelling_at),
        "results_url": results_url if ended else None,
    }
