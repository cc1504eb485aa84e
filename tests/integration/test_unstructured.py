"""Unstructured's jobs API through the official ``unstructured-client`` SDK, on the
real models (SmolLM2 for enrichments and embeddings) and real documents the tests
build themselves (a PDF, an HTML page, Markdown, a DOCX, an email).

Enrichment prompts stay few and short: the machine may have two cores.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from unstructured_client import UnstructuredClient
from unstructured_client.models import errors, operations, shared

from tests import documents_samples as samples
from tests.integration.helpers import MODEL, new_key, start_server, wait_until
from tests.support.server import Server

pytestmark = pytest.mark.integration

EMBED_MODEL = "smollm2-135m-embed"
ENDED = {"COMPLETED", "FAILED", "STOPPED"}


@contextlib.contextmanager
def sdk(url: str, key: str) -> Iterator[UnstructuredClient]:
    """The SDK on an HTTP client the test closes itself: the SDK wraps the client's
    transport in one whose close() does nothing, so its own close leaks the connection."""
    transport = httpx.HTTPTransport()
    with httpx.Client(transport=transport) as http:
        try:
            yield UnstructuredClient(api_key_auth=key, server_url=url, client=http)
        finally:
            transport.close()


@pytest.fixture(scope="module")
def uns(server: Server) -> Iterator[UnstructuredClient]:
    with sdk(server.url, new_key(server, "docs")) as client:
        yield client


def files_of(*docs: tuple[str, bytes]) -> list[shared.InputFiles]:
    return [shared.InputFiles(content=data, file_name=name) for name, data in docs]


def create(
    client: UnstructuredClient, request_data: dict[str, Any], *docs: tuple[str, bytes]
) -> shared.JobInformation:
    response = client.jobs.create_job(
        request=operations.CreateJobRequest(
            body_create_job=shared.BodyCreateJob(
                request_data=json.dumps(request_data), input_files=files_of(*docs)
            )
        )
    )
    assert response.job_information is not None
    return response.job_information


def get(client: UnstructuredClient, job_id: str) -> shared.JobInformation:
    info = client.jobs.get_job(request={"job_id": job_id}).job_information
    assert info is not None
    return info


def wait_ended(client: UnstructuredClient, job_id: str) -> shared.JobInformation:
    return wait_until(
        lambda: (info := get(client, job_id)).status in ENDED and info,
        interval=0.2,
        what=f"job {job_id} to end",
    )


def download(
    client: UnstructuredClient, job_id: str, file_id: str, node_id: str | None = None
) -> list[dict[str, Any]]:
    request: dict[str, Any] = {"job_id": job_id, "file_id": file_id}
    if node_id is not None:
        request["node_id"] = node_id
    elements: list[dict[str, Any]] = client.jobs.download_job_output(request=request).any
    return elements


def test_templates(uns: UnstructuredClient) -> None:
    listed = uns.templates.list_templates(request={}).response_list_templates
    assert listed is not None
    assert {"hi_res_partition", "hi_res_and_enrichment", "fast_chunk_embed"} <= {
        t.id for t in listed
    }
    detail = uns.templates.get_template(request={"template_id": "fast_chunk_embed"})
    assert detail.template_detail is not None
    assert [n.type for n in detail.template_detail.nodes] == ["partition", "chunk", "embed"]
    with pytest.raises(errors.SDKError) as caught:
        uns.templates.get_template(request={"template_id": "nope"})
    assert caught.value.status_code == 404


def test_template_job_over_every_kind_of_document(uns: UnstructuredClient) -> None:
    docs = [
        samples.pdf_file(),
        samples.html_file(),
        samples.markdown_file(),
        samples.docx_file(),
        samples.email_file(),
    ]
    job = create(uns, {"template_id": "fast_chunk_embed"}, *docs)
    assert job.status in (shared.JobStatus.SCHEDULED, shared.JobStatus.IN_PROGRESS)
    assert job.job_type == shared.WorkflowJobType.TEMPLATE
    assert job.input_file_ids is not None and len(job.input_file_ids) == len(docs)
    done = wait_ended(uns, job.id)
    assert done.status == shared.JobStatus.COMPLETED, done

    details = uns.jobs.get_job_details(request={"job_id": job.id}).job_details
    assert details is not None
    assert details.processing_status == shared.JobProcessingStatus.SUCCESS
    assert [s.success for s in details.node_stats] == [len(docs)] * 3
    failed = uns.jobs.get_job_failed_files(request={"job_id": job.id}).job_failed_files
    assert failed is not None and failed.failed_files == []

    assert job.output_node_files is not None
    partition_node = next(f.node_id for f in job.output_node_files if f.node_type == "partition")
    pdf_id = job.input_file_ids[0]
    pages = {
        e["metadata"].get("page_number") for e in download(uns, job.id, pdf_id, partition_node)
    }
    assert {1, 2} <= pages
    for file_id in job.input_file_ids:
        chunks = download(uns, job.id, file_id)
        assert chunks, file_id
        for chunk in chunks:
            assert len(chunk["embeddings"]) == 576
            assert chunk["text"].strip()


def test_custom_dag_with_enrichment_chunking_and_embedding(uns: UnstructuredClient) -> None:
    nodes = [
        {"name": "Partitioner", "type": "partition", "subtype": "unstructured_api",
         "settings": {"strategy": "fast", "exclude_elements": ["Title"]}},
        {"name": "Entities", "type": "prompter", "subtype": "openai_ner",
         "settings": {"model": MODEL}},
        {"name": "Chunker", "type": "chunk", "subtype": "chunk_by_character",
         "settings": {"max_characters": 300, "overlap": 20}},
        {"name": "Embedder", "type": "embed", "subtype": "togetherai",
         "settings": {"model_name": EMBED_MODEL}},
    ]  # fmt: skip
    text = ("notes.txt", b"Ada Lovelace wrote the first program in London.")
    job = create(uns, {"job_nodes": nodes}, text)
    assert job.job_type == shared.WorkflowJobType.EPHEMERAL
    assert wait_ended(uns, job.id).status == shared.JobStatus.COMPLETED
    assert job.input_file_ids is not None and job.output_node_files is not None
    by_type = {f.node_type: f.node_id for f in job.output_node_files}
    enriched = download(uns, job.id, job.input_file_ids[0], by_type["prompter"])
    assert all("items" in e["metadata"]["entities"] for e in enriched)
    chunks = download(uns, job.id, job.input_file_ids[0])
    assert all(len(c["text"]) <= 300 and len(c["embeddings"]) == 576 for c in chunks)

    listed = uns.jobs.list_jobs(request={"workflow_id": job.workflow_id}).response_list_jobs
    assert [j.id for j in listed or []] == [job.id]
    for status in ("completed", "COMPLETED"):
        completed = uns.jobs.list_jobs(request={"status": status}).response_list_jobs
        assert job.id in {j.id for j in completed or []}


def test_cancel_stops_a_running_job(uns: UnstructuredClient) -> None:
    nodes = [
        {"name": "P", "type": "partition", "subtype": "unstructured_api"},
        {"name": "N", "type": "prompter", "subtype": "anthropic_ner"},
    ]
    many = "\n\n".join(f"Paragraph {i} mentions Paris and Ada." for i in range(40))
    job = create(uns, {"job_nodes": nodes}, ("long.txt", many.encode()))
    wait_until(
        lambda: get(uns, job.id).status == shared.JobStatus.IN_PROGRESS,
        what="the job to start",
    )
    cancelled = uns.jobs.cancel_job(request={"job_id": job.id}).any
    assert cancelled == {
        "id": job.id,
        "status": "cancelled",
        "message": "Job successfully cancelled.",
    }
    assert wait_ended(uns, job.id).status == shared.JobStatus.STOPPED
    details = uns.jobs.get_job_details(request={"job_id": job.id}).job_details
    assert details is not None and details.processing_status == shared.JobProcessingStatus.STOPPED


def test_bad_requests_get_422_from_the_sdk(uns: UnstructuredClient) -> None:
    with pytest.raises(errors.HTTPValidationError) as caught:
        create(uns, {"template_id": "fast_partition", "job_nodes": []}, samples.text_file())
    assert "not both" in str(caught.value.data.detail)
    with pytest.raises(errors.HTTPValidationError) as caught:
        create(uns, {"template_id": "fast_partition"}, ("broken.pdf", b"%PDF-1.4 garbage"))
    assert "broken.pdf" in str(caught.value.data.detail)
    with pytest.raises(errors.HTTPValidationError):
        create(uns, {"template_id": "hi_res_partition"}, samples.pdf_file())
    with pytest.raises(errors.SDKError) as not_found:
        get(uns, "no-such-job")
    assert not_found.value.status_code == 404
    assert json.loads(not_found.value.body) == {"detail": "Job not found"}


@pytest.mark.slow
def test_a_crash_mid_job_resumes_keeping_finished_outputs(tmp_path: Path) -> None:
    """kill -9 the server while a job runs; after a restart the job completes, and the
    outputs finished before the crash are the very files written before it."""
    server = start_server(tmp_path, env={"INFERQ_LEASE_SECONDS": "2"})
    try:
        key = new_key(server, "crash")
        nodes = [
            {"name": "P", "type": "partition", "subtype": "unstructured_api"},
            {"name": "N", "type": "prompter", "subtype": "openai_ner"},
        ]
        docs = [
            ("a.txt", b"Ada Lovelace lived in London."),
            ("b.txt", "\n\n".join(f"Line {i}: Grace Hopper." for i in range(6)).encode()),
        ]
        with sdk(server.url, key) as client:
            job = create(client, {"job_nodes": nodes}, *docs)

            # wait until the first file is through both nodes and the second is partitioned
            def second_partitioned() -> bool:
                d = client.jobs.get_job_details(request={"job_id": job.id}).job_details
                assert d is not None
                return d.node_stats[0].success == 2 and d.node_stats[1].success >= 1

            wait_until(second_partitioned, interval=0.05, what="the first outputs")
            mid = client.jobs.get_job_details(request={"job_id": job.id}).job_details
            assert mid is not None and mid.node_stats[1].success == 1, "ended before the kill"
        outputs = sorted((tmp_path / "data" / "blobs").rglob(f"workflows/{job.id}/*/*.json"))
        assert len(outputs) >= 3
        before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in outputs}
        server.kill()
        server.start()
        with sdk(server.url, key) as client:
            done = wait_ended(client, job.id)
            assert done.status == shared.JobStatus.COMPLETED, done
            details = client.jobs.get_job_details(request={"job_id": job.id}).job_details
            assert details is not None
            assert [(s.success, s.failure) for s in details.node_stats] == [(2, 0), (2, 0)]
        for path, (mtime, data) in before.items():
            assert path.stat().st_mtime_ns == mtime, f"{path} was written again"
            assert path.read_bytes() == data
        assert os.path.exists(outputs[0])
    finally:
        server.stop()
