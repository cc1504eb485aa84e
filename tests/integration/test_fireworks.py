"""Fireworks' datasets and batch inference jobs through the official ``fireworks-ai`` SDK."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import fireworks
import httpx
import pytest

from tests.integration.helpers import MODEL, wait_until
from tests.support.server import Server

pytestmark = pytest.mark.integration

ACCOUNT = "acme"
FINAL = {"JOB_STATE_COMPLETED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED"}


@pytest.fixture
def fw(server: Server, api_key: str) -> Iterator[fireworks.Fireworks]:
    with fireworks.Fireworks(api_key=api_key, base_url=server.url, account_id=ACCOUNT) as client:
        yield client


def input_rows(*questions: str) -> bytes:
    return b"".join(
        json.dumps(
            {
                "custom_id": f"q-{n}",
                "body": {"messages": [{"role": "user", "content": question}], "temperature": 0},
            }
        ).encode()
        + b"\n"
        for n, question in enumerate(questions, 1)
    )


def fetch(url: str) -> bytes:
    response = httpx.get(url, timeout=30)
    response.raise_for_status()
    return response.content


def test_dataset_to_completed_job_and_back(fw: fireworks.Fireworks) -> None:
    data = input_rows("Say hello.", "What is 2+2?", "Name a colour.")
    dataset = fw.datasets.create(
        dataset_id="questions",
        dataset={"display_name": "Questions", "example_count": "3", "user_uploaded": {}},
    )
    assert dataset.name == f"accounts/{ACCOUNT}/datasets/questions"
    assert dataset.state == "UPLOADING"
    uploaded = fw.datasets.upload("questions", file=("questions.jsonl", data))
    assert uploaded.bytes == len(data) and uploaded.filename == "questions.jsonl"
    assert fw.datasets.get("questions").state == "READY"
    urls = fw.datasets.get_download_endpoint("questions").filename_to_signed_urls
    assert urls is not None
    assert {k: fetch(u) for k, u in urls.items()} == {"dataset/questions/questions.jsonl": data}

    job = fw.batch_inference_jobs.create(
        batch_inference_job_id="first-job",
        model=f"accounts/fireworks/models/{MODEL}",
        input_dataset_id=f"accounts/{ACCOUNT}/datasets/questions",
        display_name="first",
        inference_parameters={"max_tokens": 8, "temperature": 0},
    )
    assert job.name == f"accounts/{ACCOUNT}/batchInferenceJobs/first-job"
    assert job.state in {"JOB_STATE_VALIDATING", "JOB_STATE_PENDING"}
    assert job.inference_parameters is not None and job.inference_parameters.max_tokens == 8

    def finished() -> Any:
        current = fw.batch_inference_jobs.get("first-job")
        return current.state in FINAL and current

    done = wait_until(finished, interval=0.5, what="the job to end")
    assert done.state == "JOB_STATE_COMPLETED", done
    assert done.status is not None and done.status.code == "OK"
    progress = done.job_progress
    assert progress is not None
    assert progress.total_input_requests == 3 and progress.successfully_processed_requests == 3
    assert progress.percent == 100 and progress.output_tokens and progress.input_tokens

    listed = fw.batch_inference_jobs.list(filter="state=JOB_STATE_COMPLETED")
    assert [j.name for j in listed] == [job.name]

    assert done.output_dataset_id is not None
    output_id = done.output_dataset_id.rsplit("/", 1)[1]
    output = fw.datasets.get(output_id)
    assert output.state == "READY" and output.source_job_name == job.name
    files = fw.datasets.get_download_endpoint(output_id).filename_to_signed_urls
    assert files is not None
    assert set(files) == {
        f"dataset/{output_id}/BIJOutputSet.jsonl",
        f"dataset/{output_id}/error-data",
    }
    lines = [
        json.loads(line)
        for line in fetch(files[f"dataset/{output_id}/BIJOutputSet.jsonl"]).split(b"\n")
        if line
    ]
    assert sorted(line["custom_id"] for line in lines) == ["q-1", "q-2", "q-3"]
    for line in lines:
        completion = line["response"]
        assert completion["object"] == "chat.completion"
        assert completion["usage"]["completion_tokens"] <= 8
        assert completion["choices"][0]["message"]["content"]
    assert fetch(files[f"dataset/{output_id}/error-data"]) == b""

    assert fw.batch_inference_jobs.delete("first-job") == {}
    with pytest.raises(fireworks.NotFoundError):
        fw.batch_inference_jobs.get("first-job")
    assert fw.datasets.delete(output_id) == {}


def test_errors_are_the_sdk_error_classes(fw: fireworks.Fireworks) -> None:
    with pytest.raises(fireworks.NotFoundError) as missing:
        fw.datasets.get("no-such-dataset")
    assert isinstance(missing.value.body, dict) and missing.value.body["code"] == 5
    with pytest.raises(fireworks.BadRequestError) as no_count:
        fw.datasets.create(dataset_id="no-count", dataset={"user_uploaded": {}})
    assert "example_count" in str(no_count.value)
    fw.datasets.create(dataset_id="twice", dataset={"example_count": "1", "user_uploaded": {}})
    with pytest.raises(fireworks.ConflictError):
        fw.datasets.create(dataset_id="twice", dataset={"example_count": "1"})
    with pytest.raises(fireworks.BadRequestError) as bad_model:
        fw.batch_inference_jobs.create(model="no-such-model", input_dataset_id="twice")
    assert "model" in str(bad_model.value)
    with pytest.raises(fireworks.AuthenticationError):
        fw.with_options(api_key="not-a-key").datasets.get("twice")
