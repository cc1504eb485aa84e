"""A message batch's results file: one JSONL line per request it was created with.

The batch engine wrote a line for every row when the batch ended (the succeeded ones in
``results.jsonl``, the others in ``others.jsonl``), and those are streamed as they are.
A batch can also end with requests no row was made for: one cancelled before its
requests were read, or one that failed before they were; each of those gets its line
from the stored requests (``canceled``, ``expired`` or ``errored``, as the batch
ended), so the file always answers every ``custom_id`` exactly once.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from inferq.api.anthropic.batch_format import KIND, OTHERS, REQUESTS, RESULTS, errored
from inferq.api.anthropic.batch_schemas import requests_of
from inferq.core import jsontext
from inferq.core.files import FileService
from inferq.core.models import Batch, FileRecord
from inferq.core.states import JobState


def _line(value: dict[str, Any]) -> bytes:
    return (jsontext.dumps(value) + "\n").encode()


def _not_run(batch: Batch) -> dict[str, Any]:
    """The result of a request that got no row, by how the batch ended."""
    if batch.state is JobState.CANCELLED:
        return {"type": "canceled"}
    if batch.state is JobState.EXPIRED:
        return {"type": "expired"}
    error = batch.error
    if error is None:
        return errored("internal_error", "the request was not run")
    return errored(error.code, error.message)


async def results(files: FileService, batch: Batch) -> AsyncIterator[bytes]:
    """The records are looked up here, before the first byte, so that a missing one is an
    error answer rather than a cut stream."""
    stored = None
    if batch.output_file_id is not None:
        stored = await files.get(batch.output_file_id, tenant=batch.tenant, kind=KIND)
    rows = batch.counts.total if batch.counts is not None else 0
    requests = None
    if rows < requests_of(batch):
        requests = await files.get(batch.input_file_id, tenant=batch.tenant, kind=KIND)
    return _stream(files, batch, stored, requests)


async def _stream(
    files: FileService, batch: Batch, stored: FileRecord | None, requests: FileRecord | None
) -> AsyncIterator[bytes]:
    seen: set[str] = set()
    if stored is not None:
        for name in (RESULTS, OTHERS):
            if requests is None:  # every request has its line here: pass the bytes on
                async for chunk in files.content(stored, name):
                    yield chunk
                continue
            async for line in files.lines(stored, name):
                if line.strip():
                    seen.add(json.loads(line)["custom_id"])
                    yield line + b"\n"
    if requests is None:
        return
    result = _not_run(batch)
    async for line in files.lines(requests, REQUESTS):
        if not line.strip():
            continue
        custom_id = json.loads(line)["custom_id"]
        if custom_id not in seen:
            seen.add(custom_id)
            yield _line({"custom_id": custom_id, "result": result})
