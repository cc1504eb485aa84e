"""Scale-out with no shared volume: files live in PostgreSQL, not in a data directory.

Two ``inferq serve --no-worker`` processes and one ``inferq worker``, each with its own
data directory, on one PostgreSQL schema: a file uploaded through the first API is
batched through the second, run by the worker, and its output downloaded through the
first; a Fireworks dataset uploaded through one is downloaded through a URL the other
signed; a document workflow job created through one is read through the other. No
process writes a blob to its data directory.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from unstructured_client import UnstructuredClient
from unstructured_client.models import operations, shared

from tests.acceptance.cluster import MODEL, Api, Cluster, Proc, Worker, connect, fresh_schema

pytestmark = pytest.mark.integration

ROWS = 200


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    async with fresh_schema() as name:
        yield name


def _line(i: int) -> dict[str, Any]:
    return {
        "custom_id": f"row-{i}",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": MODEL,
            "messages": [{"role": "user", "content": f"row {i}"}],
            "max_tokens": 16,
        },
    }


async def test_a_file_uploaded_to_one_api_is_batched_through_another(
    tmp_path: Path, schema: str
) -> None:
    cluster = Cluster(tmp_path, schema, lease_seconds=5)
    try:
        key = cluster.create_key("blobs")
        procs: list[Proc] = []
        for name in ("api1", "api2"):
            data_dir = tmp_path / f"data-{name}"
            procs.append(Api(name, cluster.env, tmp_path / f"{name}.log", data_dir))
        procs.append(Worker("worker1", cluster.env, tmp_path / "worker1.log", tmp_path / "data-w"))
        for proc in procs:
            proc.spawn()
            cluster.procs.append(proc)
        await cluster.wait_ready(procs)
        api1, api2 = procs[0], procs[1]
        assert isinstance(api1, Api) and isinstance(api2, Api)

        def client(api: Api) -> httpx.AsyncClient:
            return httpx.AsyncClient(
                base_url=api.url, headers={"Authorization": f"Bearer {key}"}, timeout=30
            )

        body = "".join(json.dumps(_line(i)) + "\n" for i in range(ROWS)).encode()
        async with client(api1) as one, client(api2) as two:
            uploaded = await one.post(
                "/v1/files",
                files={"file": ("input.jsonl", body, "application/jsonl")},
                data={"purpose": "batch"},
            )
            assert uploaded.status_code == 200, uploaded.text
            created = await two.post(
                "/v1/batches",
                json={
                    "input_file_id": uploaded.json()["id"],
                    "endpoint": "/v1/chat/completions",
                    "completion_window": "24h",
                },
            )
            assert created.status_code == 200, created.text
            batch_id = created.json()["id"]

            async def completed() -> dict[str, Any] | None:
                got: dict[str, Any] = (await two.get(f"/v1/batches/{batch_id}")).json()
                if got["status"] in ("failed", "expired", "cancelled"):
                    cluster.fail(f"the batch ended {got['status']}: {got}")
                return got if got["status"] == "completed" else None

            final = await cluster.wait_for("the batch to complete", completed, timeout=90)
            assert final["request_counts"] == {"total": ROWS, "completed": ROWS, "failed": 0}
            # the input, as stored, read back through the other process
            echoed = await two.get(f"/v1/files/{uploaded.json()['id']}/content")
            assert echoed.status_code == 200 and echoed.content == body
            output = await one.get(f"/v1/files/{final['output_file_id']}/content")
            assert output.status_code == 200, output.text

        lines = [json.loads(line) for line in output.text.splitlines()]
        assert sorted(line["custom_id"] for line in lines) == sorted(
            f"row-{i}" for i in range(ROWS)
        )
        for line in lines:
            assert line["response"]["status_code"] == 200
        # the bytes are in PostgreSQL, none in any data directory
        for data_dir in tmp_path.glob("data*"):
            assert not [p for p in (data_dir / "blobs").rglob("*") if p.is_file()], data_dir
        conn = await connect(schema)
        try:
            assert await conn.fetchval("SELECT count(*) FROM blobs") >= 2  # input and output
        finally:
            await conn.close()
    finally:
        cluster.close()


async def test_a_dataset_uploaded_to_one_api_is_downloaded_through_a_signed_url_of_another(
    tmp_path: Path, schema: str
) -> None:
    """Fireworks' signed download URLs across processes: each API process has its own data
    directory and the fleet's one INFERQ_SIGNING_KEY, so a URL signed by one is served
    by any other, from the bytes in PostgreSQL."""
    cluster = Cluster(tmp_path, schema, lease_seconds=5)
    cluster.env["INFERQ_SIGNING_KEY"] = "the-fleet-signing-key-" + schema
    try:
        key = cluster.create_key("datasets")
        apis = [
            Api(name, cluster.env, tmp_path / f"{name}.log", tmp_path / f"data-{name}")
            for name in ("api1", "api2")
        ]
        for api in apis:
            api.spawn()
            cluster.procs.append(api)
        await cluster.wait_ready(list(apis))
        one, two = apis
        data = b"".join(json.dumps(_line(i)).encode() + b"\n" for i in range(2000))
        base = "/v1/accounts/acme/datasets"
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=one.url, headers=headers, timeout=30) as first:
            made = await first.post(
                base,
                json={
                    "datasetId": "shared",
                    "dataset": {"exampleCount": "2000", "userUploaded": {}},
                },
            )
            assert made.status_code == 200, made.text
            uploaded = await first.post(
                f"{base}/shared:upload", files={"file": ("rows.jsonl", data)}
            )
            assert uploaded.status_code == 200, uploaded.text
        async with httpx.AsyncClient(base_url=two.url, headers=headers, timeout=30) as second:
            endpoint = await second.get(f"{base}/shared:getDownloadEndpoint")
            assert endpoint.status_code == 200, endpoint.text
        url = endpoint.json()["filenameToSignedUrls"]["dataset/shared/rows.jsonl"]
        assert url.startswith(two.url), url
        async with httpx.AsyncClient(timeout=30) as plain:  # the signature is the credential
            assert (await plain.get(url)).content == data
            # signed by the second process, served by the first
            elsewhere = url.replace(two.url, one.url)
            whole = await plain.get(elsewhere)
            assert whole.status_code == 200 and whole.content == data
            part = await plain.get(elsewhere, headers={"Range": "bytes=100-"})
            assert part.status_code == 206 and part.content == data[100:]
        for data_dir in tmp_path.glob("data*"):
            assert not [p for p in (data_dir / "blobs").rglob("*") if p.is_file()], data_dir
    finally:
        cluster.close()


async def test_a_workflow_job_created_through_one_api_is_read_through_another(
    tmp_path: Path, schema: str
) -> None:
    """Unstructured's jobs API across processes (the official SDK on each side): a job
    created through the first API process, with its input file, runs in the worker, and
    its outputs are downloaded through the second; the inputs and outputs are blobs in
    PostgreSQL, none in a data directory."""
    cluster = Cluster(tmp_path, schema, lease_seconds=5)
    try:
        key = cluster.create_key("workflows")
        apis = [
            Api(name, cluster.env, tmp_path / f"{name}.log", tmp_path / f"data-{name}")
            for name in ("api1", "api2")
        ]
        worker = Worker("worker1", cluster.env, tmp_path / "worker1.log", tmp_path / "data-w")
        for proc in (*apis, worker):
            proc.spawn()
            cluster.procs.append(proc)
        await cluster.wait_ready([*apis, worker])
        nodes = [
            {"name": "Partitioner", "type": "partition", "subtype": "unstructured_api",
             "settings": {"strategy": "fast"}},
            {"name": "Chunker", "type": "chunk", "subtype": "chunk_by_character",
             "settings": {"max_characters": 200}},
        ]  # fmt: skip
        text = " ".join(f"Sentence number {i} of a plain text document." for i in range(60))
        with _unstructured(apis[0].url, key) as first:
            created = first.jobs.create_job(
                request=operations.CreateJobRequest(
                    body_create_job=shared.BodyCreateJob(
                        request_data=json.dumps({"job_nodes": nodes}),
                        input_files=[shared.InputFiles(content=text.encode(), file_name="a.txt")],
                    )
                )
            ).job_information
        assert created is not None and created.input_file_ids is not None
        with _unstructured(apis[1].url, key) as second:

            async def ended() -> shared.JobInformation | None:
                info = second.jobs.get_job(request={"job_id": created.id}).job_information
                assert info is not None
                return info if info.status in ("COMPLETED", "FAILED", "STOPPED") else None

            done = await cluster.wait_for("the workflow job to end", ended, timeout=90)
            assert done.status == "COMPLETED", done
            chunks = second.jobs.download_job_output(
                request={"job_id": created.id, "file_id": created.input_file_ids[0]}
            ).any
        assert chunks and all(len(c["text"]) <= 200 for c in chunks)
        assert " ".join(c["text"] for c in chunks).split() == text.split()
        for data_dir in tmp_path.glob("data*"):
            assert not [p for p in (data_dir / "blobs").rglob("*") if p.is_file()], data_dir
    finally:
        cluster.close()


@contextlib.contextmanager
def _unstructured(url: str, key: str) -> Iterator[UnstructuredClient]:
    """The SDK on an HTTP client this test closes (the SDK's own close leaves it open)."""
    transport = httpx.HTTPTransport()
    with httpx.Client(transport=transport) as http:
        try:
            yield UnstructuredClient(api_key_auth=key, server_url=url, client=http)
        finally:
            transport.close()
