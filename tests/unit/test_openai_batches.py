"""OpenAI's ``/v1/files`` and ``/v1/batches`` in-process (memory store and blobs, fake
engines; the worker and the batch runner run in the app's lifespan).

tests/integration/test_openai_batches.py runs the same through the official SDK
against a real server and model.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
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

CHAT_URL = "/v1/chat/completions"
EMBED_URL = "/v1/embeddings"
STATUSES = {
    "validating",
    "failed",
    "in_progress",
    "finalizing",
    "completed",
    "expired",
    "cancelling",
    "cancelled",
}
ENDED = {"completed", "failed", "expired", "cancelled"}
BATCH_KEYS = {
    "id",
    "object",
    "endpoint",
    "errors",
    "input_file_id",
    "completion_window",
    "status",
    "output_file_id",
    "error_file_id",
    "created_at",
    "in_progress_at",
    "expires_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
    "request_counts",
    "metadata",
    "model",
    "usage",
}


def registry() -> ModelRegistry:
    return ModelRegistry(
        {
            "fake": ModelSpec(name="fake", engine="fake", context_length=128, slots=2),
            # one word every 50 ms: a row of 20 words runs for a second
            "slow": ModelSpec(
                name="slow",
                engine="fake",
                context_length=128,
                slots=2,
                options={"token_delay": 0.05},
            ),
            "emb": ModelSpec(
                name="emb",
                engine="fake",
                context_length=64,
                slots=2,
                options={"embedding": True, "dimensions": 4},
            ),
        }
    )


@contextlib.contextmanager
def make_client(tmp_path: Path, **settings: Any) -> Iterator[TestClient]:
    store = MemoryStore()
    app = create_app(
        Settings(data_dir=tmp_path, **settings),
        store=store,
        registry=registry(),
        blobs=MemoryBlobs(),
    )
    with TestClient(app) as client:
        client.headers["authorization"] = f"Bearer {new_key(client, 'ta')}"
        yield client


def new_key(client: TestClient, tenant: str) -> str:
    store = client.app.state.runtime.store  # type: ignore[attr-defined]
    _, secret = asyncio.run(KeyService(store).create(name=f"k-{time.time_ns()}", tenant=tenant))
    return secret


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with make_client(tmp_path) as test_client:
        yield test_client


def chat_line(custom_id: str, content: str = "hello there", **body: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": CHAT_URL,
        "body": {
            "model": "fake",
            "messages": [{"role": "user", "content": content}],
            "max_tokens": 5,
            **body,
        },
    }


def jsonl(lines: list[Any]) -> bytes:
    return b"".join(
        (line if isinstance(line, str) else json.dumps(line)).encode() + b"\n" for line in lines
    )


def upload(
    client: TestClient, data: bytes, *, purpose: str = "batch", name: str = "in.jsonl"
) -> dict[str, Any]:
    response = client.post("/v1/files", files={"file": (name, data)}, data={"purpose": purpose})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def create(client: TestClient, file_id: str, endpoint: str = CHAT_URL, **extra: Any) -> Any:
    return client.post(
        "/v1/batches",
        json={"input_file_id": file_id, "endpoint": endpoint, "completion_window": "24h", **extra},
    )


def start(client: TestClient, lines: list[Any], endpoint: str = CHAT_URL) -> dict[str, Any]:
    response = create(client, upload(client, jsonl(lines))["id"], endpoint)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def wait(client: TestClient, batch_id: str, statuses: set[str], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        batch = client.get(f"/v1/batches/{batch_id}").json()
        assert batch["status"] in STATUSES, batch
        if batch["status"] in statuses:
            return batch
        assert batch["status"] not in ENDED, f"ended {batch['status']}, not {statuses}: {batch}"
        assert time.monotonic() < deadline, f"still {batch['status']} after {timeout}s"
        time.sleep(0.05)


def content(client: TestClient, file_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/v1/files/{file_id}/content")
    assert response.status_code == 200, response.text
    return [json.loads(line) for line in response.text.splitlines()]


def assert_error(response: Any, status: int, param: str | None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param, error
    return error


# -- files ------------------------------------------------------------------------


def test_upload_get_list_content_and_delete(client: TestClient) -> None:
    data = jsonl([chat_line("a")])
    created = upload(client, data)
    assert created == {
        "id": created["id"],
        "object": "file",
        "bytes": len(data),
        "created_at": created["created_at"],
        "filename": "in.jsonl",
        "purpose": "batch",
        "status": "processed",
        "expires_at": None,
        "status_details": None,
    }
    assert created["id"].startswith("file-")
    assert abs(created["created_at"] - time.time()) < 60
    assert client.get(f"/v1/files/{created['id']}").json() == created
    listed = client.get("/v1/files").json()
    assert listed == {
        "object": "list",
        "data": [created],
        "first_id": created["id"],
        "last_id": created["id"],
        "has_more": False,
    }
    response = client.get(f"/v1/files/{created['id']}/content")
    assert response.content == data
    assert response.headers["content-type"].startswith("application/jsonl")
    deleted = client.delete(f"/v1/files/{created['id']}")
    assert deleted.json() == {"id": created["id"], "object": "file", "deleted": True}
    for path in (f"/v1/files/{created['id']}", f"/v1/files/{created['id']}/content"):
        assert_error(client.get(path), 404, "file_id")
    assert_error(client.delete(f"/v1/files/{created['id']}"), 404, "file_id")
    assert client.get("/v1/files").json()["data"] == []


def test_a_large_upload_arrives_intact(client: TestClient) -> None:
    data = bytes(range(256)) * 4096 + b"\r\n--tail"  # 1 MiB of every byte value
    created = upload(client, data, purpose="user_data", name="dir/blob.bin")
    assert created["bytes"] == len(data) and created["filename"] == "blob.bin"
    response = client.get(f"/v1/files/{created['id']}/content")
    assert response.content == data
    assert response.headers["content-type"] == "application/octet-stream"


def test_the_purpose_may_come_after_the_file(client: TestClient) -> None:
    body = (
        b"--XyZ\r\n"
        b'Content-Disposition: form-data; name="file"; filename="late.jsonl"\r\n'
        b"Content-Type: application/jsonl\r\n\r\n"
        b'{"x": 1}\n\r\n'
        b'--XyZ\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        b"--XyZ--\r\n"
    )
    response = client.post(
        "/v1/files", content=body, headers={"content-type": "multipart/form-data; boundary=XyZ"}
    )
    assert response.status_code == 200, response.text
    created = response.json()
    assert created["purpose"] == "batch" and created["filename"] == "late.jsonl"
    assert client.get(f"/v1/files/{created['id']}/content").content == b'{"x": 1}\n'


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"files": {"file": ("a.jsonl", b"{}")}}, "purpose"),
        ({"files": {"file": ("a.jsonl", b"{}")}, "data": {"purpose": "batch_output"}}, "purpose"),
        ({"files": {"file": ("a.jsonl", b"{}")}, "data": {"purpose": "nope"}}, "purpose"),
        ({"files": {"other": ("a.jsonl", b"{}")}, "data": {"purpose": "batch"}}, "file"),
        ({"json": {"purpose": "batch"}}, "file"),
    ],
)
def test_bad_uploads_name_the_field_and_store_nothing(
    client: TestClient, kwargs: dict[str, Any], param: str
) -> None:
    error = assert_error(client.post("/v1/files", **kwargs), 400, param)
    assert error["type"] == "invalid_request_error"
    assert client.get("/v1/files").json()["data"] == []


def test_listing_pages_orders_and_filters(client: TestClient) -> None:
    ids = [upload(client, b"{}\n", purpose=p)["id"] for p in ("batch", "user_data", "batch")]
    newest_first = ids[::-1]
    page = client.get("/v1/files?limit=2").json()
    assert [f["id"] for f in page["data"]] == newest_first[:2] and page["has_more"]
    assert (page["first_id"], page["last_id"]) == (newest_first[0], newest_first[1])
    rest = client.get(f"/v1/files?limit=2&after={page['last_id']}").json()
    assert [f["id"] for f in rest["data"]] == newest_first[2:] and not rest["has_more"]
    oldest = client.get("/v1/files?order=asc&limit=2").json()
    assert [f["id"] for f in oldest["data"]] == ids[:2] and oldest["has_more"]
    after = client.get(f"/v1/files?order=asc&after={ids[0]}").json()
    assert [f["id"] for f in after["data"]] == ids[1:] and not after["has_more"]
    batch_files = client.get("/v1/files?purpose=batch").json()["data"]
    assert [f["id"] for f in batch_files] == [ids[2], ids[0]]
    assert_error(client.get("/v1/files?limit=0"), 400, "limit")
    assert_error(client.get("/v1/files?limit=10001"), 400, "limit")
    assert_error(client.get("/v1/files?order=sideways"), 400, "order")


def test_an_upload_over_max_file_bytes_is_413(tmp_path: Path) -> None:
    with make_client(tmp_path, max_file_bytes=1000) as client:
        response = client.post(
            "/v1/files", files={"file": ("a.jsonl", b"x" * 1001)}, data={"purpose": "batch"}
        )
        error = assert_error(response, 413, None)
        assert error["code"] == "payload_too_large" and "1000 bytes" in error["message"]
        # a body far over the limit is refused before it is read
        huge = client.post(
            "/v1/files", files={"file": ("a.jsonl", b"x" * 200_000)}, data={"purpose": "batch"}
        )
        assert_error(huge, 413, None)
        assert client.get("/v1/files").json()["data"] == []
        assert upload(client, b"x" * 1000)["bytes"] == 1000


# -- batches ------------------------------------------------------------------------


def test_a_chat_batch_completes_with_output_and_error_files(client: TestClient) -> None:
    lines = [chat_line("first", "one two"), chat_line("boom", FAIL_TRIGGER), chat_line("last")]
    input_file = upload(client, jsonl(lines))
    response = create(client, input_file["id"], metadata={"job": "nightly"})
    assert response.status_code == 200, response.text
    created = response.json()
    assert set(created) == BATCH_KEYS
    assert created["id"].startswith("batch_") and created["object"] == "batch"
    assert created["status"] == "validating" and created["errors"] is None
    assert created["input_file_id"] == input_file["id"]
    assert created["completion_window"] == "24h" and created["endpoint"] == CHAT_URL
    assert created["expires_at"] - created["created_at"] == 24 * 3600
    assert created["metadata"] == {"job": "nightly"} and created["model"] is None

    done = wait(client, created["id"], {"completed"})
    assert set(done) == BATCH_KEYS
    assert done["request_counts"] == {"total": 3, "completed": 2, "failed": 1}
    stamps = ["created_at", "in_progress_at", "finalizing_at", "completed_at"]
    assert all(isinstance(done[k], int) for k in stamps)
    assert [done[k] for k in stamps] == sorted(done[k] for k in stamps)
    for key in ("failed_at", "expired_at", "cancelling_at", "cancelled_at"):
        assert done[key] is None
    usage = done["usage"]
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert usage["input_tokens_details"] == {"cached_tokens": 0}
    assert usage["output_tokens_details"] == {"reasoning_tokens": 0}

    output = content(client, done["output_file_id"])
    assert [line["custom_id"] for line in output] == ["first", "last"]
    first = output[0]
    assert set(first) == {"id", "custom_id", "response", "error"} and first["error"] is None
    assert first["id"].startswith("batch_req_")
    assert first["response"]["status_code"] == 200
    completion = first["response"]["body"]
    assert completion["object"] == "chat.completion" and completion["model"] == "fake"
    assert completion["choices"][0]["message"] == {"role": "assistant", "content": "echo: one two"}
    errors = content(client, done["error_file_id"])
    assert [line["custom_id"] for line in errors] == ["boom"]
    # the engine failed it (after retries): a server error response, as OpenAI writes one
    assert errors[0]["error"] is None
    assert errors[0]["response"]["status_code"] == 500
    assert errors[0]["response"]["body"]["error"]["type"] == "server_error"

    for file_id, suffix in ((done["output_file_id"], "output"), (done["error_file_id"], "error")):
        record = client.get(f"/v1/files/{file_id}").json()
        assert record["purpose"] == "batch_output"
        assert record["filename"] == f"{done['id']}_{suffix}.jsonl"
    outputs = client.get("/v1/files?purpose=batch_output").json()["data"]
    assert {f["id"] for f in outputs} == {done["output_file_id"], done["error_file_id"]}


def test_a_batch_without_failures_has_no_error_file(client: TestClient) -> None:
    done = wait(client, start(client, [chat_line("a"), chat_line("b")])["id"], {"completed"})
    assert done["request_counts"] == {"total": 2, "completed": 2, "failed": 0}
    assert done["output_file_id"] and done["error_file_id"] is None


def test_an_embeddings_batch(client: TestClient) -> None:
    lines = [
        {
            "custom_id": "e1",
            "method": "POST",
            "url": EMBED_URL,
            "body": {"model": "emb", "input": "a"},
        },
        {
            "custom_id": "e2",
            "method": "POST",
            "url": EMBED_URL,
            "body": {"model": "emb", "input": ["b c", "d"]},
        },
    ]
    done = wait(client, start(client, lines, EMBED_URL)["id"], {"completed"})
    assert done["endpoint"] == EMBED_URL
    assert done["request_counts"] == {"total": 2, "completed": 2, "failed": 0}
    output = {
        line["custom_id"]: line["response"]["body"]
        for line in content(client, done["output_file_id"])
    }
    assert output["e1"]["object"] == "list" and len(output["e1"]["data"][0]["embedding"]) == 4
    assert [d["index"] for d in output["e2"]["data"]] == [0, 1]
    assert output["e2"]["usage"] == {"prompt_tokens": 3, "total_tokens": 3}


def test_validation_failures_name_each_line(client: TestClient) -> None:
    lines: list[Any] = [
        "{not json",
        "[1, 2]",
        {**chat_line("x"), "custom_id": None},
        {**chat_line("a"), "url": EMBED_URL},
        {**chat_line("b"), "method": "GET"},
        {**chat_line("c"), "body": {"messages": [{"role": "user", "content": "hi"}]}},
        chat_line("d", model="no-such-model"),
        chat_line("e", max_tokens=0),
        chat_line("ok"),
    ]
    failed = wait(client, start(client, lines)["id"], {"failed"})
    assert failed["errors"]["object"] == "list"
    got = [(e["line"], e["param"]) for e in failed["errors"]["data"]]
    assert got == [
        (1, None),
        (2, None),
        (3, "custom_id"),
        (4, "url"),
        (5, "method"),
        (6, "body.model"),
        (7, "body.model"),
        (8, "body.max_tokens"),
    ]
    data = failed["errors"]["data"]
    assert "JSON" in data[0]["message"] and "object" in data[1]["message"]
    assert data[6]["code"] == "model_not_found" and "no-such-model" in data[6]["message"]
    assert failed["request_counts"] == {"total": 0, "completed": 0, "failed": 0}
    assert isinstance(failed["failed_at"], int) and failed["in_progress_at"] is None
    assert failed["output_file_id"] is None and failed["error_file_id"] is None


def test_duplicate_custom_ids_fail_the_batch(client: TestClient) -> None:
    lines = [chat_line("a"), chat_line("b"), chat_line("a")]
    failed = wait(client, start(client, lines)["id"], {"failed"})
    [error] = failed["errors"]["data"]
    assert error["code"] == "duplicate_custom_id" and error["line"] == 3
    assert error["param"] == "custom_id" and "'a'" in error["message"]


@pytest.mark.parametrize("data", [b"", b"\n\n  \n"])
def test_an_empty_file_fails_the_batch(client: TestClient, data: bytes) -> None:
    response = create(client, upload(client, data)["id"])
    failed = wait(client, response.json()["id"], {"failed"})
    [error] = failed["errors"]["data"]
    assert error["code"] == "empty_file" and error["line"] is None


@pytest.mark.parametrize(
    ("change", "param", "status"),
    [
        ({"endpoint": "/v1/moderations"}, "endpoint", 400),
        ({"completion_window": "48h"}, "completion_window", 400),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata", 400),
        ({"metadata": {"k": "v" * 513}}, "metadata.k", 400),
        ({"metadata": {"k": 1}}, "metadata.k", 400),
        ({"input_file_id": "file-nope"}, "input_file_id", 404),
        ({"surprise": True}, "surprise", 400),
    ],
)
def test_bad_creates_name_the_field(
    client: TestClient, change: dict[str, Any], param: str, status: int
) -> None:
    file_id = upload(client, jsonl([chat_line("a")]))["id"]
    body = {"input_file_id": file_id, "endpoint": CHAT_URL, "completion_window": "24h", **change}
    response = client.post("/v1/batches", json=body)
    assert_error(response, status, param)
    assert response.headers["x-should-retry"] == "false"
    assert client.get("/v1/batches").json()["data"] == []


def test_missing_fields_and_a_file_of_another_purpose(client: TestClient) -> None:
    assert_error(client.post("/v1/batches", json={"endpoint": CHAT_URL}), 400, "input_file_id")
    other = upload(client, jsonl([chat_line("a")]), purpose="user_data")
    error = assert_error(create(client, other["id"]), 400, "input_file_id")
    assert "purpose" in error["message"]


def test_cancel_keeps_what_finished(client: TestClient) -> None:
    words = " ".join(["w"] * 20)
    lines = [chat_line(f"r{i}", words, model="slow", max_tokens=30) for i in range(6)]
    created = start(client, lines)
    wait(client, created["id"], {"in_progress"})
    cancelling = client.post(f"/v1/batches/{created['id']}/cancel")
    assert cancelling.status_code == 200, cancelling.text
    assert cancelling.json()["status"] in ("cancelling", "cancelled")
    assert isinstance(cancelling.json()["cancelling_at"], int)
    done = wait(client, created["id"], {"cancelled"})
    counts = done["request_counts"]
    assert counts["total"] == 6 and counts["completed"] + counts["failed"] == 6
    assert counts["failed"] > 0
    assert isinstance(done["cancelled_at"], int) and done["completed_at"] is None
    errors = content(client, done["error_file_id"])
    assert len(errors) == counts["failed"]
    assert {line["error"]["code"] for line in errors} <= {"batch_cancelled", "cancelled"}
    again = client.post(f"/v1/batches/{created['id']}/cancel")
    assert again.status_code == 200 and again.json()["status"] == "cancelled"


def test_a_finished_batch_cannot_be_cancelled(client: TestClient) -> None:
    done = wait(client, start(client, [chat_line("a")])["id"], {"completed"})
    error = assert_error(client.post(f"/v1/batches/{done['id']}/cancel"), 409, "batch_id")
    assert "completed" in error["message"]


def test_an_idempotency_key_returns_the_same_batch(client: TestClient) -> None:
    file_id = upload(client, jsonl([chat_line("a")]))["id"]
    other_file = upload(client, jsonl([chat_line("b")]))["id"]
    key = {"Idempotency-Key": "nightly-2026-01-01"}
    first = client.post(
        "/v1/batches",
        json={"input_file_id": file_id, "endpoint": CHAT_URL, "completion_window": "24h"},
        headers=key,
    )
    again = client.post(
        "/v1/batches",
        json={"input_file_id": file_id, "endpoint": CHAT_URL, "completion_window": "24h"},
        headers=key,
    )
    assert first.status_code == again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert len(client.get("/v1/batches").json()["data"]) == 1
    misuse = client.post(
        "/v1/batches",
        json={"input_file_id": other_file, "endpoint": CHAT_URL, "completion_window": "24h"},
        headers=key,
    )
    assert_error(misuse, 409, "Idempotency-Key")
    # without the key, or with another, a new batch
    assert create(client, file_id).json()["id"] != first.json()["id"]


def test_list_and_get_batches(client: TestClient) -> None:
    file_id = upload(client, jsonl([chat_line("a")]))["id"]
    ids = [create(client, file_id).json()["id"] for _ in range(3)]
    page = client.get("/v1/batches?limit=2").json()
    assert page["object"] == "list" and page["has_more"]
    assert [b["id"] for b in page["data"]] == ids[::-1][:2]
    assert (page["first_id"], page["last_id"]) == (ids[2], ids[1])
    rest = client.get(f"/v1/batches?after={page['last_id']}").json()
    assert [b["id"] for b in rest["data"]] == [ids[0]] and not rest["has_more"]
    assert all(set(b) == BATCH_KEYS for b in page["data"] + rest["data"])
    assert client.get(f"/v1/batches/{ids[0]}").json()["id"] == ids[0]
    assert_error(client.get("/v1/batches/batch_nope"), 404, "batch_id")
    assert_error(client.get("/v1/batches?limit=101"), 400, "limit")
    assert_error(client.get("/v1/batches?limit=0"), 400, "limit")
    for batch_id in ids:
        wait(client, batch_id, {"completed"})


def test_other_tenants_see_nothing(client: TestClient) -> None:
    file_id = upload(client, jsonl([chat_line("a")]))["id"]
    batch = create(client, file_id).json()
    done = wait(client, batch["id"], {"completed"})
    other = {"authorization": f"Bearer {new_key(client, 'tb')}"}
    for path in (
        f"/v1/files/{file_id}",
        f"/v1/files/{file_id}/content",
        f"/v1/files/{done['output_file_id']}/content",
        f"/v1/batches/{batch['id']}",
    ):
        error = assert_error(client.get(path, headers=other), 404, error_param(path))
        assert error["type"] == "invalid_request_error"
    assert_error(client.delete(f"/v1/files/{file_id}", headers=other), 404, "file_id")
    assert_error(client.post(f"/v1/batches/{batch['id']}/cancel", headers=other), 404, "batch_id")
    stolen = client.post(
        "/v1/batches",
        json={"input_file_id": file_id, "endpoint": CHAT_URL, "completion_window": "24h"},
        headers=other,
    )
    assert_error(stolen, 404, "input_file_id")
    assert client.get("/v1/files", headers=other).json()["data"] == []
    assert client.get("/v1/batches", headers=other).json()["data"] == []
    # the owner still has everything
    assert client.get(f"/v1/files/{file_id}").status_code == 200


def error_param(path: str) -> str:
    return "batch_id" if "/batches/" in path else "file_id"


def test_open_batches_are_bounded_per_tenant(tmp_path: Path) -> None:
    words = " ".join(["w"] * 20)
    with make_client(tmp_path, max_open_batches=1) as client:
        file_id = upload(client, jsonl([chat_line("a", words, model="slow", max_tokens=30)]))["id"]
        key = {"Idempotency-Key": "k1"}
        body = {"input_file_id": file_id, "endpoint": CHAT_URL, "completion_window": "24h"}
        first = client.post("/v1/batches", json=body, headers=key)
        assert first.status_code == 200, first.text
        full = create(client, file_id)
        error = assert_error(full, 429, None)
        assert error["type"] == "rate_limit_error" and full.headers["retry-after"]
        # a retry of the create that filled the quota still gets its batch
        retried = client.post("/v1/batches", json=body, headers=key)
        assert retried.status_code == 200 and retried.json()["id"] == first.json()["id"]
        # another tenant has its own quota
        other = {"authorization": f"Bearer {new_key(client, 'tb')}"}
        theirs = client.post(
            "/v1/files",
            files={"file": ("x.jsonl", jsonl([chat_line("a")]))},
            data={"purpose": "batch"},
            headers=other,
        ).json()["id"]
        assert create_as(client, theirs, other).status_code == 200
        client.post(f"/v1/batches/{first.json()['id']}/cancel")
        wait(client, first.json()["id"], {"cancelled"})
        assert create(client, file_id).status_code == 200


def create_as(client: TestClient, file_id: str, headers: dict[str, str]) -> Any:
    return client.post(
        "/v1/batches",
        json={"input_file_id": file_id, "endpoint": CHAT_URL, "completion_window": "24h"},
        headers=headers,
    )


def test_the_official_sdk_in_process(client: TestClient) -> None:
    """The openai SDK parses every object (its http client is the in-process TestClient)."""
    sdk = openai.OpenAI(
        api_key=client.headers["authorization"].removeprefix("Bearer "),
        base_url=str(client.base_url) + "/v1",
        http_client=client,
    )
    uploaded = sdk.files.create(
        file=("in.jsonl", jsonl([chat_line("a"), chat_line("b")])), purpose="batch"
    )
    assert uploaded.purpose == "batch" and uploaded.status == "processed"
    batch = sdk.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"k": "v"},
    )
    assert batch.status == "validating" and batch.metadata == {"k": "v"}
    deadline = time.monotonic() + 30
    while (batch := sdk.batches.retrieve(batch.id)).status != "completed":
        assert time.monotonic() < deadline and batch.status not in ENDED
        time.sleep(0.05)
    assert batch.request_counts is not None and batch.request_counts.completed == 2
    assert batch.usage is not None and batch.usage.total_tokens > 0
    assert [b.id for b in sdk.batches.list()] == [batch.id]
    assert batch.output_file_id is not None
    lines = sdk.files.content(batch.output_file_id).text.splitlines()
    assert sorted(json.loads(line)["custom_id"] for line in lines) == ["a", "b"]
    ids = {f.id for f in sdk.files.list()}
    assert ids == {uploaded.id, batch.output_file_id}
    assert sdk.files.delete(uploaded.id).deleted
    with pytest.raises(openai.NotFoundError):
        sdk.batches.retrieve("batch_nope")
    with pytest.raises(openai.BadRequestError):
        sdk.batches.create(
            input_file_id=batch.output_file_id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
        )


def test_a_batch_past_its_window_expires_with_what_finished(tmp_path: Path) -> None:
    words = " ".join(["w"] * 20)
    lines = [chat_line(f"r{i}", words, model="slow", max_tokens=30) for i in range(6)]
    with make_client(tmp_path, batch_window_hours=1 / 3600) as client:
        created = start(client, lines)
        assert created["expires_at"] - created["created_at"] in (0, 1, 2)
        done = wait(client, created["id"], {"expired"})
        assert isinstance(done["expired_at"], int) and done["completed_at"] is None
        counts = done["request_counts"]
        assert counts["total"] == 6 and counts["failed"] > 0
        assert counts["completed"] + counts["failed"] == 6
        errors = content(client, done["error_file_id"])
        assert len(errors) == counts["failed"]
        assert "batch_expired" in {line["error"]["code"] for line in errors}
