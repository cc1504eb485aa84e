"""What a dialect plugs into batches: how its lines read and its results write.

A batch's dialect hands :class:`~inferq.core.batches.BatchService` a :class:`NewBatch`
and supplies a :class:`BatchFormat`; the service and its validator
(:mod:`inferq.core.batch_validation`) do the rest.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Protocol

from inferq.core.errors import InvalidRequest
from inferq.core.ids import ordered_parts, ordered_uuid
from inferq.core.models import Batch, BatchCounts, FileRecord, Job
from inferq.core.states import JobState
from inferq.core.work import Request

#: rows inserted (and result rows read) per store round trip
CHUNK = 1000
#: validation stops after this many bad lines
MAX_ERRORS = 100
#: the longest input line accepted, in bytes
MAX_LINE = 8 * 1024 * 1024

_ROW_IDS = uuid.UUID("0f6a5b0e-6c43-4d1b-9a8e-2f1d3c5b7a90")


@dataclass(frozen=True, slots=True)
class ParsedRow:
    """One valid input line, free of its dialect's shape."""

    custom_id: str
    model: str
    request: Request


@dataclass(frozen=True, slots=True)
class OutputFile:
    """Where a batch's result or error lines go: a file record and one of its files."""

    record_id: str
    name: str


class BatchFormat(Protocol):
    """How one dialect reads a batch's input lines and writes its output lines."""

    def parse_row(self, data: Any, batch: Batch) -> ParsedRow:
        """Check one decoded input line; raise a ClientError naming what is wrong."""

    def result_line(self, row: Job, batch: Batch) -> dict[str, Any]:
        """The output line of a succeeded row."""

    def error_line(self, row: Job, batch: Batch) -> dict[str, Any]:
        """The error-file line of a row that failed, was cancelled or expired."""

    def output_files(self, batch: Batch) -> tuple[OutputFile, OutputFile]:
        """Where result lines and error lines are written."""

    def publish(
        self, batch: Batch, counts: BatchCounts, sizes: tuple[int, int], now: float
    ) -> tuple[list[FileRecord], Batch]:
        """The file records that make the outputs visible, and the batch pointing at them.

        A record left out of the list is not published (its bytes are removed).
        """


class ModelNames(Protocol):
    def validate(self, model: str, request: Request) -> None: ...

    def names(self) -> Collection[str]: ...


@dataclass(frozen=True, slots=True)
class BatchLimits:
    #: rows one batch may hold
    max_rows: int = 200_000
    #: batches a tenant may have open at once
    max_open: int = 20
    #: attempts per row (engine errors are retried)
    max_attempts: int = 4
    #: the completion window, in seconds: rows that have not run by then expire
    window: float = 24 * 3600.0
    #: tokens of one tenant's unfinished batch rows per model (estimated at validation,
    #: released as rows end); a batch that would pass it fails validation (None: any)
    max_enqueued_tokens: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class NewBatch:
    """A batch as a dialect (or the workflow service) asks for it; :meth:`record` gives
    it its id, its times and its first state (:meth:`BatchService.submit`: ``validating``,
    expiring at the end of the completion window)."""

    tenant: str
    #: the dialect whose :class:`BatchFormat` reads its lines and writes its outputs
    dialect: str
    endpoint: str
    input_file_id: str
    #: the model every row runs on, when the batch names one
    model: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    #: the id the client chose; None: a new one, :attr:`id_prefix` and a random hex
    id: str | None = None
    id_prefix: str = "batch_"
    idempotency_key: str | None = None
    #: an ended batch whose unsucceeded rows this one reruns
    continued_from: str | None = None

    def record(self, state: JobState, *, now: float, expires_at: float) -> Batch:
        """The batch's first record: created ``now`` in ``state``."""
        return Batch(
            id=self.id or self.id_prefix + uuid.uuid4().hex,
            tenant=self.tenant,
            dialect=self.dialect,
            model=self.model,
            endpoint=self.endpoint,
            state=state,
            input_file_id=self.input_file_id,
            created_at=now,
            expires_at=expires_at,
            params=self.params,
            meta=self.meta,
            idempotency_key=self.idempotency_key,
            continued_from=self.continued_from,
            updated_at=now,
        )


def row_object(data: Any, *, noun: str) -> tuple[dict[str, Any], str]:
    """An input row as the JSON object every dialect's rows are, and its ``custom_id``
    (a non-empty string); ``noun`` is what the dialect calls a row ("line", "row")."""
    if not isinstance(data, dict):
        raise InvalidRequest(f"each {noun} must be a JSON object")
    custom_id = data.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        raise InvalidRequest("custom_id: must be a non-empty string", param="custom_id")
    return data, custom_id


def outputs_record(
    batch: Batch,
    outputs: tuple[OutputFile, OutputFile],
    sizes: tuple[int, int],
    now: float,
    *,
    kind: str,
    purpose: str,
    meta: dict[str, Any] | None = None,
) -> FileRecord:
    """One record of the batch's tenant that holds both output files (their names to
    their sizes in ``meta["files"]``, then ``meta``), for a format that writes its result
    and error lines into one record; named after the result file."""
    (results, errors), (results_size, errors_size) = outputs, sizes
    return FileRecord(
        id=results.record_id,
        tenant=batch.tenant,
        kind=kind,
        purpose=purpose,
        filename=results.name,
        bytes=results_size + errors_size,
        created_at=now,
        meta={"files": {results.name: results_size, errors.name: errors_size}, **(meta or {})},
    )


def row_id(batch: Batch, line: int) -> str:
    """The id of a batch's row: the same for the same line, across crashes. Made from
    the batch's creation time, its tenant and id, and the line (:func:`ordered_uuid`), so
    a batch's rows sort after earlier batches' and in line order; a batch stored before
    that (:attr:`Batch.row_ids` 1) keeps the name-based ids its rows were stored with."""
    if batch.row_ids == 1:
        return str(uuid.uuid5(_ROW_IDS, f"{batch.tenant}\n{batch.id}\n{line}"))
    return ordered_uuid(int(batch.created_at * 1000), f"{batch.tenant}\n{batch.id}", line)


def row_family(batch: Batch) -> int | None:
    """What the ids of all the batch's rows share (:func:`inferq.core.ids.ordered_parts`),
    so that a row's id tells its batch and line without a table of the ids; None for a
    batch whose rows have name-based ids (:attr:`Batch.row_ids` 1)."""
    if batch.row_ids == 1:
        return None
    parts = ordered_parts(row_id(batch, 1))
    assert parts is not None, "row_id makes ordered UUIDs"
    return parts[0]


def describe(error: dict[str, Any]) -> str:
    """A validation error as one line: ``file:line: message``."""
    place = ":".join(str(p) for p in (error.get("file"), error.get("line")) if p is not None)
    return f"{place}: {error['message']}" if place else str(error["message"])
