"""OpenAI's batch file format: input lines ``{custom_id, method, url, body}``, output
lines ``{id, custom_id, response: {status_code, request_id, body}, error}``."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from inferq.api.chat import parse_chat_body, render_completion
from inferq.api.openai.completions import (
    CompletionBody,
    parse_completion_body,
    render_text_completion,
)
from inferq.api.openai.responses_schemas import parse_response_row, render_response
from inferq.core.batch_format import OutputFile, ParsedRow, row_object
from inferq.core.errors import InvalidRequest
from inferq.core.files import CONTENT, FILE
from inferq.core.models import Batch, BatchCounts, FileRecord, Job
from inferq.core.work import ChatRequest, EmbedRequest, EmbedResult

CHAT = "/v1/chat/completions"
EMBEDDINGS = "/v1/embeddings"
RESPONSES = "/v1/responses"
COMPLETIONS = "/v1/completions"
ENDPOINTS = (CHAT, EMBEDDINGS, RESPONSES, COMPLETIONS)
#: row errors that are the request's own fault: reported with a 400 response body
_CLIENT_CODES = frozenset({"context_length_exceeded", "invalid_request"})
#: row errors of rows that never ran
_NOT_RUN = frozenset({"batch_expired", "batch_cancelled", "invalid_batch"})
_OUTPUTS = uuid.UUID("5b8f7c1e-2d4a-4e8b-9c3f-6a1d0e2b4c57")


def parse_embedding_body(body: dict[str, Any]) -> EmbedRequest:
    raw = body.get("input")
    inputs = [raw] if isinstance(raw, str) else raw
    if not isinstance(inputs, list) or not inputs:
        raise InvalidRequest(
            "body.input: give a string or a non-empty list of strings", param="body.input"
        )
    for n, text in enumerate(inputs):
        if not isinstance(text, str) or not text:
            raise InvalidRequest(
                f"body.input.{n}: must be a non-empty string", param=f"body.input.{n}"
            )
    return EmbedRequest(inputs=tuple(inputs))


def render_embeddings(job: Job) -> dict[str, Any]:
    assert isinstance(job.result, EmbedResult), "only embedding jobs have vectors"
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": list(vector)}
            for i, vector in enumerate(job.result.vectors)
        ],
        "model": job.model,
        "usage": {
            "prompt_tokens": job.usage.prompt_tokens,
            "total_tokens": job.usage.prompt_tokens,
        },
    }


def _in_body(parse: Callable[[dict[str, Any]], ChatRequest], body: dict[str, Any]) -> ChatRequest:
    """``parse(body)``, its errors naming the line's field (``body.…``)."""
    try:
        return parse(body)
    except InvalidRequest as exc:
        if exc.param is not None and exc.param.startswith("body."):
            raise
        param = f"body.{exc.param}" if exc.param else "body"
        raise InvalidRequest(f"body.{exc.message}", param=param) from exc


def parse_completion_row(body: dict[str, Any]) -> ChatRequest:
    """A completions line: one prompt (a row is one job); ``echo`` is not kept with the
    row, so it is refused."""
    for name in ("stream", "echo"):
        if body.get(name):
            raise InvalidRequest(f"body.{name}: is not available in a batch", param=f"body.{name}")
    parsed = parse_completion_body(body, prefix="body")
    prompts = parsed.prompts()
    if len(prompts) != 1:
        raise InvalidRequest("body.prompt: a batch line holds one prompt", param="body.prompt")
    return parsed.to_request(prompts[0])


def render_completion_row(row: Job) -> dict[str, Any]:
    """The text_completion object of a completions row."""
    request = row.request
    assert isinstance(request, ChatRequest)
    logprobs = request.top_logprobs if request.logprobs else None
    body = CompletionBody(model=row.model, prompt=request.prompt or "", logprobs=logprobs)
    return render_text_completion([row], body)


def _output_id(batch: Batch, which: str) -> str:
    return "file-" + uuid.uuid5(_OUTPUTS, f"{batch.tenant}\n{batch.id}\n{which}").hex


class OpenAIBatchFormat:
    def parse_row(self, data: Any, batch: Batch) -> ParsedRow:
        data, custom_id = row_object(data, noun="line")
        if data.get("method") != "POST":
            raise InvalidRequest("method: must be POST", param="method")
        if data.get("url") != batch.endpoint:
            raise InvalidRequest(
                f"url: {data.get('url')!r} does not match the batch's endpoint {batch.endpoint}",
                param="url",
            )
        body = data.get("body")
        if not isinstance(body, dict):
            raise InvalidRequest("body: must be a JSON object", param="body")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise InvalidRequest("body.model: is required", param="body.model")
        if batch.endpoint == EMBEDDINGS:
            return ParsedRow(custom_id, model, parse_embedding_body(body))
        if batch.endpoint == RESPONSES:
            return ParsedRow(custom_id, model, _in_body(parse_response_row, body))
        if batch.endpoint == COMPLETIONS:
            return ParsedRow(custom_id, model, _in_body(parse_completion_row, body))
        if body.get("stream"):
            raise InvalidRequest(
                "body.stream: streaming is not available in a batch", param="body.stream"
            )
        return ParsedRow(custom_id, model, parse_chat_body(body, prefix="body").to_request())

    def result_line(self, row: Job, batch: Batch) -> dict[str, Any]:
        if isinstance(row.result, EmbedResult):
            body = render_embeddings(row)
        elif batch.endpoint == RESPONSES:
            body = render_response(row)
        elif batch.endpoint == COMPLETIONS:
            body = render_completion_row(row)
        else:
            body = render_completion(row)
        return {
            "id": "batch_req_" + row.id.replace("-", ""),
            "custom_id": row.custom_id,
            "response": {"status_code": 200, "request_id": row.id, "body": body},
            "error": None,
        }

    def error_line(self, row: Job, batch: Batch) -> dict[str, Any]:
        """A row that never ran carries ``error``; one that ran and failed, a response.

        As OpenAI does: expired and cancelled rows have ``response: null`` and an
        ``error`` code; a request the model refused answers 400, an engine failure 500.
        """
        error = row.error
        code = error.code if error else "unknown_error"
        message = error.message if error else "the request did not complete"
        line: dict[str, Any] = {
            "id": "batch_req_" + row.id.replace("-", ""),
            "custom_id": row.custom_id,
            "response": None,
            "error": None,
        }
        if code in _NOT_RUN:
            line["error"] = {"code": code, "message": message}
            return line
        client = code in _CLIENT_CODES
        line["response"] = {
            "status_code": 400 if client else 500,
            "request_id": row.id,
            "body": {
                "error": {
                    "message": message,
                    "type": "invalid_request_error" if client else "server_error",
                    "param": None,
                    "code": code,
                }
            },
        }
        return line

    def output_files(self, batch: Batch) -> tuple[OutputFile, OutputFile]:
        return (
            OutputFile(_output_id(batch, "output"), CONTENT),
            OutputFile(_output_id(batch, "error"), CONTENT),
        )

    def publish(
        self, batch: Batch, counts: BatchCounts, sizes: tuple[int, int], now: float
    ) -> tuple[list[FileRecord], Batch]:
        records: list[FileRecord] = []
        output_id = error_id = None
        if sizes[0]:
            output_id = _output_id(batch, "output")
            records.append(
                self._record(batch, output_id, f"{batch.id}_output.jsonl", sizes[0], now)
            )
        if sizes[1]:
            error_id = _output_id(batch, "error")
            records.append(self._record(batch, error_id, f"{batch.id}_error.jsonl", sizes[1], now))
        return records, batch.evolve(output_file_id=output_id, error_file_id=error_id)

    @staticmethod
    def _record(batch: Batch, file_id: str, filename: str, size: int, now: float) -> FileRecord:
        return FileRecord(
            id=file_id,
            tenant=batch.tenant,
            kind=FILE,
            purpose="batch_output",
            filename=filename,
            bytes=size,
            created_at=now,
            status="processed",
        )
