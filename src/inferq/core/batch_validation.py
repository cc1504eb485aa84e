"""Validating a batch: every input line checked, its rows stored, then released at once.

The runner streams the input file (or, for a continued batch, the earlier batch's
rows that did not succeed), checks every line with the dialect's
:class:`~inferq.core.batch_format.BatchFormat` and the shared input rules
(:func:`inferq.core.inputs.loads`), and inserts the rows in chunks, still in the
``validating`` state where no worker claims them. Row ids are derived from the batch
and the line, so a validation interrupted by a crash is simply redone. Only when the
whole file is valid (duplicate ``custom_id``s included) does the batch become
``queued`` and its rows claimable, all at once; otherwise it fails naming the lines.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from inferq.core import inputs
from inferq.core.batch_format import (
    CHUNK,
    MAX_ERRORS,
    MAX_LINE,
    BatchFormat,
    BatchLimits,
    ModelNames,
    ParsedRow,
    describe,
    row_id,
)
from inferq.core.errors import ClientError, InvalidRequest, NotFound
from inferq.core.events import JobEvents
from inferq.core.files import DATASET, blob_key, file_names
from inferq.core.limits import estimate_tokens
from inferq.core.models import Batch, BatchCounts, Job, JobError
from inferq.core.ports import BatchFileStore, BatchFilter, BlobStore, Ending, RowFilter
from inferq.core.states import JobState, ServiceClass

log = logging.getLogger("inferq.batches")
#: the states of a batch that still holds enqueued tokens
_OPEN = frozenset({JobState.VALIDATING, JobState.QUEUED, JobState.RUNNING})

Renew = Callable[[], Awaitable[bool]]
Transition = Callable[[Batch, Batch], Awaitable[bool]]


def _loads(line: bytes) -> Any:
    """One input line, parsed and checked as all client JSON is: a line nested too
    deep, with a NUL or a lone surrogate, or a number no store keeps, is a line error."""
    return inputs.loads(line, what="the line")


@dataclass(kw_only=True, eq=False)
class BatchParts:
    """What batch processing works with: :class:`~inferq.core.batches.BatchService` is
    built from them, and hands them to its validator."""

    store: BatchFileStore
    blobs: BlobStore
    models: ModelNames
    events: JobEvents
    #: each dialect's way of reading rows and writing results, by dialect name
    formats: Mapping[str, BatchFormat]
    limits: BatchLimits = field(default_factory=BatchLimits)
    clock: Callable[[], float] = time.time


class BatchValidator:
    """Moves a batch out of ``validating``: to ``queued``, or ``failed`` naming its lines."""

    def __init__(self, parts: BatchParts, *, transition: Transition) -> None:
        self.parts = parts
        self._transition = transition

    async def validate(self, batch: Batch, renew: Renew) -> None:
        fmt = self.parts.formats[batch.dialect]
        errors: list[dict[str, Any]] = []
        pending: list[Job] = []
        total = 0
        unexpected = 0
        tokens: dict[str, int] = {}
        now = self.parts.clock()

        def error(
            exc: ClientError, where: tuple[str | None, int | None], code: str | None = None
        ) -> None:
            errors.append(
                {
                    "code": code or exc.code,
                    "message": exc.message,
                    "param": exc.param,
                    "file": where[0],
                    "line": where[1],
                }
            )

        try:
            async for where, item in self._inputs(batch):
                total += 1
                if total > self.parts.limits.max_rows:
                    error(
                        InvalidRequest(
                            f"the batch holds more than {self.parts.limits.max_rows} requests"
                        ),
                        where,
                    )
                    break
                try:
                    parsed = (
                        item if isinstance(item, ParsedRow) else fmt.parse_row(_loads(item), batch)
                    )
                    self.parts.models.validate(parsed.model, parsed.request)
                except ClientError as exc:
                    error(exc, where)
                    if len(errors) >= MAX_ERRORS:
                        break
                    continue
                except Exception as exc:
                    # a line that trips a bug fails as a line: the batch ends, the runner
                    # goes on with the others
                    if not unexpected:
                        log.warning(
                            "batch %s: line %s could not be checked", batch.id, where[1],
                            exc_info=True,
                        )  # fmt: skip
                    unexpected += 1
                    message = (
                        f"the line could not be checked: an internal error "
                        f"({type(exc).__name__}); see the server log"
                    )
                    error(InvalidRequest(message), where, code="internal_error")
                    if len(errors) >= MAX_ERRORS:
                        break
                    continue
                if errors:
                    continue  # keep collecting errors, stop storing rows
                cost = estimate_tokens(parsed.request.to_dict())
                tokens[parsed.model] = tokens.get(parsed.model, 0) + cost
                pending.append(self._row(batch, total, parsed, now))
                if len(pending) >= CHUNK:
                    await self.parts.store.insert_rows(pending)
                    pending = []
                    if not await renew():
                        return
        except ClientError as exc:  # the input file is gone, or a line is too long
            error(exc, (None, None))
        if pending and not errors:
            await self.parts.store.insert_rows(pending)
        if not errors:
            for custom_id, first, again in await self.parts.store.duplicate_custom_ids(
                tenant=batch.tenant, batch_id=batch.id, limit=MAX_ERRORS
            ):
                errors.append(
                    {
                        "code": "duplicate_custom_id",
                        "message": f"custom_id {custom_id!r} is used more than once "
                        f"(rows {first} and {again}); every custom_id must be unique",
                        "param": "custom_id",
                        "file": None,
                        "line": again,
                    }
                )
        if not errors:
            errors += await self._over_token_bound(batch, tokens)
        if total == 0 and not errors:
            errors.append(
                {
                    "code": "empty_file",
                    "message": "the input file holds no requests",
                    "param": None,
                    "file": None,
                    "line": None,
                }
            )
        now = self.parts.clock()
        if errors:
            await self.parts.store.finish_rows(
                Ending(
                    JobState.CANCELLED, JobError("invalid_batch", "the batch failed validation")
                ),
                tenant=batch.tenant,
                batch_id=batch.id,
                now=now,
            )
            failed = batch.evolve(
                state=JobState.FAILED,
                errors=errors,
                error=JobError("invalid_request", describe(errors[0])),
                counts=BatchCounts(),
                validated_at=now,
                finished_at=now,
            )
            if await self._transition(batch, failed):
                log.info("batch %s failed validation: %s", batch.id, failed.error)
            return
        queued = batch.evolve(
            state=JobState.QUEUED, total=total, validated_at=now, enqueued_tokens=tokens
        )
        if await self._transition(batch, queued):
            await self.parts.store.release_rows(tenant=batch.tenant, batch_id=batch.id)
            self.parts.events.job_submitted()

    async def _over_token_bound(
        self, batch: Batch, tokens: Mapping[str, int]
    ) -> list[dict[str, Any]]:
        """The error of a batch whose tokens would take its tenant past the enqueued-token
        bound of a model (OpenAI's batch queue limit), or none. The tenant's other open
        batches hold their estimate in proportion to their rows not yet ended."""
        bound = self.parts.limits.max_enqueued_tokens
        if bound is None:
            return []
        held = dict.fromkeys(tokens, 0.0)
        others = await self.parts.store.list_batches(
            BatchFilter(tenant=batch.tenant, dialect=None, limit=10_000, states=_OPEN)
        )
        for other in others:
            if other.id == batch.id or not other.total or not held.keys() & other.enqueued_tokens:
                continue
            counts = await self.parts.store.batch_counts(tenant=other.tenant, batch_id=other.id)
            share = counts.active / other.total
            for model in held.keys() & other.enqueued_tokens:
                held[model] += other.enqueued_tokens[model] * share
        for model, mine in sorted(tokens.items()):
            if held[model] + mine > bound:
                message = (
                    f"enqueued token limit reached for {model}: {bound} tokens of unfinished "
                    f"batch rows per tenant and model; this batch holds about {mine}, the "
                    f"tenant's other open batches about {held[model]:.0f}. Retry once some "
                    "of them have finished"
                )
                return [
                    {"code": "token_limit_exceeded", "message": message, "param": None,
                     "file": None, "line": None}
                ]  # fmt: skip
        return []

    async def _inputs(
        self, batch: Batch
    ) -> AsyncIterator[tuple[tuple[str | None, int | None], bytes | ParsedRow]]:
        """Each input request with where it came from: raw lines, or an earlier batch's rows."""
        if batch.continued_from is not None:
            earlier = await self.parts.store.get_batch(batch.continued_from, tenant=batch.tenant)
            if earlier is None:
                raise NotFound(f"batch {batch.continued_from} not found", param="batch_id")
            if earlier.total > 0:
                async for row in self._unsucceeded(earlier):
                    assert row.custom_id is not None and row.batch_line is not None
                    yield (
                        (earlier.id, row.batch_line),
                        ParsedRow(custom_id=row.custom_id, model=row.model, request=row.request),
                    )
                return
            batch = earlier  # it never got past validation: read its input again
        record = await self.parts.store.get_file(batch.input_file_id, tenant=batch.tenant)
        if record is None:
            raise InvalidRequest(f"the input file {batch.input_file_id} was deleted")
        for name in file_names(record):
            display = record.filename if record.kind != DATASET else name
            number = 0
            async for line in self.parts.blobs.lines(
                blob_key(record.tenant, record.id, name), max_line=MAX_LINE
            ):
                number += 1
                if line.strip():
                    yield (display, number), line

    async def _unsucceeded(self, batch: Batch) -> AsyncIterator[Job]:
        after = 0
        while page := await self.parts.store.batch_rows(
            RowFilter(tenant=batch.tenant, batch_id=batch.id, after_line=after, limit=CHUNK)
        ):
            for row in page:
                if row.state is not JobState.SUCCEEDED:
                    yield row
            after = page[-1].batch_line or 0

    def _row(self, batch: Batch, line: int, parsed: ParsedRow, now: float) -> Job:
        return Job(
            id=row_id(batch, line),
            tenant=batch.tenant,
            model=parsed.model,
            origin=f"{batch.dialect}-batch",
            service_class=ServiceClass.BATCH,
            # round-robin across batches: row k of every batch before row k + 1 of any
            priority=-line,
            state=JobState.VALIDATING,
            request=parsed.request,
            created_at=now,
            max_attempts=self.parts.limits.max_attempts,
            batch_id=batch.id,
            custom_id=parsed.custom_id,
            batch_line=line,
        )
