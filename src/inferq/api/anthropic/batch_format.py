"""Anthropic's Message Batches on the batch engine: requests ``{custom_id, params}``,
results ``{custom_id, result: {type: succeeded | errored | canceled | expired, ...}}``.

A message batch keeps its files in two records of kind ``message_batch`` (listed by no
files endpoint): the requests, as JSONL, under the batch's id, and the results under
:func:`results_id`: the succeeded rows' lines in ``results.jsonl``, every other row's in
``others.jsonl``. ``GET .../results`` streams both (:mod:`inferq.api.anthropic.results`).
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from inferq.api.anthropic.schemas import MessagesRequest
from inferq.api.anthropic.translate import error_body, render_message
from inferq.core.batch_format import OutputFile, ParsedRow, outputs_record, row_object
from inferq.core.errors import ClientError, InferqError, InvalidRequest
from inferq.core.models import Batch, BatchCounts, FileRecord, Job

ENDPOINT = "/v1/messages"
#: the kind of the records that hold a message batch's requests and results
KIND = "message_batch"
REQUESTS = "requests.jsonl"
RESULTS = "results.jsonl"
OTHERS = "others.jsonl"
#: row error codes of rows that never ran, and the result type each gets
NOT_RUN = {"batch_cancelled": "canceled", "batch_expired": "expired"}
#: row error codes that are the request's own fault (an ``invalid_request_error``)
_CLIENT_CODES = frozenset({"context_length_exceeded", "invalid_request", "not_found"})


def results_id(batch_id: str) -> str:
    """The id of the record that holds a batch's results."""
    return batch_id + "_results"


def parse_params(data: Any, *, prefix: str) -> MessagesRequest:
    """One request's ``params`` as a Messages request; InvalidRequest naming the field."""
    try:
        params = MessagesRequest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in (prefix, *first["loc"]))
        raise InvalidRequest(f"{param}: {first['msg']}", param=param) from exc
    if params.stream:
        raise InvalidRequest(
            f"{prefix}.stream: streaming is not available in a message batch",
            param=f"{prefix}.stream",
        )
    return params


def in_request(exc: ClientError, prefix: str) -> InvalidRequest:
    """A request's problem as one of the whole batch body, its field under ``prefix``."""
    param = f"{prefix}.{exc.param}" if exc.param else prefix
    message = exc.message
    if exc.param and message.startswith(exc.param + ":"):
        message = message[len(exc.param) + 1 :].lstrip()
    return InvalidRequest(f"{param}: {message}", param=param)


def errored(code: str, message: str) -> dict[str, Any]:
    """An ``errored`` result: Anthropic's error response of a request that failed."""
    status = 400 if code in _CLIENT_CODES else 500
    body = error_body(InferqError(message), status)
    return {"type": "errored", "error": body}


def result_of(code: str | None, message: str) -> dict[str, Any]:
    """The result of a request that did not succeed, from its row's error code."""
    kind = NOT_RUN.get(code or "")
    return {"type": kind} if kind else errored(code or "unknown_error", message)


class AnthropicBatchFormat:
    def parse_row(self, data: Any, batch: Batch) -> ParsedRow:
        data, custom_id = row_object(data, noun="request")
        params = parse_params(data.get("params"), prefix="params")
        return ParsedRow(custom_id, params.model, params.to_request())

    def result_line(self, row: Job, batch: Batch) -> dict[str, Any]:
        return {
            "custom_id": row.custom_id,
            "result": {"type": "succeeded", "message": render_message(row)},
        }

    def error_line(self, row: Job, batch: Batch) -> dict[str, Any]:
        error = row.error
        message = error.message if error else "the request did not complete"
        return {
            "custom_id": row.custom_id,
            "result": result_of(error.code if error else None, message),
        }

    def output_files(self, batch: Batch) -> tuple[OutputFile, OutputFile]:
        return OutputFile(results_id(batch.id), RESULTS), OutputFile(results_id(batch.id), OTHERS)

    def publish(
        self, batch: Batch, counts: BatchCounts, sizes: tuple[int, int], now: float
    ) -> tuple[list[FileRecord], Batch]:
        outputs = self.output_files(batch)
        record = outputs_record(
            batch, outputs, sizes, now, kind=KIND, purpose="message_batch_results"
        )
        return [record], batch.evolve(output_file_id=record.id)
