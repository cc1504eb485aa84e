"""Unstructured's jobs API (``/api/v1``) in-process: memory store and blobs, fake
engines, the real document layer; the workflow runner runs in the app's lifespan.

tests/integration/test_unstructured.py runs the same through the official
``unstructured-client`` SDK against a real server and model.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from inferq.api.app import create_app
from inferq.blobs import MemoryBlobs
from inferq.config import Settings
from inferq.core.keys import KeyService
from inferq.engines.base import ModelSpec
from inferq.engines.fake import FAIL_TRIGGER
from inferq.engines.registry import ModelRegistry
from inferq.store.memory import MemoryStore
from tests import documents_samples as samples

JOBS = "/api/v1/jobs/"
ENDED = {"COMPLETED", "FAILED", "STOPPED"}
JOB_KEYS = {
    "id",
    "workflow_id",
    "workflow_name",
    "status",
    "created_at",
    "runtime",
    "input_file_ids",
    "output_node_files",
    "job_type",
}


def registry(token_delay: float = 0.0) -> ModelRegistry:
    return ModelRegistry(
        {
            "chat": ModelSpec(
                name="chat",
                engine="fake",
                context_length=4096,
                slots=2,
                options={"token_delay": token_delay},
            ),
            "emb": ModelSpec(
                name="emb",
                engine="fake",
                context_length=512,
                slots=2,
                options={"embedding": True, "dimensions": 4},
            ),
        }
    )


@contextlib.contextmanager
def make_client(
    tmp_path: Path, *, token_delay: float = 0.0, **settings: Any
) -> Iterator[TestClient]:
    # these tests launch jobs back to back: no launch spacing unless a test asks for it
    settings.setdefault("workflow_launch_spacing", 0)
    app = create_app(
        Settings(data_dir=tmp_path, **settings),
        store=MemoryStore(),
        registry=registry(token_delay),
        blobs=MemoryBlobs(),
    )
    with TestClient(app) as client:
        client.headers["unstructured-api-key"] = new_key(client, "ta")
        yield client


def new_key(client: TestClient, tenant: str) -> str:
    store = client.app.state.runtime.store  # type: ignore[attr-defined]
    _, secret = asyncio.run(KeyService(store).create(name=f"k-{time.time_ns()}", tenant=tenant))
    return secret


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with make_client(tmp_path) as test_client:
        yield test_client


def post_job(client: TestClient, request_data: Any, files: list[tuple[str, bytes]]) -> Any:
    text = request_data if isinstance(request_data, str) else json.dumps(request_data)
    parts: list[tuple[str, tuple[str | None, bytes]]] = [("request_data", (None, text.encode()))]
    parts += [("input_files", (name, data)) for name, data in files]
    return client.post(JOBS, files=parts)


def create(client: TestClient, request_data: Any, files: list[tuple[str, bytes]]) -> Any:
    response = post_job(client, request_data, files)
    assert response.status_code == 200, response.text
    return response.json()


def wait(client: TestClient, job_id: str, statuses: set[str], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"{JOBS}{job_id}").json()
        if job["status"] in statuses:
            return job
        assert job["status"] not in ENDED, f"ended {job['status']}, not {statuses}: {job}"
        assert time.monotonic() < deadline, f"still {job['status']} after {timeout}s"
        time.sleep(0.05)


def download(client: TestClient, job_id: str, file_id: str, node_id: str | None = None) -> Any:
    params = {"file_id": file_id} | ({"node_id": node_id} if node_id else {})
    response = client.get(f"{JOBS}{job_id}/download", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def detail_422(response: Any) -> str:
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, list) and detail, detail
    assert {"loc", "msg", "type"} <= set(detail[0])
    return str(detail[0]["msg"])


CUSTOM_NODES = [
    {"name": "Partitioner", "type": "partition", "subtype": "unstructured_api",
     "settings": {"strategy": "fast"}},
    {"name": "Entities", "type": "prompter", "subtype": "openai_ner"},
    {"name": "Tables", "type": "prompter", "subtype": "openai_table_description"},
    {"name": "Chunker", "type": "chunk", "subtype": "chunk_by_title",
     "settings": {"max_characters": 400, "include_orig_elements": False}},
    {"name": "Embedder", "type": "embed", "subtype": "togetherai",
     "settings": {"model_name": "emb"}},
]  # fmt: skip


# -- templates ----------------------------------------------------------------------


def test_templates_list_and_get(client: TestClient) -> None:
    listed = client.get("/api/v1/templates/").json()
    ids = {t["id"] for t in listed}
    assert {"hi_res_partition", "hi_res_and_enrichment", "fast_chunk_embed"} <= ids
    for item in listed:
        assert set(item) == {"id", "name", "description", "version", "last_updated"}
    detail = client.get("/api/v1/templates/fast_chunk_embed").json()
    assert [n["type"] for n in detail["nodes"]] == ["partition", "chunk", "embed"]
    assert set(detail["nodes"][0]) == {"id", "name", "type", "subtype", "settings"}
    missing = client.get("/api/v1/templates/nope")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "Template nope not found"}


def test_requests_need_a_key(client: TestClient) -> None:
    response = client.get(JOBS, headers={"unstructured-api-key": "wrong"})
    assert response.status_code == 401
    assert "detail" in response.json()


# -- a job from start to end -----------------------------------------------------------


def test_template_job_runs_every_file_and_serves_each_nodes_output(client: TestClient) -> None:
    files = [samples.text_file(), samples.markdown_file(), samples.html_file()]
    job = create(client, {"template_id": "fast_chunk_embed"}, files)
    assert set(job) == JOB_KEYS
    assert job["status"] in {"SCHEDULED", "IN_PROGRESS"}
    assert job["job_type"] == "template"
    assert job["created_at"].endswith("Z")
    assert len(job["input_file_ids"]) == 3
    assert len(job["output_node_files"]) == 9
    done = wait(client, job["id"], {"COMPLETED"})
    assert done["runtime"] is not None

    details = client.get(f"{JOBS}{job['id']}/details").json()
    assert details["processing_status"] == "SUCCESS"
    assert [
        (s["node_type"], s["success"], s["failure"], s["ready"]) for s in details["node_stats"]
    ] == [
        ("partition", 3, 0, 0),
        ("chunk", 3, 0, 0),
        ("embed", 3, 0, 0),
    ]
    assert client.get(f"{JOBS}{job['id']}/failed-files").json() == {"failed_files": []}

    nodes = {f["node_type"]: f["node_id"] for f in job["output_node_files"]}
    html_id = job["input_file_ids"][2]
    partitioned = download(client, job["id"], html_id, nodes["partition"])
    assert {"type", "element_id", "text", "metadata"} <= set(partitioned[0])
    assert partitioned[0]["metadata"]["filename"] == "report.html" or partitioned[0][
        "metadata"
    ].get("filename")
    assert any(e["type"] == "Title" and samples.TITLE in e["text"] for e in partitioned)
    last = download(client, job["id"], html_id)  # no node_id: the last node's output
    assert last == download(client, job["id"], html_id, nodes["embed"])
    assert all(len(e["embeddings"]) == 4 for e in last)
    assert all(e["type"] == "CompositeElement" or e["type"] == "Table" for e in last)


def test_custom_dag_enriches_chunks_and_embeds(client: TestClient) -> None:
    job = create(client, {"job_nodes": CUSTOM_NODES}, [samples.csv_file(), samples.email_file()])
    assert job["job_type"] == "ephemeral"
    wait(client, job["id"], {"COMPLETED"})
    node_ids = [f["node_id"] for f in job["output_node_files"][:5]]
    csv_id, email_id = job["input_file_ids"]
    tables = download(client, job["id"], csv_id, node_ids[2])
    table = next(e for e in tables if e["type"] == "Table")
    assert table["metadata"]["table_description"]
    assert "entities" in table["metadata"]
    email = download(client, job["id"], email_id, node_ids[1])
    assert all("items" in e["metadata"]["entities"] for e in email if e["text"].strip())
    chunks = download(client, job["id"], email_id)
    assert chunks and all(len(c["text"]) <= 400 for c in chunks)
    assert all(len(c["embeddings"]) == 4 for c in chunks)


def test_every_format_partitions(client: TestClient) -> None:
    files = [
        samples.pdf_file(),
        samples.docx_file(),
        samples.email_file(),
        samples.json_file(),
        samples.csv_file(),
    ]
    job = create(client, {"template_id": "fast_partition"}, files)
    wait(client, job["id"], {"COMPLETED"})
    for file_id in job["input_file_ids"]:
        elements = download(client, job["id"], file_id)
        assert elements and any(str(e["text"]).strip() for e in elements)


# -- failures while running ---------------------------------------------------------------


def embed_nodes() -> list[dict[str, Any]]:
    return [
        {"name": "P", "type": "partition", "subtype": "unstructured_api"},
        {"name": "C", "type": "chunk", "subtype": "chunk_by_character"},
        {"name": "E", "type": "embed", "subtype": "voyageai", "settings": {"model_name": "emb"}},
    ]


def test_a_file_that_fails_is_listed_and_under_90_percent_fails_the_job(
    client: TestClient,
) -> None:
    bad = ("bad.txt", FAIL_TRIGGER.encode())  # the fake embedding engine fails on it
    job = create(client, {"job_nodes": embed_nodes()}, [samples.text_file(), bad])
    done = wait(client, job["id"], {"FAILED"})
    assert done["status"] == "FAILED"
    failed = client.get(f"{JOBS}{job['id']}/failed-files").json()["failed_files"]
    assert [f["document"] for f in failed] == ["bad.txt"]
    assert "E (embed)" in failed[0]["error"]
    details = client.get(f"{JOBS}{job['id']}/details").json()
    assert details["processing_status"] == "FAILED"
    assert "1 of 2 files failed" in details["message"]
    stats = {s["node_name"]: s for s in details["node_stats"]}
    assert (stats["P"]["success"], stats["E"]["success"], stats["E"]["failure"]) == (2, 1, 1)
    # the good file's output is there; the bad one's last node has none
    good, bad_id = job["input_file_ids"]
    assert download(client, job["id"], good)
    assert client.get(f"{JOBS}{job['id']}/download", params={"file_id": bad_id}).status_code == 404


def test_one_failed_file_in_ten_completes_with_errors(client: TestClient) -> None:
    good = [(f"f{i}.txt", f"Document {i} says hello.".encode()) for i in range(9)]
    job = create(client, {"job_nodes": embed_nodes()}, [*good, ("bad.txt", FAIL_TRIGGER.encode())])
    done = wait(client, job["id"], {"COMPLETED"})
    assert done["status"] == "COMPLETED"
    details = client.get(f"{JOBS}{job['id']}/details").json()
    assert details["processing_status"] == "COMPLETED_WITH_ERRORS"
    assert len(client.get(f"{JOBS}{job['id']}/failed-files").json()["failed_files"]) == 1


# -- cancel, limits, listing ---------------------------------------------------------------


def slow_nodes() -> list[dict[str, Any]]:
    return [
        {"name": "P", "type": "partition", "subtype": "unstructured_api"},
        {"name": "N", "type": "prompter", "subtype": "anthropic_ner",
         "settings": {"model": "chat"}},
    ]  # fmt: skip


def test_cancel_stops_a_running_job_and_its_engine_work(tmp_path: Path) -> None:
    with make_client(tmp_path, token_delay=0.2) as client:
        job = create(client, {"job_nodes": slow_nodes()}, [samples.email_file()])
        deadline = time.monotonic() + 30
        # cancel while the enrichment runs, after the partition has finished
        while client.get(f"{JOBS}{job['id']}/details").json()["node_stats"][1]["in_progress"] == 0:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        response = client.post(f"{JOBS}{job['id']}/cancel")
        assert response.status_code == 200
        assert response.json() == {
            "id": job["id"],
            "status": "cancelled",
            "message": "Job successfully cancelled.",
        }
        wait(client, job["id"], {"STOPPED"})
        deadline = time.monotonic() + 10
        while client.get(f"{JOBS}{job['id']}/details").json()["node_stats"][1]["in_progress"]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        details = client.get(f"{JOBS}{job['id']}/details").json()
        assert details["processing_status"] == "STOPPED"
        assert details["node_stats"][0]["success"] == 1  # what finished is kept
        store = client.app.state.runtime.store  # type: ignore[attr-defined]
        # no enrichment request is left on the engines
        jobs = [j for j in store.jobs.values() if j.info.get("workflow_job") == job["id"]]
        assert jobs and all(j.state.terminal for j in jobs)
        again = client.post(f"{JOBS}{job['id']}/cancel")
        assert again.status_code == 409
        assert isinstance(again.json()["detail"], str)


def test_running_jobs_per_tenant_are_limited_the_rest_stay_scheduled(tmp_path: Path) -> None:
    with make_client(tmp_path, token_delay=0.05, workflow_max_running=1) as client:
        one = ("one.txt", b"Ada went to Paris.")
        first = create(client, {"job_nodes": slow_nodes()}, [one])
        second = create(client, {"job_nodes": slow_nodes()}, [one])
        wait(client, first["id"], {"IN_PROGRESS"})
        assert client.get(f"{JOBS}{second['id']}").json()["status"] == "SCHEDULED"
        assert [j["id"] for j in client.get(JOBS, params={"status": "scheduled"}).json()] == [
            second["id"]
        ]
        wait(client, first["id"], {"COMPLETED"})
        wait(client, second["id"], {"COMPLETED"})


def test_list_filters_by_status_either_case_and_by_workflow(client: TestClient) -> None:
    one = create(client, {"template_id": "fast_partition"}, [samples.text_file()])
    two = create(client, {"template_id": "fast_partition"}, [samples.text_file()])
    wait(client, one["id"], {"COMPLETED"})
    wait(client, two["id"], {"COMPLETED"})
    every = {j["id"] for j in client.get(JOBS).json()}
    assert every == {one["id"], two["id"]}
    for status in ("COMPLETED", "completed"):
        assert {j["id"] for j in client.get(JOBS, params={"status": status}).json()} == every
    assert client.get(JOBS, params={"status": "im progress"}).json() == []
    only = client.get(JOBS, params={"workflow_id": one["workflow_id"]}).json()
    assert [j["id"] for j in only] == [one["id"]]
    detail_422(client.get(JOBS, params={"status": "done"}))
    # another tenant sees none of them
    other = new_key(client, "tb")
    assert client.get(JOBS, headers={"unstructured-api-key": other}).json() == []
    response = client.get(f"{JOBS}{one['id']}", headers={"unstructured-api-key": other})
    assert response.status_code == 404
    assert response.json() == {"detail": "Job not found"}


def test_unknown_job_file_and_node(client: TestClient) -> None:
    for path in ("", "/details", "/failed-files"):
        response = client.get(f"{JOBS}nope{path}")
        assert response.status_code == 404
        assert response.json() == {"detail": "Job not found"}
    assert client.post(f"{JOBS}nope/cancel").json() == {"detail": "Job not found"}
    job = create(client, {"template_id": "fast_partition"}, [samples.text_file()])
    wait(client, job["id"], {"COMPLETED"})
    url = f"{JOBS}{job['id']}/download"
    assert client.get(url, params={"file_id": "x"}).status_code == 404
    file_id = job["input_file_ids"][0]
    assert client.get(url, params={"file_id": file_id, "node_id": "x"}).status_code == 404
    detail_422(client.get(url))  # file_id is required


# -- validation at submission: 4xx naming the problem, nothing stored --------------------


def partition(**settings: Any) -> dict[str, Any]:
    return {"name": "P", "type": "partition", "subtype": "unstructured_api", "settings": settings}


def chunk(**settings: Any) -> dict[str, Any]:
    return {"name": "C", "type": "chunk", "subtype": "chunk_by_title", "settings": settings}


def embed(model: str = "emb") -> dict[str, Any]:
    return {
        "name": "E",
        "type": "embed",
        "subtype": "togetherai",
        "settings": {"model_name": model},
    }


def prompter(subtype: str) -> dict[str, Any]:
    return {"name": "X", "type": "prompter", "subtype": subtype}


BAD_REQUESTS: list[tuple[str, Any, str]] = [
    ("neither", {}, "either template_id or job_nodes"),
    ("both", {"template_id": "fast_partition", "job_nodes": [partition()]}, "not both"),
    ("unknown template", {"template_id": "nope"}, "template 'nope' does not exist"),
    ("not json", "{not json", "not valid JSON"),
    ("not an object", "[1]", "must be a JSON object"),
    ("unknown field", {"template_id": "fast_partition", "x": 1}, "unknown field"),
    ("no nodes", {"job_nodes": []}, "at least one node"),
    ("unknown type", {"job_nodes": [partition(), {"name": "Z", "type": "zap", "subtype": "a"}]},
     "unknown node type 'zap'"),
    ("unknown subtype", {"job_nodes": [partition(), {**chunk(), "subtype": "by_vibes"}]},
     "unknown chunk subtype 'by_vibes'"),
    ("partition not first", {"job_nodes": [chunk(), partition()]},
     "first node must be a partition"),
    ("two partitions", {"job_nodes": [partition(), partition()]}, "exactly one partition"),
    ("embed without chunk", {"job_nodes": [partition(), embed()]}, "right after a chunk node"),
    ("enrichment after chunk", {"job_nodes": [partition(), chunk(), prompter("openai_ner")]},
     "cannot follow a chunk node"),
    ("two chunkers", {"job_nodes": [partition(), chunk(), chunk()]}, "cannot follow a chunk"),
    ("node not an object", {"job_nodes": [partition(), 3]}, "a node must be an object"),
    ("node without name", {"job_nodes": [{"type": "partition", "subtype": "unstructured_api"}]},
     "name: required"),
    ("bad partition setting", {"job_nodes": [partition(strategy="quantum")]}, "strategy"),
    ("unknown partition setting", {"job_nodes": [partition(colour="red")]}, "colour"),
    ("bad chunk setting", {"job_nodes": [partition(), chunk(max_characters=-5)]},
     "max_characters"),
    ("hi_res without its model", {"template_id": "hi_res_partition"}, "hi_res"),
    ("vlm without a vision model",
     {"job_nodes": [{**partition(), "subtype": "vlm"}]}, "vision model"),
    ("image description without a vision model",
     {"job_nodes": [partition(), prompter("openai_image_description")]}, "reads images"),
    ("unknown embedding model", {"job_nodes": [partition(), chunk(), embed("text-embedding-3")]},
     "model 'text-embedding-3' is not configured"),
    ("a chat model to embed", {"job_nodes": [partition(), chunk(), embed("chat")]},
     "not configured for this node"),
    ("chunks too long to embed",
     {"job_nodes": [partition(), chunk(max_characters=5000), embed()]}, "over what emb can embed"),
    ("unknown prompter setting",
     {"job_nodes": [partition(), {**prompter("openai_ner"), "settings": {"temp": 1}}]}, "temp"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("request_data", "problem"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
def test_bad_requests_get_422_naming_the_problem_and_store_nothing(
    client: TestClient, request_data: Any, problem: str
) -> None:
    message = detail_422(post_job(client, request_data, [samples.text_file()]))
    assert problem in message, message
    assert client.get(JOBS).json() == []
    blobs = client.app.state.runtime.blobs  # type: ignore[attr-defined]
    assert not blobs.blobs


BAD_FILES: list[tuple[str, list[tuple[str, bytes]], str]] = [
    ("no files", [], "at least one file"),
    ("eleven files", [samples.text_file()] * 11, "at most 10"),
    ("unsupported type", [("picture.bmp", b"BM....")], "picture.bmp"),
    ("corrupt pdf", [("broken.pdf", samples.pdf_file()[1][:200])], "broken.pdf"),
    ("garbage docx", [("broken.docx", b"this is not a zip file")], "broken.docx"),
]


@pytest.mark.parametrize(
    ("files", "problem"), [case[1:] for case in BAD_FILES], ids=[case[0] for case in BAD_FILES]
)
def test_bad_files_get_422_naming_the_file_and_store_nothing(
    client: TestClient, files: list[tuple[str, bytes]], problem: str
) -> None:
    message = detail_422(post_job(client, {"template_id": "fast_partition"}, files))
    assert problem in message, message
    assert client.get(JOBS).json() == []
    assert not client.app.state.runtime.blobs.blobs  # type: ignore[attr-defined]


def test_a_file_over_the_limit_is_refused(tmp_path: Path) -> None:
    with make_client(tmp_path, workflow_max_file_bytes=1000) as client:
        big = ("big.txt", b"word " * 300)
        message = detail_422(post_job(client, {"template_id": "fast_partition"}, [big]))
        assert "'big.txt' is larger than the limit of 1000 bytes" in message
        assert client.get(JOBS).json() == []


def test_missing_request_data_and_non_multipart(client: TestClient) -> None:
    response = client.post(JOBS, files=[("input_files", samples.text_file())])
    assert "request_data" in detail_422(response)
    response = client.post(JOBS, json={"template_id": "fast_partition"})
    assert response.status_code in (400, 422), response.text
    assert "multipart/form-data" in json.dumps(response.json())


def test_chunk_by_similarity_embeds_the_elements_first(client: TestClient) -> None:
    nodes = [
        {"name": "P", "type": "partition", "subtype": "unstructured_api"},
        {"name": "S", "type": "chunk", "subtype": "chunk_by_similarity",
         "settings": {"similarity_threshold": 0.99, "model_name": "emb",
                      "include_orig_elements": True}},
    ]  # fmt: skip
    job = create(client, {"job_nodes": nodes}, [samples.markdown_file()])
    wait(client, job["id"], {"COMPLETED"})
    file_id = job["input_file_ids"][0]
    elements = download(client, job["id"], file_id, job["output_node_files"][0]["node_id"])
    chunks = download(client, job["id"], file_id)
    # the fake engine's vectors of different texts are far apart: nothing is grouped
    assert len(chunks) == len([e for e in elements if str(e["text"]).strip()])
    assert all(c["metadata"].get("orig_elements") for c in chunks)
    store = client.app.state.runtime.store  # type: ignore[attr-defined]
    embeds = [j for j in store.jobs.values() if j.model == "emb" and j.state.value == "succeeded"]
    assert embeds, "the similarity chunker asked the embedding model"
