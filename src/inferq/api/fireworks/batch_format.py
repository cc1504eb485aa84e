"""Fireworks' batch format: input rows ``{custom_id, body}`` (the model is the job's),
an output dataset holding ``BIJOutputSet.jsonl`` (``{custom_id, response}`` lines)
and ``error-data`` (``{custom_id, error: {code, message}}`` lines)."""

from __future__ import annotations

from typing import Any

from inferq.api.chat import parse_chat_body, render_completion
from inferq.core.batch_format import OutputFile, ParsedRow, outputs_record, row_object
from inferq.core.errors import InvalidRequest
from inferq.core.files import DATASET
from inferq.core.models import Batch, BatchCounts, FileRecord, Job

RESULTS = "BIJOutputSet.jsonl"
ERRORS = "error-data"


def job_name(batch: Batch) -> str:
    return f"accounts/{batch.meta.get('account', '-')}/batchInferenceJobs/{batch.id}"


class FireworksBatchFormat:
    def parse_row(self, data: Any, batch: Batch) -> ParsedRow:
        data, custom_id = row_object(data, noun="row")
        body = data.get("body")
        if not isinstance(body, dict):
            raise InvalidRequest("body: must be a JSON object", param="body")
        if "prompt_token_ids" in body:
            raise InvalidRequest(
                "body.prompt_token_ids: token-id prompts are not supported; send messages",
                param="body.prompt_token_ids",
            )
        merged = {**batch.params, **{k: v for k, v in body.items() if k != "model"}}
        assert batch.model is not None, "a Fireworks batch names its model"
        request = parse_chat_body(merged, prefix="body").to_request()
        return ParsedRow(custom_id, batch.model, request)

    def result_line(self, row: Job, batch: Batch) -> dict[str, Any]:
        return {"custom_id": row.custom_id, "response": render_completion(row)}

    def error_line(self, row: Job, batch: Batch) -> dict[str, Any]:
        error = row.error
        return {
            "custom_id": row.custom_id,
            "error": {
                "code": error.code if error else "unknown_error",
                "message": error.message if error else "the request did not complete",
            },
        }

    def output_files(self, batch: Batch) -> tuple[OutputFile, OutputFile]:
        dataset = batch.meta["outputDatasetId"]
        return OutputFile(dataset, RESULTS), OutputFile(dataset, ERRORS)

    def publish(
        self, batch: Batch, counts: BatchCounts, sizes: tuple[int, int], now: float
    ) -> tuple[list[FileRecord], Batch]:
        record = outputs_record(
            batch,
            self.output_files(batch),
            sizes,
            now,
            kind=DATASET,
            purpose="dataset",
            meta={
                "displayName": f"{batch.meta.get('displayName') or batch.id} output",
                "format": "FORMAT_UNSPECIFIED",
                "exampleCount": str(counts.succeeded),
                "sourceJobName": job_name(batch),
                "account": batch.meta.get("account", "-"),
            },
        )
        return [record], batch.evolve(output_file_id=record.id)
